"""Checkpoints: written atomically, found through a `latest` pointer (not by parsing file names,
as MSeg did), kept by policy, read with weights_only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from mseg_fast.errors import UserError
from mseg_fast.shards.tarwriter import write_atomic

LATEST = "latest.json"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: Path, iteration: int, state: dict, keep_last: int, keep_every: int) -> Path:
    """Write `state` as iter_XXXXXXXX.pth (temporary name, then rename), point `latest` at it,
    and delete older checkpoints beyond the last `keep_last` (those at multiples of keep_every stay)."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"iter_{iteration:08d}.pth"
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    write_atomic(folder / LATEST, json.dumps({"file": path.name, "iteration": iteration}).encode())
    saved = sorted(folder.glob("iter_*.pth"))
    for old in saved[:-max(1, keep_last)]:
        number = int(old.stem.split("_")[1])
        if not (keep_every and number % keep_every == 0):
            old.unlink()
    return path


def find_resume(run_dir: Path, resume: str) -> Path | None:
    """`auto`: the run folder's latest checkpoint, or None for a fresh start; else a path."""
    if resume != "auto":
        if not Path(resume).is_file():
            raise UserError(f"--resume {resume}: no such checkpoint file")
        return Path(resume)
    pointer = checkpoint_dir(run_dir) / LATEST
    if not pointer.exists():
        return None
    path = checkpoint_dir(run_dir) / json.loads(pointer.read_text())["file"]
    if not path.exists():
        raise UserError(f"{pointer} names {path.name}, which does not exist; pass --resume PATH")
    return path


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state(device: torch.device) -> dict:
    """Every generator a training step draws from on this rank: torch's CPU one and, on a GPU, its CUDA one
    (dropout on the GPU, CCSA's pairs on the CPU)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    """Put back what `rng_state` captured on the same rank."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
