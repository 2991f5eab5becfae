"""Helpers shared by tests: run a CLI as a user would, point it at the demo tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "config" / "demo" / "train-tiny.yaml")
# Pinned augmentation: every backend and rank layout produces the same crops.
PINNED = ["scale_min=1", "scale_max=1", "rotate_prob=0", "flip_prob=0", "blur_prob=0", "crop_type=center"]


def pinned_args() -> list[str]:
    """The shared pinned run's settings (conftest's pinned_two_ranks): 3 iterations, pinned augmentation."""
    return ["max_iters=3", "save_every=3", "print_freq=1", "base_lr=0.01", "val_every=0", *PINNED]


def run_tool(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run a CLI from tools/ as a user would, capturing its output."""
    tool, *rest = args
    result = subprocess.run([sys.executable, str(REPO / "tools" / tool), *rest], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def demo_args(demo_tree: Path, out: Path) -> list[str]:
    """CLI arguments that point tools/shard.py at the demo tree."""
    return ["--data-root", str(demo_tree / "data"), "--mseg-api", str(demo_tree / "mseg-api"),
            "--extra-datasets", str(demo_tree / "datasets.yaml"), "--out", str(out), "--no-progress"]


def call_tool(capsys, tool: str, *args: str) -> tuple[int, str, str]:
    """Run a CLI's main() in this process (its refusals without a new interpreter's start): exit status
    (argparse's exit included), stdout, stderr."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tool_{Path(tool).stem}", REPO / "tools" / tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        code = module.main(list(args))
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
