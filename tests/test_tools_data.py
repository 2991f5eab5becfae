"""tools/show_batch.py and tools/bench_loader.py, run as a user would."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from helpers import REPO, run_tool

CONFIG = str(REPO / "config" / "demo" / "tiny.yaml")


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_show_batch_writes_crops_records_and_grid(demo_shards, tmp_path, backend):
    out = tmp_path / "show"
    run_tool("show_batch.py", CONFIG, "--shards", str(demo_shards), "--out", str(out), "--n", "6", f"loader={backend}",
             check=True)
    records = json.loads((out / "samples.json").read_text())
    assert records["backend"] == backend and len(records["crops"]) == 6
    datasets = {r["dataset"] for r in records["crops"]}
    assert datasets == {"demo-streets", "demo-rooms", "demo-fields"}, "batches mix the three datasets"
    for record in records["crops"]:
        number = record["crop"]
        image = cv2.imread(str(out / f"{number:04d}_image.png"))
        label = cv2.imread(str(out / f"{number:04d}_label.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == (177, 177, 3) and label.shape == (177, 177)
        assert set(np.unique(label).tolist()) <= set(range(16)) | {255}
        params = record["params"]
        assert 0.5 <= params["scale"] <= 2.0 and -10 <= params["angle"] <= 10
        assert params["resized_h"] == 240 and record["image"].endswith((".jpg", ".png"))
        if params["canvas_h"] < 177:  # padded rows are the mean colour in the picture, 255 in the label
            assert (label[0] == 255).all()
    grid = cv2.imread(str(out / "grid.png"))
    assert grid.shape[1] == 4 * 320 and grid.shape[0] > 2 * 320


def test_bench_loader_reports_every_backend(demo_shards, tmp_path):
    report = tmp_path / "bench.json"
    result = run_tool("bench_loader.py", CONFIG, "--shards", str(demo_shards), "--iters", "3", "--warmup", "1",
                      "--json", str(report), check=True)
    data = json.loads(report.read_text())
    runs = {r["backend"]: r for r in data["runs"]}
    assert set(runs) == {"dali", "torch", "mseg", "decode"}
    for run in runs.values():
        assert run["samples_per_s"] > 0 and run["p99_ms"] >= run["p50_ms"] > 0
        assert run["samples"] == 3 * run["batch"]
    assert {"read", "decode", "augment"} <= set(runs["torch"]["stages_ms_per_sample"])
    assert "vs mseg" in result.stdout and "torch" in result.stdout


def test_bench_step_reports_real_and_synthetic(demo_shards, tmp_path):
    report = tmp_path / "step.json"
    run_tool("bench_step.py", str(REPO / "config" / "demo" / "train-tiny.yaml"), f"shards={demo_shards}", "--iters", "2",
             "--json", str(report), check=True)
    runs = json.loads(report.read_text())["runs"]
    assert [r["batches"] for r in runs] == ["synthetic", "real"]
    assert all(r["samples_per_s"] > 0 and r["peak_memory_gib"] > 0 and r["batch"] == 6 for r in runs)
