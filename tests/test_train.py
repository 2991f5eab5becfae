"""The trainer: MSeg's objective and schedule, a falling loss, exact resume after kill -9, SIGTERM,
torchrun with gloo against one process, and refusals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO, pinned_args
from leftovers import MarkedRun
from mseg_fast.clock import clock
from mseg_fast.models.factory import build_model
from mseg_fast.train.objective import build_optimizer, derive_max_iters, per_dataset_loss, poly_lr

CONFIG = str(REPO / "config" / "demo" / "train-tiny.yaml")


def train(shards: Path, run: Path, *extra: str, wait: bool = True):
    command = [sys.executable, str(REPO / "train.py"), CONFIG, f"shards={shards}", f"save_path={run}", *extra]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, capture_output=True, text=True)


def final_weights(run: Path) -> dict:
    pointer = json.loads((run / "checkpoints" / "latest.json").read_text())
    return torch.load(run / "checkpoints" / pointer["file"], weights_only=True)


def test_per_dataset_loss_weights_datasets_not_pixels():
    logits = torch.randn(4, 3, 5, 5)
    labels = torch.randint(0, 3, (4, 5, 5))
    labels[2:, :, 1:] = 255  # dataset 1 has few labelled pixels
    ids = torch.tensor([0, 0, 1, 1])
    loss, parts = per_dataset_loss(logits, labels, ids, torch.ones(2))
    means = [torch.nn.functional.cross_entropy(logits[ids == d], labels[ids == d], ignore_index=255) for d in (0, 1)]
    assert torch.allclose(loss, (means[0] + means[1]) / 2) and torch.allclose(parts, torch.stack(means))
    labels[2:] = 255  # a dataset with no labelled pixel contributes nothing (MSeg: NaN)
    loss, parts = per_dataset_loss(logits, labels, ids, torch.ones(2))
    assert torch.allclose(loss, means[0]) and torch.allclose(parts[0], means[0]) and parts[1].isnan()
    labels[:] = 255  # nothing labelled: a loss of 0 that still has a (zero) gradient
    logits.requires_grad_(True)
    loss, parts = per_dataset_loss(logits, labels, ids, torch.ones(2))
    loss.backward()
    assert loss == 0 and parts.isnan().all() and logits.grad.abs().sum() == 0


def test_short_run_options_draw_he_weights_and_use_adamw():
    """MSeg's init (N(0, 0.001)) and SGD stay the default; `init=kaiming` draws He-normal (fan-out) weights and
    `optimizer=adamw` builds AdamW over the same groups (the demo's short run from scratch)."""
    mseg, he = build_model("hrnet_w18", 5), build_model("hrnet_w18", 5, init="kaiming")
    assert float(mseg.conv2.weight.detach().std()) < 0.0011
    expected = (2 / (64 * 3 * 3)) ** 0.5  # conv2: 64 output channels, 3x3
    assert abs(float(he.conv2.weight.detach().std()) / expected - 1) < 0.05
    assert isinstance(build_optimizer(mseg.param_groups(), 0.01, 0.9, 1e-4), torch.optim.SGD)
    adamw = build_optimizer(he.param_groups(), 0.002, 0.9, 1e-4, "adamw")
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 0.002
    assert adamw.param_groups[0]["weight_decay"] == 1e-4


def test_durations_are_written_as_hours_minutes_seconds():
    assert [clock(s) for s in (0, 59.6, 247, 3600, 111600, float("nan"))] == [
        "0:00:00", "0:01:00", "0:04:07", "1:00:00", "31:00:00", "?:??:??"]


def test_poly_schedule_and_length():
    assert poly_lr(0.01, 0, 100, 0.9) == 0.01 and poly_lr(0.01, 100, 100, 0.9) == 0.0
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    # Reference §3.6: MSeg 3M 1080p, 1M, 720p, 480p, single-dataset.
    assert [derive_max_iters(n, b, d) for n, b, d in [(3_000_000, 35, 7), (1_000_000, 14, 7), (3_000_000, 49, 7),
                                                     (3_000_000, 84, 7), (1_000_000, 32, 1)]] == \
        [600_000, 500_000, 428_571, 250_000, 31_250]


def test_loss_falls_and_logs(demo_shards, tmp_path):
    result = train(demo_shards, tmp_path / "run", "max_iters=30", "save_every=30", "val_every=30", "bn_recalibrate=3")
    assert result.returncode == 0, result.stdout + result.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    assert "BatchNorm statistics recomputed over 3 training batches (bn_recalibrate)" in log
    losses = [float(v) for v in re.findall(r"loss ([0-9.]+) \[", log)]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0]
    # Validation at the end: a line per dataset, a JSON record, a confusion picture per dataset.
    assert len(re.findall(r"val demo-\w+: mIoU [0-9.]+ mAcc", log)) == 3
    record = json.loads((tmp_path / "run" / "val" / "val_00000030.json").read_text())
    assert set(record["datasets"]) == {"demo-streets", "demo-rooms", "demo-fields"}
    assert "wall" in record["datasets"]["demo-rooms"]["iou"]
    assert len(list((tmp_path / "run" / "val").glob("confusion_00000030_*.png"))) == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/data_wait", "train/loss/demo-rooms", "val/mIoU/demo-fields"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [10, 20, 30]
    assert "crops per step {'demo-streets': 2, 'demo-rooms': 2, 'demo-fields': 2}, 30 iterations" in log
    assert re.search(r"samples/s data-wait \d+% eta \d+:\d\d:\d\d", log), "ETA as h:mm:ss"
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in log.splitlines()), "every line timed"
    assert (tmp_path / "run" / "config.yaml").exists()
    assert "numerics: fp32 math IEEE fp32 (no TF32, as MSeg)" in log


def test_kill_9_then_resume_auto_reaches_the_same_weights(demo_shards, tmp_path):
    args = ["max_iters=12", "save_every=4", "print_freq=4", "val_every=0"]
    assert train(demo_shards, tmp_path / "straight", *args).returncode == 0
    run = tmp_path / "killed"
    marked = MarkedRun(tmp_path)
    process = marked.start([sys.executable, str(REPO / "train.py"), CONFIG, f"shards={demo_shards}", f"save_path={run}",
                            *args])
    pointer = run / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (pointer.exists() and json.loads(pointer.read_text())["iteration"] >= 4):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # the process alone, as the OOM killer does
    process.wait()
    marked.assert_nothing_left()
    killed_at = json.loads(pointer.read_text())["iteration"]
    assert 4 <= killed_at < 12
    resumed = train(demo_shards, run, *args, "--resume", "auto")
    assert resumed.returncode == 0 and f"resuming at iteration {killed_at}" in resumed.stdout
    a, b = final_weights(tmp_path / "straight"), final_weights(run)
    assert a["iteration"] == b["iteration"] == 12
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "resume continues exactly"


def test_sigterm_saves_and_exits_cleanly(demo_shards, tmp_path):
    run = tmp_path / "run"
    process = train(demo_shards, run, "max_iters=200", "save_every=1000", "print_freq=1", "val_every=0", wait=False)
    while "iter 2/" not in (line := process.stdout.readline()):
        assert line, "training ended early"
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0 and "SIGTERM: checkpoint written" in output
    assert 2 <= final_weights(run)["iteration"] < 200


def test_torchrun_two_ranks_agree_with_one_process(demo_shards, pinned_two_ranks, tmp_path):
    single = train(demo_shards, tmp_path / "one", *pinned_args())
    assert single.returncode == 0, single.stdout + single.stderr
    a, b = final_weights(tmp_path / "one")["model"], final_weights(pinned_two_ranks)["model"]
    torch.manual_seed(0)  # train.py's initialisation (manual_seed 0)
    init = build_model("hrnet_w18", 16).state_dict()
    params = [k for k in a if a[k].is_floating_point() and "running" not in k]
    update_a = torch.cat([(a[k] - init[k]).flatten() for k in params])
    update_b = torch.cat([(b[k] - init[k]).flatten() for k in params])
    # Same samples and synchronised BatchNorm (its statistics agree to float rounding); the updates
    # differ by a few percent because each rank averages its own pixels of a dataset, then DDP averages
    # the ranks, where one process averages all pixels of the dataset at once.
    assert float((update_a - update_b).norm() / update_a.norm()) < 0.1
    stats = [k for k in a if "running" in k]
    running_a, running_b = torch.cat([a[k].flatten() for k in stats]), torch.cat([b[k].flatten() for k in stats])
    assert float((running_a - running_b).norm() / running_a.norm()) < 1e-3


def test_bad_config_and_foreign_checkpoint_are_refused(demo_shards, short_run, tmp_path):
    bad = train(demo_shards, tmp_path / "run", "base_lrr=0.1")
    assert bad.returncode == 2 and "unknown config key 'base_lrr'. Did you mean base_lr" in bad.stderr
    # The validation split is checked before training, not found missing at the first validation.
    no_val = train(demo_shards, tmp_path / "no-val", "val_every=50", "val_split=test")
    assert no_val.returncode == 2 and "has no split 'test' (it has train, val)" in no_val.stderr, no_val.stderr
    assert not (tmp_path / "no-val").exists()
    shutil.copytree(short_run, tmp_path / "run")  # 2 iterations, a checkpoint at each
    foreign = train(demo_shards, tmp_path / "run", "max_iters=4", "universal=False", "dataset=[demo-fields]",
                    "--resume", "auto")
    assert foreign.returncode == 2
    switched = train(demo_shards, tmp_path / "run", "max_iters=4", "optimizer=adamw", "--resume", "auto")
    assert switched.returncode == 2
    assert "trained with optimizer=sgd and this run asks for optimizer=adamw" in switched.stderr
    assert switched.stderr.count("\n") == 1 and switched.stderr.startswith("error: ")
    assert final_weights(tmp_path / "run")["iteration"] == 2  # nothing trained on, nothing written


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs(demo_shards, tmp_path, precision):
    result = train(demo_shards, tmp_path / "run", "max_iters=3", "save_every=3", "print_freq=1", "val_every=0",
                   f"precision={precision}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f", {precision}" in result.stdout and final_weights(tmp_path / "run")["iteration"] == 3
    assert "scale" in final_weights(tmp_path / "run")["scaler"] or precision == "bf16"


def test_non_finite_loss_stops_naming_the_iteration(demo_shards, tmp_path):
    result = train(demo_shards, tmp_path / "run", "max_iters=20", "val_every=0", "base_lr=1e12")
    assert result.returncode == 3 and re.search(r"non-finite loss \(\w+\) at iteration \d+", result.stderr)


# The weights-only export (size, strict load, equal weights): test_reliability's
# test_damaged_and_release_files_are_one_line, on the shared short run.


def test_mgda_training_runs_and_logs_scales(demo_shards, tmp_path):
    result = train(demo_shards, tmp_path / "run", "max_iters=2", "save_every=2", "print_freq=1", "val_every=0",
                   "use_mgda=True")
    assert result.returncode == 0, result.stdout + result.stderr
    scales = re.findall(r"scales demo-streets=([0-9.]+) demo-rooms=([0-9.]+) demo-fields=([0-9.]+)", result.stdout)
    assert len(scales) == 2 and all(abs(sum(map(float, s)) - 1) < 0.01 for s in scales)


def test_naive_recipe_trains_through_the_dali_graph(real_tree, mseg_api, tmp_path):
    """The naive taxonomy's 16-bit labels (ids up to 315) through the DALI CPU graph, every sample rotated
    (DALI's warp has no uint16 kernel: labels travel as int16)."""
    from helpers import run_tool

    listing = tmp_path / "train.txt"
    listing.write_text("image/train/img-000001.jpg semseg-label37/train/00000001.png\n"
                       "image/test/img-000001.jpg semseg-label37/test/00000001.png\n")
    run_tool("shard.py", "--dataset", "sunrgbd-37", "--taxonomy", "naive", "--data-root", str(real_tree), "--mseg-api",
             str(mseg_api), "--out", str(tmp_path / "shards"), "--list", str(listing), "--workers", "1", "--no-progress",
             check=True)
    command = [sys.executable, str(REPO / "train.py"), str(REPO / "config" / "1080" / "mseg-naive.yaml"),
               f"shards={tmp_path / 'shards'}", f"save_path={tmp_path / 'run'}", "dataset=[sunrgbd-37]", "loader=dali",
               "arch=hrnet_w18", "short_size=120", "train_h=89", "train_w=89", "batch_size=2", "max_iters=3",
               "save_every=3", "print_freq=1", "val_every=0", "rotate_prob=1", "workers=1"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "316 classes" in result.stdout and final_weights(tmp_path / "run")["iteration"] == 3


def test_batchnorm_recalibration_averages_the_batch_statistics():
    """bn_recalibrate: the running statistics become the average of N batches' statistics under the current
    weights (a cumulative average), whatever they were; momentum and mode are restored."""
    from mseg_fast.data.batch import Batch
    from mseg_fast.train.recalibrate import recalibrate_batchnorm

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=0.01)).eval()
    model[1].running_mean.fill_(100.0)  # stale
    batches = [Batch(torch.randn(2, 3, 5, 5) + k, torch.zeros(2, 5, 5, dtype=torch.long), torch.zeros(2)) for k in range(4)]
    assert recalibrate_batchnorm(model, batches, 3, torch.device("cpu")) == 3
    with torch.no_grad():
        means = [model[0](b.images).mean(dim=(0, 2, 3)) for b in batches[:3]]
    assert torch.allclose(model[1].running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert model[1].momentum == 0.01 and not model.training


def test_float16_batches_meet_fp32_weights_in_every_forward():
    """output_dtype=float16 halves the hand-over; the fp32 training forward, validation and BatchNorm
    recalibration (none under autocast) take such batches (they raised a dtype error)."""
    from mseg_fast.data.batch import Batch
    from mseg_fast.eval.validate import validate
    from mseg_fast.train.loop import forward
    from mseg_fast.train.recalibrate import recalibrate_batchnorm

    torch.manual_seed(0)
    model = build_model("hrnet_w18", 4)
    batch = Batch(torch.randn(2, 3, 64, 64).half(), torch.zeros(2, 64, 64, dtype=torch.uint8), torch.tensor([0, 1]))
    assert forward(model.train(), batch.images, "fp32", extras=False).dtype == torch.float32
    matrices = validate(model, [batch], 4, 2, torch.device("cpu"))
    assert sum(int(m.sum()) for m in matrices) == 2 * 64 * 64
    assert recalibrate_batchnorm(model, [batch], 1, torch.device("cpu")) == 1


def test_numerics_are_mseg_fp32_unless_asked():
    """fp32 means IEEE fp32 (PyTorch lets cuDNN use TF32 by default); tf32 and deterministic are keys."""
    from mseg_fast.train.numerics import set_numerics

    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        line = set_numerics(tf32=False, deterministic=False)
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ("ieee", "ieee")
        assert torch.backends.cudnn.benchmark and "no TF32" in line
        line = set_numerics(tf32=True, deterministic=True)
        assert torch.backends.cudnn.conv.fp32_precision == "tf32" and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()
        assert "bilinear" in line and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
         torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved
