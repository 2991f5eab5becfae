"""Checkpoints: written atomically, found through a `latest` pointer (not by parsing file names,
as MSeg did), kept by policy, read with weights_only."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mseg_fast.errors import UserError
from mseg_fast.models.load import read_weights_file
from mseg_fast.atomic import write_atomic, write_with

LATEST = "latest.json"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: Path, iteration: int, state: dict, keep_last: int, keep_every: int) -> Path:
    """Write `state` as iter_XXXXXXXX.pth (temporary name, then rename), point `latest` at it,
    and delete older checkpoints beyond the last `keep_last` (those at multiples of keep_every stay)."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"iter_{iteration:08d}.pth"
    write_with(path, lambda handle: torch.save(state, handle))
    write_atomic(folder / LATEST, json.dumps({"file": path.name, "iteration": iteration}).encode())
    saved = sorted(folder.glob("iter_*.pth"))
    for old in saved[:-max(1, keep_last)]:
        number = int(old.stem.split("_")[1])
        if not (keep_every and number % keep_every == 0):
            old.unlink()
    return path


def _saved(folder: Path) -> list[Path]:
    """The run's checkpoints, newest first."""
    return sorted(folder.glob("iter_*.pth"), reverse=True)


def find_resume(run_dir: Path, resume: str, log=print) -> tuple[Path, dict] | None:
    """The checkpoint to continue from, loaded: `auto` takes the run folder's newest one that reads whole
    (a truncated newest, e.g. from a full disk, is skipped with a logged line), or None for a fresh start;
    anything else is a path, which must be a training checkpoint.

    Raises:
        UserError: a named file that is missing, unreadable, or a weights-only release file.
    """
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise UserError(f"--resume {resume}: no such checkpoint file")
        return path, load_training(path)
    folder = checkpoint_dir(run_dir)
    pointer = folder / LATEST
    candidates = _saved(folder)
    if pointer.exists():
        try:
            named = folder / json.loads(pointer.read_text())["file"]
            candidates = [named] + [c for c in candidates if c != named]
        except (ValueError, KeyError, TypeError):
            log(f"{pointer} is unreadable; looking at the checkpoints themselves")
    for path in candidates:
        try:
            return path, load_training(path)
        except UserError as error:
            log(f"--resume auto: skipping {error}")
    if candidates:
        raise UserError(f"--resume auto: none of the {len(candidates)} checkpoints in {folder} reads whole; "
                        f"pass --resume PATH, or start over with --start-over")
    return None


def load(path: Path) -> dict:
    """A checkpoint or release file (tensors and plain data only).

    Raises:
        UserError: the file is missing, truncated, not a file torch.save wrote, or holds no model.
    """
    saved = read_weights_file(path)
    if "model" not in saved:
        raise UserError(f"{path}: holds no 'model' (not a mseg-fast checkpoint or release file)")
    return saved


def load_training(path: Path) -> dict:
    """A training checkpoint: model, optimiser, iteration, random and loader state."""
    saved = load(path)
    missing = [k for k in ("optimizer", "iteration", "loader", "rng") if k not in saved]
    if missing:
        raise UserError(f"{path}: a weights-only release file (no {', '.join(missing)}), not a training checkpoint; "
                        f"to start from its weights use --init-from {path}")
    return saved


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
