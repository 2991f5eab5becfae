"""Bad input: a clear error naming the file and value, and no shard file left behind;
with --skip-bad, skipped, counted and listed in the manifest."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import demo_args, run_tool
from shard_readers import manifest_of

GOOD = 4  # good samples before and after the bad one, so some shards complete before the error


def make_bad(root: Path, case: str) -> tuple[str, str]:
    """Create one bad sample under root/data/DemoStreets; returns its list line and the expected message."""
    data = root / "data" / "DemoStreets"
    image, label = "images/train/demo-streets_train_0000.jpg", "labels/train/demo-streets_train_0000.png"
    name = f"bad_{case}"
    bad_image, bad_label = f"images/bad/{name}.jpg", f"labels/bad/{name}.png"
    (data / "images/bad").mkdir(parents=True, exist_ok=True)
    (data / "labels/bad").mkdir(parents=True, exist_ok=True)
    shutil.copy(data / image, data / bad_image)
    shutil.copy(data / label, data / bad_label)
    source = cv2.imread(str(data / label), cv2.IMREAD_UNCHANGED)
    if case == "missing_image":
        (data / bad_image).unlink()
        return f"{bad_image} {bad_label}", rf"{name}.jpg: image file does not exist \(list line"
    if case == "missing_label":
        (data / bad_label).unlink()
        return f"{bad_image} {bad_label}", rf"{name}.png: label file does not exist"
    if case == "undecodable_image":
        (data / bad_image).write_bytes(b"this is not a JPEG" * 100)
        return f"{bad_image} {bad_label}", rf"{name}.jpg: image cannot be decoded"
    if case == "truncated_image":
        full = (data / image).read_bytes()
        (data / bad_image).write_bytes(full[: len(full) // 2])
        return f"{bad_image} {bad_label}", rf"{name}.jpg: image cannot be decoded \(image file is truncated"
    if case == "undecodable_label":
        full = (data / label).read_bytes()
        (data / bad_label).write_bytes(full[: len(full) // 2])
        return f"{bad_image} {bad_label}", rf"{name}.png: label cannot be decoded"
    if case == "size_mismatch":
        cv2.imwrite(str(data / bad_label), source[:-10])
        return f"{bad_image} {bad_label}", rf"{name}.png: label is 640x350 \(WxH\) but its image .* is 640x360"
    if case == "unknown_value":
        source[100:110, 100:110] = 200
        cv2.imwrite(str(data / bad_label), source)
        return f"{bad_image} {bad_label}", rf"{name}.png: label values not in the demo-streets -> universal table: 200 .*: 100 px"
    if case == "colour_label":
        cv2.imwrite(str(data / bad_label), np.dstack([source] * 3))
        return f"{bad_image} {bad_label}", rf"{name}.png: label is a 8-bit RGB PNG"
    if case == "jpeg_label":  # saved as JPEG under a .png name: its artefacts may stay within the class range
        (data / bad_label).write_bytes(cv2.imencode(".jpg", source, [cv2.IMWRITE_JPEG_QUALITY, 98])[1].tobytes())
        return f"{bad_image} {bad_label}", rf"{name}.png: label is a JPEG; labels must be lossless PNG"
    if case == "unreadable_image":  # exists but cannot be read (here a loop of links; EACCES and EIO alike)
        (data / bad_image).unlink()
        (data / bad_image).symlink_to(data / bad_image)
        return f"{bad_image} {bad_label}", rf"{name}.jpg: image file cannot be read: Too many levels of symbolic links"
    raise ValueError(case)


SAMPLE_CASES = ["missing_image", "missing_label", "undecodable_image", "truncated_image", "undecodable_label",
                "size_mismatch", "unknown_value", "colour_label", "jpeg_label", "unreadable_image"]


@pytest.fixture()
def tree(demo_tree, tmp_path) -> Path:
    """A private copy of the demo tree that tests may damage."""
    root = tmp_path / "demo"
    shutil.copytree(demo_tree, root)
    return root


def good_lines(root: Path) -> list[str]:
    return (root / "mseg-api/mseg/dataset_lists/demo-streets/list/train.txt").read_text().splitlines()


def shard_files(out: Path) -> list[Path]:
    directory = out / "universal" / "demo-streets"
    return sorted(p for p in directory.glob("train-*")) if directory.exists() else []


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_bad_sample_stops_and_leaves_nothing(tree, tmp_path, case):
    line, message = make_bad(tree, case)
    lines = good_lines(tree)
    list_path = tmp_path / "list.txt"
    list_path.write_text("\n".join(lines[:GOOD] + [line] + lines[GOOD:2 * GOOD]) + "\n")
    out = tmp_path / "out"
    result = run_tool("shard.py", "--dataset", "demo-streets", "--list", str(list_path), "--samples-per-shard", "1",
                      "--seed", "0", "--workers", "2", *demo_args(tree, out))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert "--skip-bad" in result.stderr, "the message says what to do"
    assert shard_files(out) == [], "no shard file is left behind"
    assert not (out / "universal" / "demo-streets" / "manifest.json").exists()


def test_skip_bad_lists_every_case(tree, tmp_path):
    bad = [make_bad(tree, case)[0] for case in SAMPLE_CASES]
    lines = good_lines(tree)
    list_path = tmp_path / "list.txt"
    list_path.write_text("\n".join(lines[:GOOD] + bad + lines[GOOD:2 * GOOD]) + "\n")
    out = tmp_path / "out"
    result = run_tool("shard.py", "--dataset", "demo-streets", "--list", str(list_path), "--samples-per-shard", "3",
                      "--skip-bad", *demo_args(tree, out), check=True)
    assert f"{len(SAMPLE_CASES)} skipped" in result.stdout
    entry = manifest_of(out / "universal" / "demo-streets")["splits"]["train"]
    assert entry["samples"] == 2 * GOOD
    assert sorted(Path(s["image"]).stem for s in entry["skipped"]) == sorted(f"bad_{c}" for c in SAMPLE_CASES)
    reasons = {Path(s["image"]).stem: s["reason"] for s in entry["skipped"]}
    assert "200" in reasons["bad_unknown_value"] and "does not exist" in reasons["bad_missing_image"]
    assert run_tool("shard.py", "--dataset", "demo-streets", "--verify", *demo_args(tree, out)).returncode == 0


def test_empty_list(tree, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run_tool("shard.py", "--dataset", "demo-streets", "--list", str(empty), *demo_args(tree, tmp_path / "out"))
    assert result.returncode == 2 and f"list file {empty} is empty" in result.stderr


def test_unknown_dataset(tree, tmp_path):
    result = run_tool("shard.py", "--dataset", "mapilary", *demo_args(tree, tmp_path / "out"))
    assert result.returncode == 2 and "unknown dataset 'mapilary'" in result.stderr and "mapillary" in result.stderr


def test_data_root_without_expected_folder(tree, tmp_path):
    shutil.rmtree(tree / "data" / "DemoStreets")
    result = run_tool("shard.py", "--dataset", "demo-streets", *demo_args(tree, tmp_path / "out"))
    assert result.returncode == 2 and "has no folder 'DemoStreets' for demo-streets" in result.stderr


def test_missing_mseg_api(tree, tmp_path):
    result = run_tool("shard.py", "--dataset", "demo-streets", "--data-root", str(tree / "data"),
                      "--mseg-api", str(tmp_path), "--extra-datasets", str(tree / "datasets.yaml"),
                      "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "cannot find the mseg-api data files" in result.stderr
