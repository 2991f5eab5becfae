"""Nothing outlives a killed run: after `kill -9` of the trainer's process alone (as the OOM killer or a
pre-emption does it, not its process group), no process of the run is alive within 10 s, and /dev/shm
and the run's temporary folder hold nothing new. The same for a torchrun rank killed under
--max-restarts, and for the loader's own processes in tools."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from helpers import REPO
from leftovers import MarkedRun, marked, read_until

CONFIG = str(REPO / "config" / "demo" / "train-tiny.yaml")


@pytest.mark.parametrize("loader", ["torch", "dali"])
def test_kill_9_of_the_trainer_leaves_nothing(demo_shards, tmp_path, loader):
    run = MarkedRun(tmp_path)
    process = run.start([sys.executable, str(REPO / "train.py"), CONFIG, f"shards={demo_shards}",
                         f"save_path={tmp_path / 'run'}", "max_iters=500", "print_freq=1", "val_every=0",
                         f"loader={loader}", "workers=2"])
    read_until(process, "iter 2/")
    helpers = [pid for pid, _ in marked(run.mark) if pid != process.pid]
    if loader == "torch":  # the forkserver, its two workers and the resource tracker
        assert len(helpers) >= 3, f"expected loader processes, found {helpers}"
    os.kill(process.pid, signal.SIGKILL)  # the process alone
    process.wait()
    run.assert_nothing_left()


# A torchrun rank killed with -9, restarted by --max-restarts, leaving nothing: test_ranks.py's CCSA kill-9 test
# (c10d rendezvous, exact weights after the restart, MarkedRun's check).


@pytest.mark.parametrize("backend", ["torch", "mseg"])
def test_kill_9_of_bench_loader_leaves_nothing(demo_shards, tmp_path, backend):
    """The loader's workers serve tools too: bench_loader's fallback and its MSeg-style baseline."""
    run = MarkedRun(tmp_path)
    process = run.start([sys.executable, str(REPO / "tools" / "bench_loader.py"), str(REPO / "config" / "demo" / "tiny.yaml"),
                         "--shards", str(demo_shards), "--backend", backend, "--iters", "100000", "workers=2"])
    deadline = time.monotonic() + 60
    while len(marked(run.mark)) < 4 and time.monotonic() < deadline:  # the tool, tracker, forkserver, workers
        time.sleep(0.1)
    assert len(marked(run.mark)) >= 4, marked(run.mark)
    time.sleep(1)  # batches in flight
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    run.assert_nothing_left()


def test_kill_9_of_evaluate_leaves_nothing(demo_tree, demo_shards, tmp_path):
    """tools/evaluate.py decodes in loader processes too."""
    import torch

    from mseg_fast.config import load_config, to_yaml
    from mseg_fast.models.factory import build_model

    model = tmp_path / "model.pth"
    config = load_config(None, ["dataset=[demo-streets, demo-rooms, demo-fields]"])
    torch.save({"model": build_model("hrnet_w18", 16).state_dict(), "config": to_yaml(config)}, model)
    run = MarkedRun(tmp_path)
    process = run.start([sys.executable, str(REPO / "tools" / "evaluate.py"), "--model", str(model), "--dataset",
                         "demo-streets", "--shards", str(demo_shards), "--mseg-api", str(demo_tree / "mseg-api"),
                         "--base-size", *[str(60 + k) for k in range(40)], "--crop", "65", "--device", "cpu",
                         "--workers", "2", "--images-per-batch", "1", "--out", str(tmp_path / "results")])
    deadline = time.monotonic() + 60
    while len(marked(run.mark)) < 4 and time.monotonic() < deadline:  # the tool, tracker, forkserver, workers
        time.sleep(0.1)
    assert len(marked(run.mark)) >= 4, marked(run.mark)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    run.assert_nothing_left()
