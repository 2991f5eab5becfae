"""tools/gpu_check.py: its --dry-cpu mode runs every check (the CPU standing in for the GPU), a crash or a
hang is one check's result, and a machine without CUDA is told so."""

from __future__ import annotations

import json
import sys

import torch

from helpers import run_tool
from mseg_fast.bench.gpu_checks import checks
from mseg_fast.bench.isolated import run_isolated


def test_dry_cpu_runs_every_check(tmp_path):
    out = tmp_path / "report.json"
    result = run_tool("gpu_check.py", "--dry-cpu", "--out", str(out), "--work", str(tmp_path / "work"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert list(report["checks"]) == list(checks()) and report["dry_cpu"] is True
    for name, check in report["checks"].items():
        assert check["status"] == "ok", (name, check)
    graph = report["checks"]["train_graph"]["result"]
    assert {"8bit/pinned-0/window", "16bit/random/whole"} <= set(graph["cases"])
    assert report["checks"]["resume"]["result"]["same_batches_after_resume"] is True
    assert {"dali", "torch", "mseg", "decode"} <= set(report["checks"]["throughput"]["result"])
    assert report["checks"]["train"]["result"]["loader_line"].startswith("loader: dali on cpu")
    assert report["checks"]["eval"]["result"]["pixel_agreement"] >= 0.999 and "images/s" in result.stdout
    assert "every check ok" in result.stdout and "step/bf16-channels_last" in result.stdout


def test_a_crash_or_a_hang_is_that_checks_result(tmp_path):
    crash = run_isolated([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
                         tmp_path / "r.json", timeout=60)
    assert crash["status"] == "crash" and "SIGSEGV" in crash["error"]
    hang = run_isolated([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "r.json", timeout=1)
    assert hang["status"] == "timeout"
    fine = run_isolated([sys.executable, "-c", f"open({str(tmp_path / 'r.json')!r}, 'w').write('{{\"ok\": false}}')"],
                        tmp_path / "r.json", timeout=60)
    assert fine["status"] == "fail" and fine["result"] == {"ok": False}


def test_without_cuda_it_says_so(tmp_path):
    if torch.cuda.is_available():
        return
    result = run_tool("gpu_check.py", "--out", str(tmp_path / "r.json"))
    assert result.returncode == 2 and result.stderr.startswith("error: no CUDA device") and "--dry-cpu" in result.stderr
