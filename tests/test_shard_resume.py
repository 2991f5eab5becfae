"""Crash safety: kill -9 mid-run, rerun, and end with what an uninterrupted run writes.
Plus --verify: every shard re-checked against the manifest, non-zero exit on a mismatch."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from helpers import REPO, demo_args, run_tool
from leftovers import MarkedRun
from shard_readers import manifest_of

REPEAT = 20  # the demo list repeated, so that a run lasts long enough to be killed mid-way
PER_SHARD = 4


def long_list(demo_tree: Path, tmp_path: Path) -> Path:
    lines = (demo_tree / "mseg-api/mseg/dataset_lists/demo-streets/list/train.txt").read_text().splitlines()
    path = tmp_path / "long.txt"
    path.write_text("\n".join(lines * REPEAT) + "\n")
    return path


def shard_args(demo_tree: Path, out: Path, list_path: Path) -> list[str]:
    return ["--dataset", "demo-streets", "--list", str(list_path), "--samples-per-shard", str(PER_SHARD),
            "--workers", "2", *demo_args(demo_tree, out)]


def test_kill_9_then_rerun_matches_uninterrupted(demo_tree, tmp_path):
    list_path = long_list(demo_tree, tmp_path)
    total_shards = 24 * REPEAT // PER_SHARD
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_tool("shard.py", *shard_args(demo_tree, reference, list_path), check=True)

    directory = resumed / "universal" / "demo-streets"
    marked = MarkedRun(tmp_path)
    process = marked.start([sys.executable, str(REPO / "tools" / "shard.py"), *shard_args(demo_tree, resumed, list_path)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(directory.glob("*.stats.json"))) < 5:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)  # the process alone
    process.wait()
    at_kill = len(list(directory.glob("*.stats.json")))
    marked.assert_nothing_left()
    finished = len(list(directory.glob("*.stats.json")))
    # A worker may be committing the shard it holds as its parent dies; it exits right after (without that,
    # orphans went on writing dozens of shards and then hung).
    assert finished - at_kill <= 2, "workers went on writing after their parent was killed"
    assert 5 <= finished < total_shards, "the run was killed mid-way"
    assert not (directory / "manifest.json").exists()

    result = run_tool("shard.py", *shard_args(demo_tree, resumed, list_path), check=True)
    assert f"{total_shards - finished} written, {finished} reused" in result.stdout
    assert manifest_of(directory) == manifest_of(reference / "universal" / "demo-streets")
    assert not list(directory.glob("*.tmp-*")), "temporary files are cleaned up"

    # A damaged shard fails its checksum and is the only one redone.
    damaged = directory / "train-000003.tar"
    data = bytearray(damaged.read_bytes())
    data[1000] ^= 0xFF
    damaged.write_bytes(bytes(data))
    verify = run_tool("shard.py", "--dataset", "demo-streets", "--verify", *demo_args(demo_tree, resumed))
    assert verify.returncode == 1 and "train-000003.tar: sha256" in verify.stderr
    result = run_tool("shard.py", *shard_args(demo_tree, resumed, list_path), check=True)
    assert f"1 written, {total_shards - 1} reused" in result.stdout
    assert manifest_of(directory) == manifest_of(reference / "universal" / "demo-streets")


def test_verify(demo_tree, tmp_path):
    run_tool("shard.py", "--dataset", "demo-fields", "--samples-per-shard", "4", *demo_args(demo_tree, tmp_path),
             check=True)
    verify_args = ["--dataset", "demo-fields", "--verify", *demo_args(demo_tree, tmp_path)]
    ok = run_tool("shard.py", *verify_args)
    assert ok.returncode == 0 and ": ok" in ok.stdout
    directory = tmp_path / "universal" / "demo-fields"
    index = directory / "train-000001.idx"
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[:-1]) + "\n")
    bad = run_tool("shard.py", *verify_args)
    assert bad.returncode == 1 and "train-000001.idx" in bad.stderr
    (directory / "train-000002.tar").unlink()
    bad = run_tool("shard.py", *verify_args)
    assert bad.returncode == 1 and "train-000002.tar: missing" in bad.stderr
    missing = run_tool("shard.py", "--dataset", "demo-fields", "--split", "val", "--verify", *demo_args(demo_tree, tmp_path))
    assert missing.returncode == 1 and "no manifest entry for split 'val'" in missing.stderr


def test_changed_settings_replace_old_shards(demo_tree, tmp_path):
    args = ["--dataset", "demo-fields", *demo_args(demo_tree, tmp_path)]
    run_tool("shard.py", "--samples-per-shard", "2", *args, check=True)
    result = run_tool("shard.py", "--samples-per-shard", "8", *args, check=True)
    assert "2 written, 0 reused" in result.stdout
    directory = tmp_path / "universal" / "demo-fields"
    assert sorted(p.name for p in directory.glob("train-*.tar")) == ["train-000000.tar", "train-000001.tar"]
    assert run_tool("shard.py", "--dataset", "demo-fields", "--verify", *demo_args(demo_tree, tmp_path)).returncode == 0
