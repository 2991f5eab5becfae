"""A run's start: its folder, its log, its initial weights and random state.

Nothing is written before the inputs are accepted: the trainer checks config, shards, checkpoints
and weights first, and only then creates the run folder, writes config.yaml and opens train.log
(lines logged before that are printed at once and written to the log when it opens).
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from mseg_fast.atomic import named, write_atomic
from mseg_fast.clock import stamp
from mseg_fast.errors import UserError
from mseg_fast.models.load import load_imagenet_backbone, load_strict, model_state, read_weights_file
from mseg_fast.train import checkpoint
from mseg_fast.train.distributed import DistInfo


class RunLog:
    """Lines for stdout and train.log (the main rank's), each with the time it was written, held back until
    the run folder is accepted."""

    def __init__(self, is_main: bool):
        self.is_main = is_main
        self.pending: list[str] = []
        self.file = None

    def __call__(self, line: str) -> None:
        if not self.is_main:
            return
        line = "\n".join(f"{stamp()} {part}" for part in line.split("\n"))
        print(line, flush=True)
        if self.file is None:
            self.pending.append(line)
        else:
            self._write([line])

    def _write(self, lines: list[str]) -> None:
        try:
            self.file.writelines(line + "\n" for line in lines)
            self.file.flush()
        except OSError as error:  # a full disk: the error line names train.log, so the disk
            raise named(error, Path(self.file.name)) from None

    def open(self, path: Path) -> None:
        if self.is_main:
            self.file = open(path, "a")
            self._write(self.pending)
            self.pending = []

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def check_run_folder(run_dir: Path, resume: str | None, start_over: bool) -> None:
    """A folder that already holds checkpoints is continued (--resume) or explicitly started over, never
    silently trained over (that moved `latest` back to an older iteration)."""
    saved = sorted(checkpoint.checkpoint_dir(run_dir).glob("iter_*.pth"))
    if saved and resume is None and not start_over:
        raise UserError(f"{run_dir} already holds checkpoints (newest: {saved[-1].name}): continue it with "
                        f"--resume auto, start over in it with --start-over (deletes them), or set save_path= to "
                        f"another folder")
    if start_over and resume is not None:
        raise UserError("--start-over and --resume contradict each other; give one")


def accept_run_folder(run_dir: Path, config_yaml: str, start_over: bool, log: RunLog) -> None:
    """The inputs are accepted: create the folder, clear it when starting over, write config.yaml, open the log."""
    if not log.is_main:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    if start_over:
        folder = checkpoint.checkpoint_dir(run_dir)
        for old in [*folder.glob("iter_*.pth"), folder / checkpoint.LATEST]:
            old.unlink(missing_ok=True)
    write_atomic(run_dir / "config.yaml", config_yaml.encode())
    log.open(run_dir / "train.log")


def check_shards(shardsets, full: bool, log) -> None:
    """Every shard and index is present and of its manifest size (ShardSet.open); with `full`, every
    shard's checksum too (a JPEG with flipped bytes decodes without an error: only the checksum sees it)."""
    if not full:
        return
    total = sum(len(s.tars) for s in shardsets)
    log(f"verify_shards: checking the sha256 of {total} shard files ...")
    for shardset in shardsets:
        shardset.verify_checksums()
    log(f"verify_shards: {total} shard files match their manifests")


def init_weights(model, pretrained: str | None, init_from: str | None, log) -> None:
    """ImageNet backbone and/or weights to fine-tune from (a head of another class count is re-initialised)."""
    if pretrained:
        log(load_imagenet_backbone(model, pretrained))
    if init_from:
        state = model_state(read_weights_file(Path(init_from)))  # ours, MSeg's release files, or a bare state
        own = model.state_dict()
        heads = [k for k in own if k.startswith(model.CLASSIFIER)]
        if any(k in state and state[k].shape != own[k].shape for k in heads):
            state = {**state, **{k: own[k] for k in heads}}
            log(f"{init_from}: classifier ({', '.join(model.CLASSIFIER)}) re-initialised for "
                f"{model.num_classes} classes")
        load_strict(model, state, init_from)


def check_resumable(saved: dict, path: Path, num_classes: int, taxonomy_sha: str, info: DistInfo,
                    optimizer: str = "sgd") -> None:
    """A checkpoint of these shards' taxonomy and this optimizer, written by as many ranks as this run has."""
    saved_optimizer = (yaml.safe_load(saved.get("config") or "") or {}).get("optimizer", "sgd")
    if saved_optimizer != optimizer:  # SGD's state cannot drive AdamW (or back): a KeyError at the first step
        raise UserError(f"{path} was trained with optimizer={saved_optimizer} and this run asks for "
                        f"optimizer={optimizer}: resume with optimizer={saved_optimizer}, or start a new run from "
                        f"its weights with --init-from {path}")
    if saved.get("taxonomy") != {"num_classes": num_classes, "sha256": taxonomy_sha}:
        classes = (saved.get("taxonomy") or {}).get("num_classes")
        raise UserError(f"{path} was trained on {classes} classes of another taxonomy than these shards "
                        f"({num_classes} classes); use --init-from to fine-tune")
    if len(saved["loader"]) != info.world_size:
        raise UserError(f"{path} was written by {len(saved['loader'])} ranks and this run has {info.world_size}: the "
                        f"loaders cannot continue exactly. Resume with {len(saved['loader'])} ranks, or start a new "
                        f"run from its weights with --init-from {path}")


def restore_rng_of_rank(saved, info: DistInfo) -> None:
    """This rank's generators as the checkpoint recorded them (one entry per rank; check_resumable has
    refused a checkpoint of another rank count)."""
    if isinstance(saved, torch.Tensor):  # written before per-rank states: rank 0's CPU generator only
        saved = [{"cpu": saved}] * info.world_size
    checkpoint.restore_rng(saved[info.rank], info.device)
