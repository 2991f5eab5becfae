"""tools/gpu_check.py: its --dry-cpu mode runs every check (the CPU standing in for the GPU), a crash or a
hang is one check's result (a hang's whole process group is killed), checks are chosen by name, first part
or half and those needing DALI are skipped without it, a deadline stops the run, and a machine without CUDA
is told so."""

from __future__ import annotations

import json
import os
import sys
import time

import torch

import pytest

from helpers import call_tool, run_tool
from mseg_fast.bench.gpu_checks import checks, select
from mseg_fast.bench.isolated import run_isolated


def test_dry_cpu_runs_every_check(tmp_path):
    out = tmp_path / "report.json"
    result = run_tool("gpu_check.py", "--dry-cpu", "--out", str(out), "--work", str(tmp_path / "work"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert list(report["checks"]) == list(checks()) and report["dry_cpu"] is True
    for name, check in report["checks"].items():
        assert check["status"] == "ok", (name, check)
    assert {"8bit/pinned-0/whole", "16bit/random/whole"} <= set(report["checks"]["train_graph/whole"]["result"]["cases"])
    assert "8bit/pinned-0/window" in report["checks"]["train_graph/window"]["result"]["cases"]
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


def test_a_hang_loses_its_whole_process_group(tmp_path):
    """A timed-out check that started a process of its own (train.py, loader workers) leaves nothing behind."""
    pid_file = tmp_path / "grandchild"
    script = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    hang = run_isolated([sys.executable, "-c", script], tmp_path / "r.json", timeout=2)
    assert hang["status"] == "timeout" and "process group was killed" in hang["error"]
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # killed: gone, or a zombie until its new parent reaps it
        try:
            if open(f"/proc/{grandchild}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        os.kill(grandchild, 9)
        pytest.fail("the timed-out check's child process was left running")


def test_checks_are_chosen_by_name_part_or_half_and_dali_ones_skipped_without_it():
    everything, none_skipped = select(None, dali=True)
    assert everything == list(checks()) and none_skipped == {}
    assert everything.index("train_graph/whole") < everything.index("train_graph/window"), "whole-image decode first"
    data, _ = select(["data"], dali=True)
    model, _ = select(["model"], dali=True)
    assert data + model == everything and "throughput" in data and "eval" in model
    assert select(["step"], dali=True)[0] == [n for n in everything if n.startswith("step/")]
    assert select(["step/bf16", "eval"], dali=True)[0] == ["step/bf16", "eval"]
    ran, skipped = select(None, dali=False)
    assert set(skipped) == {"train_graph/whole", "train_graph/window", "val_graph", "resume"}
    assert {"versions", "throughput", "train", "eval"} <= set(ran) and "step/fp32" in ran
    with pytest.raises(ValueError, match="no such check or half.*data and model"):
        select(["steps"], dali=True)


def test_a_deadline_stops_the_run_and_says_what_did_not_run(tmp_path, capsys):
    out = tmp_path / "r.json"
    code, printed, _ = call_tool(capsys, "gpu_check.py", "--dry-cpu", "--only", "versions", "eval", "--deadline", "1",
                                 "--samples", "2", "--out", str(out), "--work", str(tmp_path / "work"))
    report = json.loads(out.read_text())
    assert code == 1 and report["finished"] is True
    assert {name: check["status"] for name, check in report["checks"].items()} == {"versions": "not run",
                                                                                   "eval": "not run"}
    assert "--deadline of 1 s" in report["checks"]["eval"]["error"] and "not ok: versions, eval" in printed
