"""tools/evaluate.py on a small test set in CamVid's layout and taxonomy (generated; MSeg's real names
and TSV): zero-shot through the universal -> camvid-11 projection, MSeg's output layout, the summary,
reuse of finished results, agreement with the MSeg-style evaluator, and refusals."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import call_tool, run_tool
from mseg_fast.bench.mseg_eval import mseg_style_probabilities
from mseg_fast.eval.metrics import confusion
from mseg_fast.eval.mseg_metrics import miou_from_results_txt, mseg_scores
from mseg_fast.evaluation.summary import summarize
from mseg_fast.models.factory import build_model

SIZE = (48, 64)


@pytest.fixture(scope="module")
def camvid(mseg_api, tmp_path_factory) -> dict:
    """A camvid-11 val split of 6 generated images, sharded with its own labels, and a universal model file.
    The last image has the first one's file name in another folder (as two pairs of idd-39's val images do)."""
    root = tmp_path_factory.mktemp("camvid")
    images, labels = root / "data/Camvid/701_StillsRaw_full", root / "data/Camvid/semseg11"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for k in range(6):
        label = np.full(SIZE, 3, np.uint8)  # Road ... with a few blocks of other classes
        label[: SIZE[0] // 3] = 1 + k % 2
        label[SIZE[0] // 2:, : SIZE[1] // 3] = 255
        image = (rng.random((*SIZE, 3)) * 60 + label[..., None] * 15).astype(np.uint8)
        name = f"0016E5_{k:05d}" if k < 5 else "again/0016E5_00000"
        (images / name).parent.mkdir(exist_ok=True)
        (labels / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(images / f"{name}.png"), image)
        cv2.imwrite(str(labels / f"{name}_L.png"), label)
        lines.append(f"701_StillsRaw_full/{name}.png semseg11/{name}_L.png")
    listing = root / "val.txt"
    listing.write_text("\n".join(lines) + "\n")
    run_tool("shard.py", "--dataset", "camvid-11", "--split", "val", "--taxonomy", "self", "--list", str(listing),
             "--data-root", str(root / "data"), "--mseg-api", str(mseg_api), "--out", str(root / "shards"),
             "--workers", "1", "--no-progress", check=True)
    torch.manual_seed(0)
    model = build_model("hrnet_w18", 194)
    path = root / "universal.pth"
    torch.save({"model": model.state_dict(), "config": "universal: true\nuse_naive_taxonomy: false\n"}, path)
    return {"root": root, "shards": root / "shards", "model": path, "images": images, "labels": labels,
            "mseg_api": mseg_api, "names": [line.split()[0].split("/", 1)[1][:-4] for line in lines]}


def evaluate(camvid: dict, out: Path, *extra: str):
    return run_tool("evaluate.py", "--model", str(camvid["model"]), "--dataset", "camvid-11", "--shards",
                    str(camvid["shards"]), "--base-size", "40", "48", "--crop", "33", "--out", str(out),
                    "--device", "cpu", "--workers", "1", "--mseg-api", str(camvid["mseg_api"]), *extra)


def test_zero_shot_evaluation_writes_mseg_layout_and_agrees_with_mseg(camvid, mseg_api, tmp_path):
    result = evaluate(camvid, tmp_path / "results", "--save-predictions")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "universal model, 194 classes" in result.stdout and "camvid-11 (zero-shot)" in result.stdout
    text = (tmp_path / "results/camvid-11/48/ss/results.txt").read_text()
    assert text.startswith("Eval result: mIoU/mAcc/allAcc ") and len(text.splitlines()) == 12
    assert text.splitlines()[1].startswith("Class_00 result: iou/accuracy ") and text.splitlines()[1].endswith(
        "name: Building.")
    gray = sorted((tmp_path / "results/camvid-11/48/ss/gray").glob("*.png"))
    assert len(gray) == 6, "two images with one file name get a prediction each (named by shard key)"
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert "## Zero-shot" in summary and "| model | camvid-11 | h. mean |" in summary and "single scale" in summary
    # The same images through the MSeg-style evaluator (one image at a time, OpenCV on the host).
    from mseg_fast.evaluation.protocol import plan_evaluation
    from mseg_fast.models.load import load_model

    model = load_model(camvid["model"])
    plan = plan_evaluation("universal", 194, "camvid-11", mseg_api)
    matrix = torch.zeros(11, 11, dtype=torch.int64)
    for name, saved in zip(camvid["names"], gray):
        image = cv2.imread(str(camvid["images"] / f"{name}.png"))[:, :, ::-1].copy()
        label = cv2.imread(str(camvid["labels"] / f"{name}_L.png"), cv2.IMREAD_UNCHANGED)
        probs = mseg_style_probabilities(model, image, 48, (1.0,), 33, plan.projection, torch.device("cpu"))
        matrix += confusion(torch.from_numpy(probs.argmax(-1)), torch.from_numpy(label.astype(np.int64)), 11)
        assert (cv2.imread(str(saved), cv2.IMREAD_UNCHANGED) == probs.argmax(-1)).mean() > 0.99, saved
    assert miou_from_results_txt(text) == pytest.approx(100 * mseg_scores(matrix)["miou"], abs=0.05)
    again = evaluate(camvid, tmp_path / "results", "--save-predictions")
    assert again.returncode == 0 and again.stdout.count("reusing") == 2, "finished results are reused"
    # Another projection (a TSV whose camvid-11 column moves a class) is another evaluation: nothing is reused.
    tsv = tmp_path / "moved.tsv"
    rows = (mseg_api / "mseg/class_remapping_files/MSeg_master.tsv").read_text().splitlines()
    column = rows[0].split("\t").index("camvid-11")
    cells = [row.split("\t") for row in rows]
    first = next(k for k, row in enumerate(cells) if k and row[column])
    second = next(k for k, row in enumerate(cells) if k and row[column] not in ("", cells[first][column]))
    cells[first][column], cells[second][column] = cells[second][column], cells[first][column]
    tsv.write_text("\n".join("\t".join(row) for row in cells) + "\n")
    moved = evaluate(camvid, tmp_path / "results", "--save-predictions", "--base-size", "48", "--tsv", str(tsv))
    assert moved.returncode == 0 and "reusing" not in moved.stdout and "removing 6 predictions" in moved.stdout
    # An interrupted run (results not yet written, half the predictions saved, two of those damaged) continues
    # where it stopped, predicting the damaged ones again.
    import json

    evaluate(camvid, tmp_path / "results", "--save-predictions", "--base-size", "48")
    out = tmp_path / "results/camvid-11/48/ss"
    finished = json.loads((out / "results.json").read_text())
    saved = sorted((out / "gray").glob("*.png"))
    for path in [out / "results.json", *saved[3:]]:
        path.unlink()
    saved[0].write_bytes(saved[0].read_bytes()[:40])  # truncated
    cv2.imwrite(str(saved[1]), np.zeros((5, 5), np.uint8))  # another size
    resumed = evaluate(camvid, tmp_path / "results", "--save-predictions", "--base-size", "48")
    assert resumed.returncode == 0 and "1 saved predictions reused" in resumed.stdout, resumed.stdout + resumed.stderr
    assert "2 saved predictions were damaged" in resumed.stdout
    record = json.loads((out / "results.json").read_text())
    assert record["confusion"] == finished["confusion"] and len(list((out / "gray").glob("*.png"))) == 6


def test_evaluation_refusals_are_one_line(camvid, tmp_path):
    oracle = tmp_path / "oracle.pth"
    torch.save({"model": build_model("hrnet_w18", 19).state_dict(), "config": "universal: false\n"}, oracle)
    cases = [(["--model", str(oracle)], "oracle model is scored on its own dataset"),
             (["--dataset", "kitti-19"], "no shards at"),
             (["--base-size", "0"], "--base-size: 0 is too small"),
             (["--dataset", "no-such-set"], "no class names for dataset 'no-such-set'"),
             (["--protocol", "relabeled"], "camvid-11 has no relabeled labels"),
             (["--device", "tpu"], "'tpu' is not a device"),
             (["--crop", "1"], "--crop: 1 is too small")]
    for extra, needle in cases:
        result = evaluate(camvid, tmp_path / "results", *extra)
        assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr, result.stderr
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a model")
    result = evaluate(camvid, tmp_path / "results", "--model", str(junk))
    assert result.returncode == 2 and "not a readable weights file" in result.stderr
    assert not (tmp_path / "results").exists(), "a refused evaluation writes nothing"


def test_two_gloo_ranks_score_each_image_once_into_one_matrix(camvid, tmp_path):
    import json
    import subprocess
    import sys

    from helpers import REPO

    single = evaluate(camvid, tmp_path / "one", "--base-size", "48")
    assert single.returncode == 0, single.stderr
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29601",
               str(REPO / "tools" / "evaluate.py"), "--model", str(camvid["model"]), "--dataset", "camvid-11",
               "--shards", str(camvid["shards"]), "--base-size", "48", "--crop", "33", "--out", str(tmp_path / "two"),
               "--device", "cpu", "--workers", "1", "--mseg-api", str(camvid["mseg_api"])]
    double = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert double.returncode == 0, double.stdout + double.stderr
    assert "x 2 ranks" in double.stdout
    one, two = (json.loads((tmp_path / d / "camvid-11/48/ss/results.json").read_text()) for d in ("one", "two"))
    assert one["confusion"] == two["confusion"] and two["images"] == 6 and sum(map(sum, two["confusion"])) > 0


def test_bench_eval_reports_both_evaluators(tmp_path):
    import json

    report = tmp_path / "eval.json"
    result = run_tool("bench_eval.py", "--images", "1", "--base-size", "60", "--crop", "65", "--device", "cpu",
                      "--json", str(report))
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert set(data["runs"]) == {"mseg_style", "ours"} and data["pixel_agreement"] >= 0.999
    assert data["miou_difference"] <= 0.05 and data["runs"]["mseg_style"]["forward_calls"] > data["runs"]["ours"]["forward_calls"]
    assert "speed-up" in result.stdout


def test_predict_writes_ids_and_overlays(camvid, tmp_path):
    images = sorted(camvid["images"].glob("*.png"))[:2]
    common = ["--model", str(camvid["model"]), "--base-size", "48", "--crop", "33", "--device", "cpu",
              "--mseg-api", str(camvid["mseg_api"])]
    result = run_tool("predict.py", *map(str, images), "--out", str(tmp_path / "camvid"), "--taxonomy", "camvid-11",
                      *common)
    assert result.returncode == 0, result.stderr
    assert "camvid-11 (11 classes)" in result.stdout and "images/s" in result.stdout
    gray = cv2.imread(str(tmp_path / "camvid" / f"{images[0].stem}_gray.png"), cv2.IMREAD_UNCHANGED)
    assert gray.shape == SIZE and gray.max() < 11
    overlay = cv2.imread(str(tmp_path / "camvid" / f"{images[0].stem}_overlay.jpg"))
    assert overlay.shape[1] == SIZE[1] and overlay.shape[0] > SIZE[0], "the legend sits below the picture"
    universal = run_tool("predict.py", "--folder", str(camvid["images"]), "--out", str(tmp_path / "universal"),
                         *common)
    assert universal.returncode == 0 and "universal (194 classes)" in universal.stdout
    assert len(list((tmp_path / "universal").rglob("*_gray.png"))) == 6, "sub-folders are kept: no overwrite"
    assert (tmp_path / "universal/again/0016E5_00000_gray.png").is_file()
    if not torch.cuda.is_available():
        refused = run_tool("predict.py", str(images[0]), "--model", str(camvid["model"]), "--out", str(tmp_path / "x"),
                           "--device", "cuda")
        assert refused.returncode == 2 and "no CUDA device" in refused.stderr


def test_predict_refuses_inputs_it_would_miss_overwrite_or_misread(camvid, tmp_path, capsys):
    """Each refusal is one line before anything is written: no folder, a file as --folder, an empty folder, two
    inputs that would write the same files, --out inside --folder, a truncated JPEG, an unknown device."""
    from helpers import call_tool

    first = sorted(camvid["images"].glob("*.png"))[0]
    (tmp_path / "empty").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / first.name).write_bytes(first.read_bytes())
    truncated = tmp_path / "cut.jpg"
    data = cv2.imencode(".jpg", cv2.imread(str(first)))[1].tobytes()
    truncated.write_bytes(data[:len(data) // 2])
    out = tmp_path / "out"
    cases = [(["--folder", str(tmp_path / "nope")], "no such folder"),
             (["--folder", str(first)], "is a file; pass it without --folder"),
             (["--folder", str(tmp_path / "empty")], "no images"),
             ([str(tmp_path / "a" / first.name), str(tmp_path / "b" / first.name)], "would both be written"),
             (["--folder", str(tmp_path), "--out", str(tmp_path / "a" / "pred")], "is inside --folder"),
             ([str(truncated)], "cut.jpg: image cannot be decoded"),
             ([str(first), "--device", "foo"], "'foo' is not a device")]
    for extra, needle in cases:
        code, _, err = call_tool(capsys, "predict.py", "--model", str(camvid["model"]), "--out", str(out),
                                 "--base-size", "48", "--crop", "33", "--mseg-api", str(camvid["mseg_api"]), *extra)
        lines = err.strip().splitlines()
        assert code == 2 and needle in lines[-1] and "Traceback" not in err, err
        assert len(lines) == 1 or lines[0].startswith("usage:"), err  # argparse's usage, then its error line
    assert not out.exists(), "a refused prediction writes nothing"


def test_demo_test_set_is_scored_zero_shot_and_training_sets_in_universal_ids(demo_tree, demo_shards, tmp_path, capsys):
    """The demo's zero-shot table: a test set in a taxonomy of its own, through the demo TSV's column; the
    model's own training set in universal ids (its role read from the model file)."""
    from helpers import demo_args
    from mseg_fast.config import load_config, to_yaml
    from mseg_fast.demo_data import TEST_DATASET

    shards = tmp_path / "shards"
    import shutil

    shutil.copytree(demo_shards, shards)
    run_tool("shard.py", "--dataset", TEST_DATASET.name, "--split", "val", "--taxonomy", "self", "--workers", "1",
             *demo_args(demo_tree, shards), check=True)
    config = load_config(None, ["dataset=[demo-streets, demo-rooms, demo-fields]"])
    torch.manual_seed(0)
    model = tmp_path / "demo.pth"
    torch.save({"model": build_model("hrnet_w18", 16).state_dict(), "config": to_yaml(config)}, model)
    result = run_tool("evaluate.py", "--model", str(model), "--dataset", TEST_DATASET.name, "demo-streets", "--shards",
                      str(shards), "--mseg-api", str(demo_tree / "mseg-api"), "--base-size", "60", "--crop", "65",
                      "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "results"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo-outdoor (zero-shot), demo-streets (universal)" in result.stdout
    text = (tmp_path / "results/demo-outdoor/60/ss/results.txt").read_text()
    assert len(text.splitlines()) == 1 + len(TEST_DATASET.classes)
    assert (tmp_path / "results/demo-streets_universal/60/ss/results.txt").is_file()
    # MSeg's form: a table per regime, the test set's zero-shot figure never averaged with the training set's.
    summary = json.loads((tmp_path / "results/summary.json").read_text())["models"][0]
    assert summary["model"] == "demo" and summary["scales"] == "ss" and summary["base_sizes"] == [60]
    assert summary["regimes"]["zero-shot"]["datasets"] == ["demo-outdoor"]
    assert summary["regimes"]["universal"]["datasets"] == ["demo-streets"]
    zero_shot = summary["regimes"]["zero-shot"]
    if zero_shot["max_miou"]["demo-outdoor"]:  # a harmonic mean over 0 is undefined (None)
        assert zero_shot["harmonic_mean"] == pytest.approx(zero_shot["max_miou"]["demo-outdoor"])
    text = (tmp_path / "results/summary.md").read_text()
    assert text.index("## Zero-shot") < text.index("| demo | ") < text.index("## Training datasets")
    # Several models in one table (tools/summarize.py): a row each, per regime.
    summarize([{"dataset": "demo-outdoor", "combination": "zero-shot", "base_size": 120, "miou": 0.5}], "other", "ms",
              tmp_path / "other")
    code, out, _ = call_tool(capsys, "summarize.py", str(tmp_path / "results"), str(tmp_path / "other"),
                             "--out", str(tmp_path / "table"))
    assert code == 0 and "| demo (ss, base 60) | " in out and "| other (ms, base 120) | 50.0 | 50.0 |" in out
    zero_shot = out[out.index("## Zero-shot"):out.index("## Training datasets")]
    assert zero_shot.count("| demo (ss") == zero_shot.count("| other (ms") == 1
    code, _, err = call_tool(capsys, "summarize.py", str(tmp_path / "results"), str(tmp_path / "results"),
                             "--out", str(tmp_path / "twice"))
    assert code == 2 and "both hold demo" in err and not (tmp_path / "twice").exists()


@pytest.fixture(scope="module")
def coco(mseg_api, tmp_path_factory) -> dict:
    """A coco-panoptic-133 val split of 3 generated images with unrelabeled and relabeled labels (person
    relabeled as motorcyclist on some pixels, some pixels relabeled to unlabeled), in mseg-api's layout."""
    root = tmp_path_factory.mktemp("coco")
    data = root / "data/COCOPanoptic"
    folders = {name: data / name / "val2017" for name in ("images", "semantic_annotations133", "semantic_relabeled133")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    plain, relabeled = [], []
    for k in range(3):
        unrelabeled = np.full(SIZE, 20, np.uint8)  # road
        unrelabeled[10:30, 10:40] = 53  # person
        again = np.full(SIZE, 99, np.uint8)  # road, in the relabeled names
        again[10:30, 10:40] = 86  # person
        again[10:30, 10:25] = 76  # ... partly a motorcyclist
        again[40:, :8] = 255  # relabeled to unlabeled
        cv2.imwrite(str(folders["images"] / f"{k:012d}.jpg"), (rng.random((*SIZE, 3)) * 255).astype(np.uint8))
        cv2.imwrite(str(folders["semantic_annotations133"] / f"{k:012d}.png"), unrelabeled)
        cv2.imwrite(str(folders["semantic_relabeled133"] / f"{k:012d}.png"), again)
        plain.append(f"images/val2017/{k:012d}.jpg semantic_annotations133/val2017/{k:012d}.png")
        relabeled.append(f"images/val2017/{k:012d}.jpg semantic_relabeled133/val2017/{k:012d}.png")
    (root / "val.txt").write_text("\n".join(plain) + "\n")
    (root / "val-relabeled.txt").write_text("\n".join(relabeled) + "\n")
    (root / "misaligned.txt").write_text("\n".join(relabeled[::-1]) + "\n")
    torch.manual_seed(0)
    model = root / "mseg-tiny.pth"  # MSeg's rule for release files: 'mseg' in the name, not 'unrelabeled'
    torch.save({"state_dict": build_model("hrnet_w18", 194).state_dict()}, model)
    return {"root": root, "data": root / "data", "model": model, "mseg_api": mseg_api}


def shard_coco(coco: dict, out: Path, *extra: str):
    return run_tool("shard.py", "--dataset", "coco-panoptic-133", "--split", "val", "--list", str(coco["root"] / "val.txt"),
                    "--data-root", str(coco["data"]), "--mseg-api", str(coco["mseg_api"]), "--out", str(out),
                    "--workers", "1", "--no-progress", *extra)


def test_relabeled_protocol_from_shards_to_results(coco, tmp_path):
    import json

    from mseg_fast.eval.mseg_metrics import mseg_counts, relabeled_rewrite
    from mseg_fast.evaluation.protocol import plan_evaluation

    common = ["--model", str(coco["model"]), "--dataset", "coco-panoptic-133", "--shards", str(tmp_path / "shards"),
              "--base-size", "48", "--crop", "33", "--device", "cpu", "--workers", "1", "--mseg-api",
              str(coco["mseg_api"]), "--save-predictions"]
    # Misaligned lists and relabeled labels outside universal evaluation are refused, writing nothing.
    for extra, needle in ((["--relabeled-list", str(coco["root"] / "misaligned.txt")], "same images in the same order"),
                          (["--taxonomy", "self"], "use --taxonomy universal")):
        refused = shard_coco(coco, tmp_path / "shards", "--with-relabeled", *extra)
        assert refused.returncode == 2 and needle in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "shards").exists()
    assert shard_coco(coco, tmp_path / "shards").returncode == 0
    missing = run_tool("evaluate.py", *common, "--out", str(tmp_path / "results"))
    assert missing.returncode == 2 and "--with-relabeled" in missing.stderr, missing.stderr
    sharded = shard_coco(coco, tmp_path / "shards", "--with-relabeled", "--relabeled-list",
                         str(coco["root"] / "val-relabeled.txt"))
    assert sharded.returncode == 0, sharded.stderr
    result = run_tool("evaluate.py", *common, "--out", str(tmp_path / "results"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "coco-panoptic-133 (universal, relabeled protocol)" in result.stdout
    out = tmp_path / "results/coco-panoptic-133_universal_relabeled/48/ss"
    record = json.loads((out / "results.json").read_text())
    # The same scores recomputed here from the saved predictions and the source labels.
    plan = plan_evaluation("universal", 194, "coco-panoptic-133", coco["mseg_api"], relabeled=True)
    u_table = {20: plan.class_names.index("road"), 53: plan.class_names.index("person"), 255: 255}
    r_table = {99: u_table[20], 86: u_table[53], 76: plan.class_names.index("motorcyclist"), 255: 255}
    matrix, voided = torch.zeros(194, 194, dtype=torch.int64), torch.zeros(194, dtype=torch.int64)
    for k in range(3):
        read = lambda folder: cv2.imread(str(coco["data"] / f"COCOPanoptic/{folder}/val2017/{k:012d}.png"), 0)
        unrelabeled = torch.from_numpy(np.vectorize(u_table.get)(read("semantic_annotations133")))
        relabeled = torch.from_numpy(np.vectorize(r_table.get)(read("semantic_relabeled133")))
        saved = sorted((out / "gray").glob("*.png"))[k]  # named by shard key: list position, then the stem
        assert saved.name.endswith(f"_{k:012d}.png")
        prediction = torch.from_numpy(cv2.imread(str(saved), 0).astype(np.int64))
        counts = mseg_counts(*relabeled_rewrite(prediction, unrelabeled, relabeled), 194)
        matrix, voided = matrix + counts[0], voided + counts[1]
    assert record["confusion"] == matrix.tolist() and record["voided"] == voided.tolist()
    assert sum(record["voided"]) > 0 and record["protocol"] == "relabeled"
    plain = run_tool("evaluate.py", *common, "--out", str(tmp_path / "results"), "--protocol", "unrelabeled")
    assert plain.returncode == 0 and (tmp_path / "results/coco-panoptic-133_universal/48/ss/results.txt").is_file()
    # A changed model file: its predictions are made anew, never the old file's reused.
    os.utime(coco["model"], ns=(time.time_ns(), time.time_ns()))
    again = run_tool("evaluate.py", *common, "--out", str(tmp_path / "results"))
    assert again.returncode == 0 and "removing 3 predictions made by another model file" in again.stdout
    assert "reusing" not in again.stdout
