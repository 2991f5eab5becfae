"""`--dataset all`: the 7 training datasets in one command, each in its real data root."""

from __future__ import annotations

import cv2
import numpy as np

from helpers import run_tool
from mseg_fast import datasets
from mseg_fast.taxonomy import read_names
from shard_readers import manifest_of, read_webdataset


def test_all_relabeled_datasets(mseg_api, tmp_path):
    data_root, out = tmp_path / "data", tmp_path / "out"
    rng = np.random.default_rng(0)
    list_args, sources = [], {}
    for name in datasets.resolve_names("all"):
        folder = data_root / datasets.DATA_ROOTS[name]
        (folder / "img").mkdir(parents=True)
        (folder / "lab").mkdir()
        names = read_names(mseg_api / "mseg/dataset_lists" / name / f"{name}_names.txt")
        label = rng.integers(0, len(names), size=(24, 32)).astype(np.uint8)
        label[:2] = 255
        cv2.imwrite(str(folder / "img/a.jpg"), rng.integers(0, 255, (24, 32, 3), np.uint8))
        cv2.imwrite(str(folder / "lab/a.png"), label)
        (tmp_path / f"{name}.txt").write_text("img/a.jpg lab/a.png\n")
        list_args += ["--list", f"{name}={tmp_path / f'{name}.txt'}"]
        sources[name] = (names, label)
    result = run_tool("shard.py", "--dataset", "all", "--data-root", str(data_root), "--mseg-api", str(mseg_api),
                      "--out", str(out), "--workers", "1", "--no-progress", *list_args, check=True)
    assert result.stdout.count("1 samples in 1 shards") == 7
    for name, (names, label) in sources.items():
        directory = out / "universal" / name
        universal = manifest_of(directory)["class_names"]
        (sample,) = read_webdataset(directory, "train").values()
        # Relabeled classes map to the universal class of the same name; 255 stays 255.
        expected = np.array([universal.index(n) for n in names] + [0] * (255 - len(names)) + [255])[label]
        assert np.array_equal(sample["label"], expected), name


def test_list_needs_a_name_with_several_datasets(mseg_api, tmp_path):
    result = run_tool("shard.py", "--dataset", "all", "--data-root", str(tmp_path), "--mseg-api", str(mseg_api),
                      "--out", str(tmp_path / "out"), "--list", "x.txt")
    assert result.returncode == 2 and "--list NAME=FILE" in result.stderr
