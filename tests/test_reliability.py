"""Bad input is one clear line and exit 2, nothing half-written, no stale or silently wrong output:
shards that would lie, shards the trainer must not trust, run folders and checkpoints, tools."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import REPO, demo_args, run_tool
from mseg_fast.atomic import write_atomic, write_set
from mseg_fast.shards.tarwriter import read_index
from test_train import final_weights, train

SHORT = ["max_iters=2", "save_every=1", "print_freq=1", "val_every=0"]


def one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, one `error:` line holding every needle."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def shard(demo_tree: Path, out: Path, *extra: str, data_root: Path | None = None) -> subprocess.CompletedProcess:
    args = demo_args(demo_tree, out)
    if data_root is not None:
        args[args.index("--data-root") + 1] = str(data_root)
    return run_tool("shard.py", "--dataset", "demo-rooms", "--samples-per-shard", "4", "--workers", "1", *args, *extra)


def copy_shards(demo_shards: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "shards"
    shutil.copytree(demo_shards, copy)
    return copy


# Shards that lie -------------------------------------------------------------------------------------------

def test_a_changed_source_or_data_root_rewrites_the_shards(demo_tree, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_tree / "data", data)
    out = tmp_path / "out"
    first = shard(demo_tree, out, data_root=data)
    assert first.returncode == 0, first.stderr
    again = shard(demo_tree, out, data_root=data)
    assert "(0 written, 4 reused)" in again.stdout, "unchanged sources are reused"
    listing = (demo_tree / "mseg-api/mseg/dataset_lists/demo-rooms/list/train.txt").read_text().split()
    label_path = next(data.rglob(Path(listing[1]).name))
    label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(label_path), np.full_like(label, label.max()))  # every pixel one class now
    assert shard(demo_tree, out, "--verify").returncode == 0, "the shards themselves are intact"
    verify = shard(demo_tree, out, "--verify", data_root=data)
    assert verify.returncode == 1 and f"{label_path} changed since it was sharded" in verify.stderr, verify.stderr
    changed = shard(demo_tree, out, data_root=data)
    assert changed.returncode == 0 and "(1 written, 3 reused)" in changed.stdout, changed.stdout
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    other_root = shard(demo_tree, out, data_root=moved)
    assert "(4 written, 0 reused)" in other_root.stdout, "another --data-root is another source"
    forced = shard(demo_tree, out, "--force", data_root=moved)
    assert "(4 written, 0 reused)" in forced.stdout


def test_every_sample_bad_with_skip_bad_is_an_error(demo_tree, tmp_path):
    out = tmp_path / "out"
    empty_root = tmp_path / "nothing"
    (empty_root / "DemoRooms").mkdir(parents=True)
    result = shard(demo_tree, out, "--skip-bad", data_root=empty_root)
    one_error_line(result, "every one of the", "skipped as bad", "no shard was written")
    directory = out / "universal" / "demo-rooms"
    assert not list(directory.glob("train-*")), "no empty shard is left"


def test_a_pair_listed_twice_is_said(demo_tree, tmp_path):
    lines = (demo_tree / "mseg-api/mseg/dataset_lists/demo-rooms/list/train.txt").read_text().splitlines()
    listing = tmp_path / "twice.txt"
    listing.write_text("\n".join(lines + lines[:1]) + "\n")
    result = shard(demo_tree, tmp_path / "out", "--list", str(listing))
    assert result.returncode == 0, result.stderr
    assert (f"warning: demo-rooms train list twice.txt: 1 lines name an image/label pair already listed "
            f"(line {len(lines) + 1} repeats line 1)") in result.stderr
    manifest = json.loads((tmp_path / "out/universal/demo-rooms/manifest.json").read_text())
    assert manifest["splits"]["train"]["duplicate_pairs"] == 1


# The trainer does not trust its shards blindly ---------------------------------------------------------------

def first_shard(shards: Path, dataset: str = "demo-streets") -> tuple[Path, list]:
    tar = shards / "universal" / dataset / "train-000000.tar"
    return tar, read_index(tar.with_suffix(".idx"))


def test_truncated_shard_and_missing_index_are_refused_at_start(demo_shards, tmp_path):
    shards = copy_shards(demo_shards, tmp_path)
    tar, _ = first_shard(shards)
    tar.write_bytes(tar.read_bytes()[:-1000])
    result = train(shards, tmp_path / "run", *SHORT)
    one_error_line(result, str(tar), "truncated", "--verify")
    assert not (tmp_path / "run").exists(), "nothing is written for a refused run"
    shutil.copy(demo_shards / "universal/demo-streets/train-000000.tar", tar)
    tar.with_suffix(".idx").unlink()
    one_error_line(train(shards, tmp_path / "run", *SHORT), "train-000000.idx", "index", "missing")


@pytest.mark.parametrize("loader", ["torch", "dali"])
def test_a_sample_that_fails_to_decode_names_shard_and_key(demo_shards, tmp_path, loader):
    shards = copy_shards(demo_shards, tmp_path)
    tar, index = first_shard(shards)
    data = bytearray(tar.read_bytes())
    ext, offset, size, name = next(c for c in index[0] if c[0] == "label.png")
    data[offset + 8:offset + size] = bytes(size - 8)  # PNG signature kept, chunks zeroed: same size, no decode
    tar.write_bytes(bytes(data))
    result = train(shards, tmp_path / "run", *SHORT, f"loader={loader}", "dataset=[demo-streets]", "batch_size=8")
    one_error_line(result, str(tar), f"sample '{name.split('.')[0]}'", "--verify")


def test_verify_shards_catches_a_jpeg_that_decodes_wrongly(demo_shards, tmp_path):
    shards = copy_shards(demo_shards, tmp_path)
    tar, index = first_shard(shards)
    data = bytearray(tar.read_bytes())
    _, offset, size, _ = next(c for c in index[0] if c[0] == "jpg")
    data[offset + size // 2] ^= 0xFF  # entropy-coded data: decodes, with wrong pixels
    tar.write_bytes(bytes(data))
    one_error_line(train(shards, tmp_path / "run", *SHORT, "verify_shards=True"), str(tar), "sha256")


def test_a_split_with_no_samples_is_refused_when_opened(demo_shards, tmp_path):
    """(It was a ZeroDivisionError in the trainer.)"""
    from mseg_fast.data.shardset import ShardSet
    from mseg_fast.errors import UserError

    copy = tmp_path / "universal" / "demo-rooms"
    shutil.copytree(demo_shards / "universal" / "demo-rooms", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["train"].update(samples=0, shards=[])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="split 'train' holds no samples"):
        ShardSet.open(tmp_path, "universal", "demo-rooms", "train")


def test_a_damaged_manifest_is_one_line(demo_shards, tmp_path):
    shards = copy_shards(demo_shards, tmp_path)
    manifest = shards / "universal" / "demo-rooms" / "manifest.json"
    manifest.write_text(manifest.read_text()[:100])
    one_error_line(train(shards, tmp_path / "run", *SHORT), str(manifest), "not valid JSON", "shard again")


def test_yaml_syntax_error_is_one_line(demo_shards, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("TRAIN:\n  base_lr: [0.01\n")
    result = subprocess.run([sys.executable, str(REPO / "train.py"), str(broken)], capture_output=True, text=True)
    one_error_line(result, "broken.yaml: not valid YAML", "line")


# Run folders and checkpoints ---------------------------------------------------------------------------------

def test_a_run_folder_with_checkpoints_is_not_trained_over(demo_shards, short_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    pointer = (run / "checkpoints" / "latest.json").read_text()
    config = (run / "config.yaml").read_text()
    again = train(demo_shards, run, "max_iters=1", "save_every=1", "val_every=0")
    one_error_line(again, "already holds checkpoints", "--resume auto", "--start-over")
    assert (run / "checkpoints" / "latest.json").read_text() == pointer
    assert (run / "config.yaml").read_text() == config, "a refused command writes nothing"
    refused = train(demo_shards, run, *SHORT, "shards=/nonexistent", "--resume", "auto")
    assert refused.returncode == 2 and (run / "config.yaml").read_text() == config
    over = train(demo_shards, run, "max_iters=1", "save_every=1", "val_every=0", "--start-over")
    assert over.returncode == 0, over.stderr
    assert final_weights(run)["iteration"] == 1 and not (run / "checkpoints" / "iter_00000002.pth").exists()


def test_damaged_and_release_files_are_one_line(demo_shards, short_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    good = run / "checkpoints" / "iter_00000002.pth"
    truncated, noise = tmp_path / "truncated.pth", tmp_path / "noise.pth"
    truncated.write_bytes(good.read_bytes()[:5000])
    noise.write_bytes(os.urandom(4096))
    for bad in (truncated, noise):
        for flag in ("--resume", "--init-from"):
            line = one_error_line(train(demo_shards, tmp_path / f"r{flag}", *SHORT, flag, str(bad)), str(bad),
                                  "not a readable")
            assert "weights_only" not in line
        result = run_tool("export_weights.py", str(bad), str(tmp_path / "release.pth"))
        one_error_line(result, str(bad))
        assert not (tmp_path / "release.pth").exists()
    release = tmp_path / "release.pth"
    assert run_tool("export_weights.py", str(good), str(release)).returncode == 0
    # The release file holds the weights only (no optimiser momentum) and loads as the trained model.
    import mseg_fast
    import torch

    assert release.stat().st_size < 0.6 * good.stat().st_size
    trained, loaded = torch.load(good, weights_only=True)["model"], mseg_fast.load_model(release).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in trained.items())
    one_error_line(train(demo_shards, tmp_path / "r2", *SHORT, "--resume", str(release)), "release file",
                   "--init-from")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    one_error_line(run_tool("export_weights.py", str(good), str(folder)), "is a folder")
    before = good.read_bytes()
    one_error_line(run_tool("export_weights.py", str(good), str(good)), "is the checkpoint itself")
    assert good.read_bytes() == before, "the training checkpoint (optimizer, loader state) is kept"
    assert not list(folder.iterdir()) and not list(tmp_path.glob("*.tmp-*")), "no temporary file is left"
    no_model = tmp_path / "no-model.pth"
    torch.save({"something": torch.zeros(2)}, no_model)
    one_error_line(run_tool("export_weights.py", str(no_model), str(tmp_path / "out.pth")), "holds no 'model'")
    assert not (tmp_path / "out.pth").exists()


def test_resume_auto_skips_a_truncated_latest_checkpoint(demo_shards, short_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    latest = run / "checkpoints" / "iter_00000002.pth"
    latest.write_bytes(latest.read_bytes()[:10000])  # a full disk, a killed copy
    resumed = train(demo_shards, run, "max_iters=3", "save_every=1", "print_freq=1", "val_every=0", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "skipping" in resumed.stdout and "iter_00000002.pth" in resumed.stdout
    assert "resuming at iteration 1" in resumed.stdout and final_weights(run)["iteration"] == 3


def test_atomic_writes_are_durable_and_leave_nothing_on_failure(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(descriptor):
        synced.append(stat.S_ISDIR(os.fstat(descriptor).st_mode))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_atomic(tmp_path / "file.bin", b"data")
    assert synced == [False, True], "the file, then its folder"
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "taken", b"data")  # a folder is in the way of the rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin", "taken"]
    # A set (results.txt, confusion.png, results.json) appears whole or not at all.
    with pytest.raises(OSError):
        write_set({tmp_path / "a.txt": b"1", tmp_path / "taken": b"2", tmp_path / "c.json": b"3"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin", "taken"]
    write_set({tmp_path / "a.txt": b"1", tmp_path / "c.json": b"3"})
    assert (tmp_path / "c.json").read_bytes() == b"3"


def test_a_full_disk_names_the_file(tmp_path):
    """write() on a full disk raises ENOSPC without a file name, and torch.save wraps it in a RuntimeError:
    the error line must still name the file (so the disk) and say what to do."""
    import errno

    import torch

    from mseg_fast.atomic import write_with
    from mseg_fast.cli import error_line

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    target = tmp_path / "iter_00000001.pth"
    for write in (lambda handle: FullDisk(handle).write(b"x"),
                  lambda handle: torch.save({"w": torch.zeros(1000)}, FullDisk(handle))):
        with pytest.raises(OSError) as raised:
            write_with(target, write)
        assert raised.value.filename == str(target)
        assert error_line(raised.value) == (f"error: {target}: No space left on device; free space on that disk or "
                                            f"write somewhere else")
    assert not list(tmp_path.iterdir()), "no temporary file is left"
    missing = error_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/such"))
    assert missing.endswith("check the path") and "write" not in missing


# Tools -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tool,args,needle", [
    ("bench_loader.py", ["--iters", "0"], "--iters: 0 is too small"),
    ("show_batch.py", ["--n", "0", "--out", "OUT"], "--n: 0 is too small"),
    ("show_batch.py", ["--out", "FILE/sub"], "FILE"),
])
def test_tool_mistakes_are_one_line(demo_shards, tmp_path, tool, args, needle):
    (tmp_path / "FILE").write_text("a file, not a folder")
    args = [a.replace("OUT", str(tmp_path / "out")).replace("FILE", str(tmp_path / "FILE")) for a in args]
    needle = needle.replace("FILE", str(tmp_path / "FILE"))
    result = run_tool(tool, str(REPO / "config/demo/tiny.yaml"), "--shards", str(demo_shards), *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert needle in result.stderr


def test_bench_and_check_tools_refuse_before_working(tmp_path, capsys, monkeypatch):
    """bench_shard without its test data or with 0 samples, gpu_check with a folder as --out (refused before
    minutes of checks), and an error under torchrun printed by rank 0 only."""
    from helpers import call_tool
    from mseg_fast.cli import fail
    from mseg_fast.errors import UserError

    code, _, err = call_tool(capsys, "bench_shard.py", "--photos", str(tmp_path / "none"))
    assert code == 2 and err.startswith("error: --photos") and "MSEG_TEST_DATA" in err, err
    code, _, err = call_tool(capsys, "bench_shard.py", "--samples", "0")
    assert code == 2 and "--samples: 0 is too small" in err
    (tmp_path / "report").mkdir()
    code, _, err = call_tool(capsys, "gpu_check.py", "--dry-cpu", "--out", str(tmp_path / "report"))
    assert code == 2 and "is a folder" in err and not list(tmp_path.glob("gpu-check-*")), err
    monkeypatch.setenv("RANK", "1")
    assert fail(UserError("the same line on every rank")) == 2 and capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert fail(UserError("once")) == 2 and capsys.readouterr().err == "error: once\n"


def test_shard_tool_mistakes_are_one_line(demo_tree, tmp_path):
    result = shard(demo_tree, tmp_path / "out", "--short-size", "-10")
    assert result.returncode == 2 and "--short-size: -10 is too small" in result.stderr
    broken = tmp_path / "datasets.yaml"
    broken.write_text("demo-rooms: {root: DemoRooms\n")
    result = run_tool("shard.py", "--dataset", "demo-rooms", "--extra-datasets", str(broken), "--out", str(tmp_path))
    one_error_line(result, "datasets.yaml: not valid YAML", "line")
