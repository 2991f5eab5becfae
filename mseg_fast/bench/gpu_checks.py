"""The checks of tools/gpu_check.py: does the GPU path give the CPU path's results, and how fast is it.

Each check is a plain function of a `Context` returning a JSON-able dict with `ok` (bool) and its
figures; the tool runs each in its own process. With `dry` the CPU stands in for the GPU and every
size is small, so the test suite can run every check (the GPU-vs-CPU comparisons then compare the
CPU graph with itself, which still runs every line of them).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from mseg_fast.bench.eval_bench import ColourClasses, run_eval_bench
from mseg_fast.bench.loader_bench import run_backend
from mseg_fast.bench.shard_bench import LABEL_MAPS, PHOTOS_1080P
from mseg_fast.bench.step_bench import run_steps
from mseg_fast.clock import unstamped
from mseg_fast.config import Config, load_config
from mseg_fast.eval.inference import InferenceSpec
from mseg_fast.models.factory import build_model
from mseg_fast.constants import IGNORE_LABEL, IMAGENET_STD
from mseg_fast.data.geometry import Augment
from mseg_fast.loader import build_train_loader, build_val_batches, dali_available, run_graph_on_arrays

REPO = Path(__file__).resolve().parents[2]
LEVEL = float(np.mean(IMAGENET_STD))  # one 0..255 grey level in normalised units
IMAGE_MAD_LIMIT = 2.0  # grey levels: nvJPEG and libjpeg-turbo upsample chroma differently
LABEL_AGREEMENT = 0.995


@dataclass(frozen=True)
class Context:
    """Where the data is and how big to make things.

    device: "cuda" (or "cpu" standing in with `dry`); photos: mseg-semantic-test-data; shards: the shard
    root holding the real-photo dataset (train and val); work: a folder for runs.
    """

    device: str
    dry: bool
    photos: str
    shards: str
    work: str
    dataset: str = "coco-panoptic-133-relabeled"

    def config(self, *overrides: str) -> Config:
        """MSeg's 1080p recipe on the photo shards (small sizes when dry)."""
        small = ["short_size=240", "train_h=201", "train_w=201", "batch_size=4", "arch=hrnet_w18"] if self.dry else []
        return load_config(REPO / "config" / "bench" / "1080.yaml",
                           [f"shards={self.shards}", f"dataset=[{self.dataset}]", "workers=null", *small, *overrides])


def _version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check_versions(ctx: Context) -> dict:
    """GPU name, driver, CUDA, DALI and nvImageCodec versions."""
    out = {"ok": True, "torch": torch.__version__, "cuda": torch.version.cuda,
           "dali": _version("nvidia-dali-cuda130", "nvidia-dali-cuda120"),
           "nvimgcodec": _version("nvidia-nvimgcodec-cu13", "nvidia-nvimgcodec-cu12")}
    if ctx.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        out["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    else:
        out["gpu"], out["driver"] = None, None
    return out


def _photo_samples(ctx: Context, bits: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Real photos (JPEG bytes) and label maps scaled to them; 16-bit labels hold ids moved past 255."""
    images, labels = [], []
    for photo in PHOTOS_1080P:
        data = (Path(ctx.photos) / photo).read_bytes()
        height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        for label_map in LABEL_MAPS:
            label = cv2.imread(str(Path(ctx.photos) / label_map), cv2.IMREAD_UNCHANGED)
            label = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
            if bits == 16:
                label = np.where(label == IGNORE_LABEL, IGNORE_LABEL, label.astype(np.uint16) + 122).astype(np.uint16)
            images.append(np.frombuffer(data, np.uint8))
            labels.append(np.frombuffer(cv2.imencode(".png", label)[1].tobytes(), np.uint8))
    return images, labels


def _compare(reference: tuple, other: tuple, valid_labels: set) -> dict:
    """Image MAD (grey levels), label agreement, label values and NaNs of two runs of the same batch."""
    mad = max(float(np.abs(a - b).mean()) * LEVEL for a, b in zip(reference[0], other[0]))
    agree = min(float((a == b).mean()) for a, b in zip(reference[1], other[1]))
    values = set().union(*(np.unique(b).tolist() for b in other[1]))
    nan = any(bool(np.isnan(b).any()) for b in other[0])
    draws = all(np.array_equal(a, b) for a, b in zip(reference[2], other[2]))
    ok = mad <= IMAGE_MAD_LIMIT and agree >= LABEL_AGREEMENT and values <= valid_labels and not nan and draws
    return {"ok": ok, "image_mad_levels": round(mad, 3), "label_agreement": round(agree, 5),
            "labels_valid": values <= valid_labels, "nan": nan, "same_draws": draws}


def check_train_graph(ctx: Context, window: bool) -> dict:
    """The training graph on the device against the CPU graph: pinned parameters (every sample in one branch,
    so the other branches are empty) and MSeg's random ranges (branches mixed within a batch), 8- and 16-bit
    labels, one way of decoding the JPEG on the device: the whole image, or only the crop's box (`window`;
    its own check and process, as nvImageCodec 0.9's ROI decode is the likelier one to crash)."""
    size = (360, 201) if ctx.dry else (1080, 713)
    pinned = [dict(scale=1.3, rotate=1.0, flip=1.0, blur=0.0), dict(scale=0.6, rotate=1.0, flip=0.0, blur=1.0),
              dict(scale=1.8, rotate=0.0, flip=1.0, blur=1.0), dict(scale=0.9, rotate=0.0, flip=0.0, blur=0.0)]
    cases = {f"pinned-{k}": Augment(size[0], size[1], size[1], p["scale"], p["scale"], 7.0, 7.0, p["rotate"], p["flip"],
                                    p["blur"], False) for k, p in enumerate(pinned)}
    cases["random"] = Augment(size[0], size[1], size[1])
    results, ok = {}, True
    for bits in (8, 16):
        images, labels = _photo_samples(ctx, bits)
        dtype = "uint16" if bits == 16 else "uint8"
        valid = set().union(*(np.unique(cv2.imdecode(lab, cv2.IMREAD_UNCHANGED)).tolist() for lab in labels))
        for name, aug in cases.items():
            batch_images, batch_labels = (images * 2, labels * 2) if name == "random" else (images, labels)
            reference = run_graph_on_arrays(batch_images, batch_labels, aug, 5, 1.1, "cpu", dtype, seed=7)
            other = run_graph_on_arrays(batch_images, batch_labels, aug, 5, 1.1, ctx.device, dtype, seed=7,
                                        window=window)
            key = f"{bits}bit/{name}/{'window' if window else 'whole'}"
            results[key] = _compare(reference, other, valid | {IGNORE_LABEL})
            ok &= results[key]["ok"]
    worst = {"image_mad_levels": max(r["image_mad_levels"] for r in results.values()),
             "label_agreement": min(r["label_agreement"] for r in results.values())}
    return {"ok": ok, **worst, "cases": results}


def _collect(batches) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(b.images.float().cpu().numpy(), b.labels.cpu().numpy()) for b in batches]


def check_val_graph(ctx: Context) -> dict:
    """The validation graph (centre crop and whole image) on the device against the CPU graph."""
    results, ok = {}, True
    for crop in ("center", "whole"):
        config = ctx.config("loader=dali", f"val_crop={crop}", "val_split=val")
        reference = _collect(build_val_batches(config, device="cpu", batch_size=2))
        other = _collect(build_val_batches(config, device=ctx.device, batch_size=2))
        same_count = len(reference) == len(other)
        mad = max(float(np.abs(a[0] - b[0]).mean()) * LEVEL for a, b in zip(reference, other))
        agree = min(float((a[1] == b[1]).mean()) for a, b in zip(reference, other))
        results[crop] = {"batches": len(other), "image_mad_levels": round(mad, 3), "label_agreement": round(agree, 5),
                         "ok": same_count and mad <= IMAGE_MAD_LIMIT and agree >= LABEL_AGREEMENT}
        ok &= results[crop]["ok"]
    return {"ok": ok, **results}


def check_resume(ctx: Context) -> dict:
    """The DALI loader on the device continues with the same batches after `state_dict()`."""
    config = ctx.config("loader=dali")
    loader = build_train_loader(config, device=ctx.device)
    for _ in range(2):
        next(loader)
    state = loader.state_dict()
    expected = [next(loader) for _ in range(2)]
    loader.close()
    resumed = build_train_loader(config, device=ctx.device, state=state)
    same = all(torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
               for a, b in zip(expected, (next(resumed) for _ in range(2))))
    resumed.close()
    return {"ok": same, "same_batches_after_resume": same}


def check_throughput(ctx: Context) -> dict:
    """Loader samples/s at 1080p/713 on real photos: DALI on the device, the torch fallback with all host
    cores, the MSeg-style loader, decoding alone."""
    config = ctx.config()
    iters, warmup = (2, 1) if ctx.dry else (30, 5)
    runs = {}
    for backend in ("dali", "torch", "mseg", "decode") if dali_available() else ("torch", "mseg", "decode"):
        device = ctx.device if backend == "dali" else "cpu"
        run = run_backend(config, backend, iters, warmup, device)
        runs[backend] = {k: run[k] for k in ("samples_per_s", "p50_ms", "p99_ms", "workers", "batch")}
    mseg = runs["mseg"]["samples_per_s"]
    for run in runs.values():
        run["vs_mseg"] = round(run["samples_per_s"] / mseg, 2)
    return {"ok": all(r["samples_per_s"] > 0 for r in runs.values()), **runs,
            **({} if "dali" in runs else {"skipped": "dali (not installed)"})}


STEP_VARIANTS = {"fp32": [], "fp32-channels_last": ["channels_last=True"], "bf16": ["precision=bf16"],
                 "bf16-channels_last": ["precision=bf16", "channels_last=True"],
                 "bf16-channels_last-compile": ["precision=bf16", "channels_last=True", "compile=True"]}


def check_step(ctx: Context, variant: str) -> dict:
    """One training-step variant of HRNet-W48 at 713x713 on synthetic batches: samples/s, peak memory."""
    if ctx.dry and "compile=True" in STEP_VARIANTS[variant]:
        return {"ok": True, "skipped": "inductor compiles HRNet for minutes on a CPU; tests/test_ranks.py "
                                       "covers compile (aot_eager, DDP on 2 ranks)"}
    config = ctx.config("batch_size=2" if ctx.dry else "batch_size=8", *STEP_VARIANTS[variant],
                        *(["train_h=89", "train_w=89"] if ctx.dry else ["arch=hrnet_w48"]))
    iters, warmup = (2, 1) if ctx.dry else (10, 3)
    result = run_steps(config, real=False, iters=iters, warmup=warmup, device=torch.device(ctx.device))
    return {"ok": result["samples_per_s"] > 0, **result}


def check_train(ctx: Context) -> dict:
    """train.py for 100 iterations (4 when dry) on the device, with the DALI loader (the torch fallback where
    DALI is not installed): the data-wait share."""
    iterations = 4 if ctx.dry else 100
    run = Path(ctx.work) / "train-run"
    overrides = [f"loader={'dali' if dali_available() else 'torch'}", f"max_iters={iterations}",
                 f"save_every={iterations}", "print_freq=2" if ctx.dry else "print_freq=10", "val_every=0", f"save_path={run}", f"shards={ctx.shards}",
                 f"dataset=[{ctx.dataset}]", "workers=null"]
    overrides += (["short_size=240", "train_h=89", "train_w=89", "batch_size=2", "arch=hrnet_w18"] if ctx.dry
                  else ["arch=hrnet_w48", "batch_size=8", "precision=bf16", "channels_last=True"])
    result = subprocess.run([sys.executable, str(REPO / "train.py"), str(REPO / "config" / "bench" / "1080.yaml"),
                             *overrides], capture_output=True, text=True)
    lines = re.findall(r"iter (\d+)/\d+ .* ([0-9.]+) samples/s data-wait (\d+)%", result.stdout)
    steady = lines[1:] or lines  # the first window holds the pipelines' warm-up
    return {"ok": result.returncode == 0 and bool(lines), "returncode": result.returncode,
            "data_wait_share": round(float(np.mean([int(w) for _, _, w in steady])) / 100, 3) if lines else None,
            "samples_per_s": round(float(np.mean([float(s) for _, s, _ in steady])), 2) if lines else None,
            "loader_line": next((line for line in map(unstamped, result.stdout.splitlines())
                                 if line.startswith("loader:")), None),
            "stderr_tail": result.stderr[-800:] if result.returncode else ""}


def check_eval(ctx: Context) -> dict:
    """Evaluation speed, tools/bench_eval.py's comparison: the inference core against the MSeg-style evaluator
    (one image at a time, two windows per forward, OpenCV resizes on the host), HRNet-W48 at base 720 with
    713 windows on 1080p photos; the aim on a GPU is 5x MSeg-style's images/s. Small when dry."""
    images, labels = [], []
    for k in range(1 if ctx.dry else 8):
        image = cv2.imread(str(Path(ctx.photos) / PHOTOS_1080P[k % len(PHOTOS_1080P)]))[:, :, ::-1].copy()
        label = cv2.imread(str(Path(ctx.photos) / LABEL_MAPS[k % len(LABEL_MAPS)]), cv2.IMREAD_UNCHANGED)
        images.append(image)
        labels.append(cv2.resize(label, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST))
    torch.manual_seed(0)
    device = torch.device(ctx.device)
    model = ColourClasses(build_model("hrnet_w18" if ctx.dry else "hrnet_w48", 194)).eval().to(device)
    spec = InferenceSpec(120, (1.0,), 129, 8) if ctx.dry else InferenceSpec(720, (1.0,), 713, 16)
    result = run_eval_bench(model, images, labels, spec, 4, device)
    return {"ok": result["pixel_agreement"] >= 0.999, "base_size": spec.base_size, "crop": spec.crop, **result}


@dataclass(frozen=True)
class Check:
    """One check: its function, whether it cannot run without DALI, and which half of the run it is in
    ("data": graphs, resume, loader speed; "model": steps, training, evaluation), so that a short device
    lease can run the halves as two commands (`--only data`, `--only model`)."""

    run: Callable[[Context], dict]
    needs_dali: bool
    half: str
    timeout_s: float


def checks() -> dict[str, Check]:
    """name -> Check, in the order they run: the whole-image decode before the ROI decode, the DALI-free
    checks of each half after its DALI ones."""
    table = {"versions": Check(check_versions, False, "data", 60),
             "train_graph/whole": Check(lambda ctx: check_train_graph(ctx, window=False), True, "data", 150),
             "train_graph/window": Check(lambda ctx: check_train_graph(ctx, window=True), True, "data", 150),
             "val_graph": Check(check_val_graph, True, "data", 120),
             "resume": Check(check_resume, True, "data", 120),
             "throughput": Check(check_throughput, False, "data", 240)}
    for variant in STEP_VARIANTS:
        table[f"step/{variant}"] = Check(lambda ctx, v=variant: check_step(ctx, v), False, "model", 300)
    table["train"] = Check(check_train, False, "model", 300)
    table["eval"] = Check(check_eval, False, "model", 240)
    return table


def select(only: list[str] | None, dali: bool) -> tuple[list[str], dict[str, str]]:
    """The checks to run for `--only` (names, halves, or a name's part before "/": `step`), and those left
    out with why (needing DALI where it is not installed).

    Raises:
        ValueError: a name in `only` that selects nothing.
    """
    table = checks()
    wanted = set(only or [])
    unknown = sorted(w for w in wanted if not any(w in (name, name.split("/")[0], check.half)
                                                  for name, check in table.items()))
    if unknown:
        raise ValueError(f"--only {' '.join(unknown)}: no such check or half; the halves are data and model, "
                         f"the checks {', '.join(table)}")
    chosen = [name for name, check in table.items()
              if not wanted or wanted & {name, name.split("/")[0], check.half}]
    skipped = {name: "needs NVIDIA DALI, which is not installed" for name in chosen
               if table[name].needs_dali and not dali}
    return [name for name in chosen if name not in skipped], skipped


def context_to_json(ctx: Context) -> str:
    return json.dumps(dataclasses.asdict(ctx))


def context_from_json(text: str) -> Context:
    return Context(**json.loads(text))
