"""Shared fixtures: where mseg-api and the test photos are, and tiny dataset trees.

The real MSeg files are read from ../shared (or from $MSEG_API_ROOT and $MSEG_TEST_DATA),
never copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def _shared_path(env: str, default: Path) -> Path:
    path = Path(os.environ.get(env) or default)
    if not path.is_dir():
        pytest.fail(f"{path} not found: set {env} to your copy (default {default})")
    return path


@pytest.fixture(scope="session")
def mseg_api() -> Path:
    return _shared_path("MSEG_API_ROOT", SHARED / "mseg-api")


@pytest.fixture(scope="session")
def test_photos() -> Path:
    return _shared_path("MSEG_TEST_DATA", SHARED / "mseg-semantic-test-data")


@pytest.fixture(scope="session")
def demo_tree(tmp_path_factory) -> Path:
    """The generated demo tree (made once per session, read-only for tests)."""
    from mseg_fast.demo_data import make_demo

    root = tmp_path_factory.mktemp("demo")
    make_demo(root)
    return root


@pytest.fixture(scope="session")
def real_tree(mseg_api, tmp_path_factory) -> Path:
    """A data root in the real MSeg layout, linking mseg-api's own test samples:
    SUNRGBD/ (sunrgbd-37 images and labels) and ADE20K/ADEChallengeData2016/."""
    root = tmp_path_factory.mktemp("mseg_root")
    test_data = mseg_api / "tests" / "test_data"
    (root / "SUNRGBD").symlink_to(test_data / "SUNRGBD_test_data")
    (root / "ADE20K").mkdir()
    (root / "ADE20K" / "ADEChallengeData2016").symlink_to(test_data / "ADE20K_test_data" / "ADEChallengeData2016")
    return root


@pytest.fixture(scope="session")
def demo_shards(demo_tree, tmp_path_factory) -> Path:
    """The demo datasets sharded (train and val, 4 samples a shard) with tools/shard.py."""
    from helpers import demo_args, run_tool
    from mseg_fast.demo_data import DATASETS

    out = tmp_path_factory.mktemp("demo_shards")
    for dataset in DATASETS:
        for split in ("train", "val"):
            run_tool("shard.py", "--dataset", dataset.name, "--split", split, "--samples-per-shard", "4",
                     "--workers", "1", *demo_args(demo_tree, out), check=True)
    return out


@pytest.fixture(scope="session")
def pinned_two_ranks(demo_shards, tmp_path_factory) -> Path:
    """One torchrun run of 2 gloo ranks, 3 iterations, pinned augmentation: the reference that one process
    (test_train) and two nodes of one rank each (test_ranks) are compared with. Read-only for tests."""
    import subprocess
    import sys

    from helpers import TINY, pinned_args

    run = tmp_path_factory.mktemp("pinned_two_ranks") / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
               str(REPO / "train.py"), TINY, f"shards={demo_shards}", f"save_path={run}", *pinned_args()]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "global batch 6 (2 ranks)" in result.stdout
    return run


@pytest.fixture(scope="session")
def short_run(demo_shards, tmp_path_factory) -> Path:
    """train.py for 2 iterations with a checkpoint at each: the run that refusal, resume and export tests start
    from. Tests copy it (shutil.copytree) before changing anything."""
    import subprocess
    import sys

    from helpers import TINY

    run = tmp_path_factory.mktemp("short_run") / "run"
    command = [sys.executable, str(REPO / "train.py"), TINY, f"shards={demo_shards}", f"save_path={run}",
               "max_iters=2", "save_every=1", "print_freq=1", "val_every=0"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return run
