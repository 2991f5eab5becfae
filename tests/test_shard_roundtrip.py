"""Dataset tree in the MSeg layout -> tools/shard.py -> read back with tar, webdataset and DALI."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from helpers import demo_args, run_tool
from mseg_fast import datasets
from mseg_fast.demo_data import DATASETS
from mseg_fast.shards.plan import shuffled_jobs
from mseg_fast.targets import build_target
from shard_readers import manifest_of, read_dali, read_webdataset, shard_files


def expected_samples(spec: datasets.DatasetSpec, list_path: Path, target) -> dict[str, tuple[bytes, np.ndarray]]:
    """image path#line -> (source image bytes, source label converted through the table)."""
    entries, _ = datasets.read_list(list_path, spec.name, "train")
    out = {}
    for entry in entries:
        label = cv2.imread(str(spec.data_dir / entry.label), cv2.IMREAD_UNCHANGED)
        out[f"{entry.image}#{entry.line_no}"] = ((spec.data_dir / entry.image).read_bytes(),
                                                 target.table[label].astype(target.label_dtype))
    return out


def check_round_trip(directory: Path, split: str, expected: dict) -> None:
    web = read_webdataset(directory, split)
    assert len(web) == len(expected)
    for key, sample in web.items():
        assert "." not in key
        name = f"{sample['meta']['image']}#{sample['meta']['line']}"
        image_bytes, label = expected[name]
        assert sample["image"] == image_bytes, "image bytes are stored untouched"
        assert sample["label"].dtype == label.dtype and np.array_equal(sample["label"], label)
    dali = read_dali(directory, split)
    assert set(dali) == set(expected)
    for name, sample in dali.items():
        image_bytes, label = expected[name]
        assert np.array_equal(sample["label"], label)
        reference = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        assert sample["image"].shape == reference.shape
        # DALI and OpenCV may use different IDCTs; pixels agree to within a few levels.
        assert np.abs(sample["image"].astype(int) - reference).mean() < 1.0


def test_real_layout_round_trip(real_tree, mseg_api, tmp_path):
    """mseg-api's real SUN RGB-D and ADE20K samples, in the MSeg layout, both ways round."""
    cases = [("sunrgbd-37", "universal", "image/train/img-000001.jpg semseg-label37/train/00000001.png\n"
                                        "image/test/img-000001.jpg semseg-label37/test/00000001.png\n"),
             ("sunrgbd-37", "naive", None), ("sunrgbd-37", "self", None),
             ("ade20k-151", "self", "images/training/ADE_train_00000001.jpg annotations/training/ADE_train_00000001.png\n"
                                   "images/validation/ADE_val_00000001.jpg annotations/validation/ADE_val_00000001.png\n")]
    out = tmp_path / "out"
    for dataset, taxonomy, lines in cases:
        list_path = tmp_path / f"{dataset}.txt"
        if lines:
            list_path.write_text(lines)
        run_tool("shard.py", "--dataset", dataset, "--taxonomy", taxonomy, "--data-root", str(real_tree),
                 "--mseg-api", str(mseg_api), "--out", str(out), "--list", str(list_path), "--samples-per-shard", "1",
                 "--workers", "2", "--no-progress", check=True)
        spec = datasets.build_spec(dataset, real_tree, mseg_api)
        target = build_target(taxonomy, spec, mseg_api)
        directory = out / taxonomy / dataset
        check_round_trip(directory, "train", expected_samples(spec, list_path, target))
        manifest = manifest_of(directory)
        assert manifest["class_names"] == list(target.class_names)
        assert manifest["label_dtype"] == ("uint16" if taxonomy == "naive" else "uint8")
    naive = read_webdataset(out / "naive" / "sunrgbd-37", "train")
    assert max(int(s["label"][s["label"] != 255].max()) for s in naive.values()) > 255, "naive ids need 16 bits"


def test_demo_round_trip_and_manifest(demo_tree, tmp_path):
    out = tmp_path / "out"
    registry = datasets.load_extra_datasets(demo_tree / "datasets.yaml")
    for ds in DATASETS:
        result = run_tool("shard.py", "--dataset", ds.name, "--workers", "2", "--samples-per-shard", "5",
                          *demo_args(demo_tree, out), check=True)
        assert "0 skipped" in result.stdout
        spec = datasets.build_spec(ds.name, demo_tree / "data", demo_tree / "mseg-api", registry)
        target = build_target("universal", spec, demo_tree / "mseg-api")
        directory = out / "universal" / ds.name
        check_round_trip(directory, "train", expected_samples(spec, spec.list_path("train"), target))
        manifest = manifest_of(directory)
        entry = manifest["splits"]["train"]
        assert manifest["dataset"] == ds.name and manifest["taxonomy"] == "universal"
        assert manifest["tool_version"] and len(manifest["tsv_sha256"]) == 64
        assert entry["split"] == "train" and entry["samples"] == ds.counts[0] and entry["skipped"] == []
        assert entry["components"] == {"image": ds.image_ext, "label": "label.png", "meta": "json"}
        assert entry["list_sha256"] == hashlib.sha256(spec.list_path("train").read_bytes()).hexdigest()
        assert [s["samples"] for s in entry["shards"]] == [5] * (ds.counts[0] // 5) + ([ds.counts[0] % 5] if ds.counts[0] % 5 else [])
        for shard in entry["shards"]:
            assert hashlib.sha256((directory / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
            listing = subprocess.run(["tar", "tf", str(directory / shard["file"])], capture_output=True, text=True,
                                     check=True).stdout.split()
            assert len(listing) == 3 * shard["samples"]
            # DALI's own index tool gives the same index as the one written beside the shard.
            subprocess.run([str(Path(sys.executable).parent / "wds2idx"), str(directory / shard["file"]),
                            str(tmp_path / "check.idx")], check=True, capture_output=True)
            assert (tmp_path / "check.idx").read_text() == (directory / shard["index"]).read_text()
        height, width = ds.size
        assert entry["image_size"]["height"] == {"min": height, "max": height, "mean": height}
        assert sum(entry["class_pixels"]) + entry["ignore_pixels"] == ds.counts[0] * height * width
        assert len(entry["class_pixels"]) == manifest["num_classes"] == len(manifest["class_names"])


def test_png_images_keep_distinct_components(demo_tree, tmp_path):
    """demo-rooms images are PNGs, as Cityscapes/IDD: image 'png' and label 'label.png' must not collide."""
    run_tool("shard.py", "--dataset", "demo-rooms", "--split", "val", *demo_args(demo_tree, tmp_path), check=True)
    web = read_webdataset(tmp_path / "universal" / "demo-rooms", "val")
    assert {s["ext"] for s in web.values()} == {"png"}
    assert all(s["image"][:8] == b"\x89PNG\r\n\x1a\n" and s["label"].ndim == 2 for s in web.values())


def test_global_shuffle_is_seeded(demo_tree, tmp_path):
    entries, _ = datasets.read_list(demo_tree / "mseg-api/mseg/dataset_lists/demo-streets/list/train.txt", "x", "train")
    order = [job.line_no for job in shuffled_jobs(entries, seed=0)]
    assert sorted(order) == [e.line_no for e in entries] and order != sorted(order)
    assert order == [job.line_no for job in shuffled_jobs(entries, seed=0)]
    assert order != [job.line_no for job in shuffled_jobs(entries, seed=1)]
    run_tool("shard.py", "--dataset", "demo-streets", "--samples-per-shard", "24", *demo_args(demo_tree, tmp_path),
             check=True)
    tars, _ = shard_files(tmp_path / "universal" / "demo-streets", "train")
    names = subprocess.run(["tar", "tf", tars[0]], capture_output=True, text=True, check=True).stdout.split()
    lines = [int(n.split("_")[0]) + 1 for n in names if n.endswith(".json")]
    assert lines == order, "shards hold the samples in the seeded global order"


def test_shard_size_cuts_by_bytes(demo_tree, tmp_path):
    run_tool("shard.py", "--dataset", "demo-rooms", "--shard-size", "1MB", *demo_args(demo_tree, tmp_path), check=True)
    entry = manifest_of(tmp_path / "universal" / "demo-rooms")["splits"]["train"]
    assert len(entry["shards"]) > 2 and entry["samples"] == 16
    per_sample = max(s["bytes"] / s["samples"] for s in entry["shards"])
    assert all(s["bytes"] <= 2**20 + per_sample for s in entry["shards"])


def test_short_size(demo_tree, tmp_path):
    run_tool("shard.py", "--dataset", "demo-rooms", "--short-size", "192", *demo_args(demo_tree, tmp_path), check=True)
    directory = tmp_path / "universal" / "demo-rooms"
    manifest = manifest_of(directory)
    entry = manifest["splits"]["train"]
    assert entry["components"]["image"] == "jpg"  # re-encoded as JPEG
    assert entry["image_size"]["height"]["max"] == 192 and entry["image_size"]["width"]["max"] == 256
    for sample in read_webdataset(directory, "train").values():
        image = cv2.imdecode(np.frombuffer(sample["image"], np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == sample["label"].shape == (192, 256)
        assert sample["meta"]["source_size"] == [384, 512]
        assert set(np.unique(sample["label"])) <= set(range(manifest["num_classes"])) | {255}
