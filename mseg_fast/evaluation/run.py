"""Score a model on datasets at base sizes, MSeg's way (reference §7), and write MSeg's layout.

For each dataset a plan (protocol.py) says which shards hold the ground truth and how the model's
classes map onto the evaluation classes; for each base size, every val image goes through the inference
core (windows of several images batched on the device), the argmax is scored into a dataset-wide
confusion matrix, and `<out>/<folder>/<base>/<ss|ms>/` gets results.txt (MSeg's format), results.json
(per-class IoU and accuracy by name, the confusion matrix, the share of time in inference) and a confusion
picture; `gray/<shard key>.png` with `save_predictions`. A finished (dataset, base size) whose
results.json was made from the same model file, settings, shards and evaluation plan (classes, projection,
protocol) is reused; predictions saved by an earlier, killed run with that fingerprint are reused image
by image (a killed run continues).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mseg_fast.atomic import write_atomic, write_set
from mseg_fast.data.shardset import ShardSet
from mseg_fast.data.torch_loader import SampleReader, val_range, worker_init
from mseg_fast.errors import UserError
from mseg_fast.eval.inference import MULTI_SCALE, InferenceSpec, predict_labels
from mseg_fast.eval.mseg_metrics import mseg_counts, mseg_scores, relabeled_rewrite, results_txt
from mseg_fast.eval.validate import confusion_picture
from mseg_fast.evaluation.protocol import EvalPlan
from mseg_fast.models.load import read_weights_file
from mseg_fast.viz import encode_image, write_image

NAIVE_CLASSES = 316


@dataclass(frozen=True)
class ModelInfo:
    """What evaluation needs to know of a model file: its taxonomy ('universal', 'naive' or 'self'), the
    datasets it was trained on, and whether its labels were relabeled (MSeg's relabeled protocol, §7.6)."""

    taxonomy: str
    trained_on: tuple[str, ...]
    relabeled: bool


def model_info(path: Path, num_classes: int, universal_classes: int = 194) -> ModelInfo:
    """From the training config a mseg-fast file carries; else (MSeg's release files carry none) as MSeg's
    scripts decide: the taxonomy from the class count, relabeled when the file's name holds 'mseg' and not
    'unrelabeled'."""
    config = read_weights_file(path).get("config")
    if isinstance(config, str):
        values = yaml.safe_load(config) or {}
        trained_on = tuple(values.get("dataset") or ())
        relabeled = any(str(name).endswith("-relabeled") for name in trained_on)
        if not values.get("universal", True):
            return ModelInfo("self", trained_on, False)
        return ModelInfo("naive" if values.get("use_naive_taxonomy") else "universal", trained_on, relabeled)
    name = path.stem.lower()
    return ModelInfo({universal_classes: "universal", NAIVE_CLASSES: "naive"}.get(num_classes, "self"), (),
                     "mseg" in name and "unrelabeled" not in name)


class _ValImages(Dataset):
    """Val samples as (HWC uint8 RGB image, label to score against, relabeled label or None, prediction
    name), decoded in loader workers.

    A prediction is named by its sample's shard key (its line in the val list, then the image's stem, e.g.
    `00000017_009742_leftImg8bit`), unique within a dataset. MSeg named them by the stem alone, which
    repeats (ScanNet; two pairs of idd-39's val images): two images then shared one saved prediction.
    """

    def __init__(self, shardset: ShardSet, indices: range, relabeled: bool):
        self.reader = SampleReader(shardset)
        self.indices = indices
        self.relabeled = relabeled

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = self.indices[position]
        if self.relabeled:
            image, label, relabeled, _ = self.reader.decoded_relabeled(index)
            relabeled = torch.from_numpy(relabeled.astype(np.int64))
        else:
            (image, label, _), relabeled = self.reader.decoded(index), None
        return (torch.from_numpy(image), torch.from_numpy(label.astype(np.int64)), relabeled,
                self.reader.table[index][1])


@dataclass(frozen=True)
class EvalSettings:
    scales: str  # "ss" or "ms"
    crop: int = 713
    images_per_batch: int = 4
    window_batch: int = 8
    workers: int = 2
    save_predictions: bool = False

    def spec(self, base_size: int) -> InferenceSpec:
        return InferenceSpec(base_size, MULTI_SCALE if self.scales == "ms" else (1.0,), self.crop, self.window_batch)


def plan_digest(plan: EvalPlan) -> str:
    """sha256 of everything in a plan that changes a number: the evaluation classes (names and order), the
    projection onto them (so the TSV it came from), the excluded classes and the protocol."""
    digest = hashlib.sha256(json.dumps([plan.dataset, plan.combination, plan.label_taxonomy, list(plan.class_names),
                                        list(plan.excluded), plan.relabeled]).encode())
    if plan.projection is not None:
        digest.update(np.ascontiguousarray(plan.projection, np.float32).tobytes())
    return digest.hexdigest()


def _fingerprint(model_path: Path, settings: EvalSettings, base_size: int, shards: list[str], plan: EvalPlan) -> dict:
    stat = model_path.stat()
    return {"model": str(model_path.resolve()), "model_bytes": stat.st_size, "model_mtime_ns": stat.st_mtime_ns,
            "scales": settings.scales, "crop": settings.crop, "base_size": base_size, "shards": shards,
            "plan": plan_digest(plan)}


def _claim_predictions(gray: Path, fingerprint: dict, log: Callable[[str], None]) -> None:
    """Make `gray/` hold only predictions of this model and these settings: those of a killed run with the
    same fingerprint are kept (and reused), any others are removed first (never scored as this model's)."""
    marker = gray / "made_from.json"
    if gray.is_dir():
        try:
            same = json.loads(marker.read_text()) == fingerprint
        except (OSError, ValueError):
            same = False
        if not same:
            stale = list(gray.glob("*.png"))
            log(f"{gray}: removing {len(stale)} predictions made by another model file or other settings")
            for path in stale:
                path.unlink(missing_ok=True)
    gray.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, json.dumps(fingerprint, indent=1).encode())


def _read_saved(path: Path, label: torch.Tensor, classes: int) -> torch.Tensor | None:
    """A saved prediction, or None when it is damaged (truncated, another size, ids beyond the classes): it
    is then predicted again rather than scored or trusted."""
    prediction = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if prediction is None or prediction.shape != tuple(label.shape) or int(prediction.max()) >= classes:
        return None
    return torch.from_numpy(prediction.astype(np.int64))


def _results_complete(out_dir: Path, fingerprint: dict) -> dict | None:
    """The results.json of a finished run with this fingerprint whose set of files is whole, else None."""
    try:
        previous = json.loads((out_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    whole = all((out_dir / name).is_file() for name in ("results.txt", "confusion.png"))
    return previous if whole and isinstance(previous, dict) and previous.get("made_from") == fingerprint else None


def evaluate_one(model, model_path: Path, plan: EvalPlan, shardset: ShardSet, base_size: int, settings: EvalSettings,
                 out_dir: Path, device: torch.device, log: Callable[[str], None], rank: int = 0,
                 world_size: int = 1) -> dict:
    """One dataset at one base size; returns its results.json content.

    With several ranks (torchrun), each scores its contiguous part of the val images, each image exactly
    once, the confusion matrices are summed, and rank 0 writes the results.
    """
    fingerprint = _fingerprint(model_path, settings, base_size, list(shardset.sha256s), plan)
    previous = _results_complete(out_dir, fingerprint)
    if previous is not None:
        log(f"{plan.dataset} base {base_size} {settings.scales}: reusing {out_dir / 'results.json'}")
        return previous
    gray = out_dir / "gray"
    saved_before: set[str] = set()
    if settings.save_predictions:
        if rank == 0:
            _claim_predictions(gray, fingerprint, log)
        if world_size > 1:
            dist.barrier()  # no rank writes a prediction before stale ones are gone
        # Only files an earlier run left are reused: a file this run wrote is never read back as another image's.
        saved_before = {path.stem for path in gray.glob("*.png")}
    projection = torch.from_numpy(plan.projection).to(device) if plan.projection is not None else None
    spec = settings.spec(base_size)
    classes = len(plan.class_names)
    matrix = torch.zeros(classes, classes, dtype=torch.int64, device=device)
    missed = torch.zeros(classes, dtype=torch.int64, device=device)

    def score(prediction: torch.Tensor, label: torch.Tensor, relabeled: torch.Tensor | None) -> None:
        label = label.to(device)
        if relabeled is not None:
            prediction, label = relabeled_rewrite(prediction, label, relabeled.to(device))
        counts, voided = mseg_counts(prediction, label, classes)
        matrix.add_(counts)
        missed.add_(voided)

    loader = DataLoader(_ValImages(shardset, val_range(shardset.samples, rank, world_size), plan.relabeled),
                        batch_size=settings.images_per_batch, collate_fn=list,
                        num_workers=settings.workers, worker_init_fn=worker_init() if settings.workers else None,
                        multiprocessing_context="forkserver" if settings.workers else None)
    done, start, forward_seconds = 0, time.perf_counter(), 0.0
    reused = torch.zeros((), dtype=torch.int64, device=device)
    damaged = 0
    # One bar (rank 0's images; the others' are as many), its ETA as h:mm:ss; the figures go to the log at the end.
    bar = tqdm(total=len(loader.dataset), unit="img", desc=f"{plan.dataset} base {base_size} {settings.scales}",
               disable=rank != 0, file=sys.stderr, mininterval=1.0, leave=False)
    for batch in loader:
        # Predictions saved by an earlier, killed run are scored from their files, not computed again.
        todo = []
        for item in batch:
            _, label, relabeled, name = item
            was_saved = name in saved_before
            saved_before.discard(name)
            prediction = _read_saved(gray / f"{name}.png", label, classes) if was_saved else None
            if prediction is None:
                damaged += was_saved
                todo.append(item)
                continue
            reused += 1
            score(prediction.to(device), label, relabeled)
        if todo:
            tick = time.perf_counter()
            predictions = predict_labels(model, [item[0].to(device) for item in todo], spec, projection)
            forward_seconds += time.perf_counter() - tick
            for (_, label, relabeled, name), prediction in zip(todo, predictions):
                score(prediction, label, relabeled)
                if settings.save_predictions:
                    write_image(gray / f"{name}.png", prediction.to(torch.uint8).cpu().numpy())
        done += len(batch)
        bar.update(len(batch))
    bar.close()
    if damaged:
        log(f"{gray}: {damaged} saved predictions were damaged (truncated, another size); predicted them again")
    if world_size > 1:
        dist.all_reduce(matrix)
        dist.all_reduce(missed)
        dist.all_reduce(reused)
        done = shardset.samples
    scores = mseg_scores(matrix.cpu(), plan.excluded, missed.cpu())
    kept = scores["kept"]
    record = {"dataset": plan.dataset, "combination": plan.combination, "base_size": base_size,
              "scales": settings.scales, "miou": scores["miou"], "macc": scores["macc"], "all_acc": scores["all_acc"],
              "iou": {plan.class_names[k]: float(scores["iou"][k]) for k in kept},
              "acc": {plan.class_names[k]: float(scores["acc"][k]) for k in kept},
              "images": done, "reused_predictions": int(reused), "seconds": round(time.perf_counter() - start, 2),
              "inference_share": round(forward_seconds / max(time.perf_counter() - start, 1e-9), 3),
              "protocol": "relabeled" if plan.relabeled else "unrelabeled" if plan.combination == "universal" else None,
              "made_from": fingerprint, "confusion": matrix.cpu().tolist(), "voided": missed.cpu().tolist()}
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)  # only now: a failed evaluation leaves no empty folders
        # One set: results.json, which marks it finished and reusable, is renamed into place last.
        write_set({out_dir / "results.txt": results_txt(scores, plan.class_names).encode(),
                   out_dir / "confusion.png": encode_image(out_dir / "confusion.png",
                                                           confusion_picture(matrix.cpu(), kept, plan.class_names)),
                   out_dir / "results.json": json.dumps(record, indent=1).encode()})
    return record


def check_shards_match(plan: EvalPlan, shardset: ShardSet) -> None:
    """Refuse shards that cannot give MSeg's numbers for this plan, saying how to write ones that can."""
    command = f"tools/shard.py --dataset {plan.dataset} --split val --taxonomy {plan.label_taxonomy}"
    if tuple(shardset.class_names) != tuple(plan.class_names):
        raise UserError(f"the {plan.label_taxonomy} shards of {plan.dataset} hold {len(shardset.class_names)} classes, "
                        f"the evaluation ({plan.combination}) needs its {len(plan.class_names)}: shard the val split "
                        f"with `{command}`")
    if shardset.short_size:
        raise UserError(f"the {plan.label_taxonomy} shards of {plan.dataset} hold images resized to short side "
                        f"{shardset.short_size}, and MSeg scores at the labels' own size: shard the val split again "
                        f"without --short-size (`{command}`)")
    if plan.relabeled and shardset.relabeled_ext is None:
        raise UserError(f"the model was trained on relabeled labels, so MSeg scores it on {plan.dataset} with its "
                        f"relabeled protocol, which needs each val image's relabeled label: shard the val split with "
                        f"`{command} --with-relabeled`, or pass --protocol unrelabeled")
