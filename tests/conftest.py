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
