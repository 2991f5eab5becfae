"""The GPU branch's set-up, checked where the CPU can check it: the rank's GPU for every pipeline, loader
threads from the cores a rank has, the default loader by training device, tools that run the graph on the
device they report, the CUDA 13 install extra. GPU-marked twins run where CUDA and DALI are."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO, run_tool
from mseg_fast.config import load_config
from mseg_fast.errors import UserError
from mseg_fast.loader import (build_spec, choose_backend, cores_per_rank, dali_available, dali_target, loader_summary,
                              resolve_workers, window_decode)

CONFIG = str(REPO / "config" / "demo" / "tiny.yaml")
needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and dali_available()), reason="needs CUDA and DALI")


def test_pipelines_take_the_rank_device_from_the_caller():
    """No pipeline is built on a hard-coded GPU: every builder takes `device_id`, and 'cuda:N' maps to N."""
    for path in (REPO / "mseg_fast" / "dali").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "device_id":
                assert not isinstance(node.value, ast.Constant) or node.value.value is None, \
                    f"{path.name}:{node.lineno} builds a pipeline on a fixed GPU"
            if isinstance(node, ast.IfExp) and isinstance(node.body, ast.Constant) and node.body.value == 0:
                pytest.fail(f"{path.name}:{node.lineno}: a literal device 0")
    assert dali_target("cpu") == ("cpu", None)
    if torch.cuda.is_available():
        assert dali_target(f"cuda:{torch.cuda.device_count() - 1}") == ("gpu", torch.cuda.device_count() - 1)
    else:
        with pytest.raises(UserError, match="no CUDA device"):
            dali_target("cuda:1")


def test_loader_threads_come_from_the_cores_a_rank_has(demo_shards):
    cores = len(os.sched_getaffinity(0))
    assert cores_per_rank(1) == cores and cores_per_rank(cores * 2) == 1
    auto = load_config(REPO / "config" / "demo" / "tiny.yaml", [f"shards={demo_shards}", "loader=dali", "workers=null"])
    assert auto.workers is None and resolve_workers(auto, 1) == cores
    spec = build_spec(auto, 0, 1)
    assert spec.workers == cores
    line = loader_summary(auto, spec, "dali", "cpu")
    assert line.startswith("loader: dali on cpu, 3 pipelines x ") and f"{cores} cores for this rank" in line
    fixed = load_config(REPO / "config" / "demo" / "tiny.yaml", [f"shards={demo_shards}", "workers=6"])
    assert resolve_workers(fixed, 4) == 6 and "workers from the config" in loader_summary(
        fixed, build_spec(fixed, 0, 1), "torch", "cpu")
    with pytest.raises(UserError, match="workers"):
        resolve_workers(load_config(None, ["workers=-1"]))


def test_default_loader_follows_the_training_device():
    """DALI only where its GPU graph runs; on a CPU the fallback is the faster one. An explicit choice wins."""
    config = load_config(None, [])
    assert config.loader is None
    assert choose_backend(config, "cpu") == "torch"
    assert choose_backend(load_config(None, ["loader=dali"]), "cpu") == "dali"
    if torch.cuda.is_available() and dali_available():
        assert choose_backend(config, "cuda") == "dali"


def test_jpeg_decode_default_and_choice():
    assert window_decode(load_config(None, []), "cpu") is True
    assert window_decode(load_config(None, ["jpeg_decode=whole"]), "cpu") is False
    if torch.cuda.is_available():
        assert window_decode(load_config(None, []), "cuda") is False
        assert window_decode(load_config(None, ["jpeg_decode=window"]), "cuda") is True


def test_tools_refuse_cuda_without_a_gpu(demo_shards, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for tool, extra in (("show_batch.py", ["--out", str(tmp_path / "show")]), ("bench_loader.py", ["--iters", "1"])):
        result = run_tool(tool, CONFIG, "--shards", str(demo_shards), "--device", "cuda", "loader=dali", *extra)
        assert result.returncode == 2 and "'cuda': no CUDA device is available" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


@needs_gpu
def test_tools_run_the_gpu_graph(demo_shards, tmp_path):
    """The GPU twin of the tests above: show_batch and bench_loader build their DALI pipelines on the GPU."""
    out = tmp_path / "show"
    run_tool("show_batch.py", CONFIG, "--shards", str(demo_shards), "--out", str(out), "--n", "4", "--device", "cuda",
             check=True)
    assert json.loads((out / "samples.json").read_text())["backend"] == "dali"
    report = tmp_path / "bench.json"
    run_tool("bench_loader.py", CONFIG, "--shards", str(demo_shards), "--backend", "dali", "--iters", "2",
             "--device", "cuda", "--json", str(report), check=True)
    assert json.loads(report.read_text())["machine"]["device"] == "cuda"


def test_cuda13_extra_is_offered():
    setup = (REPO / "setup.py").read_text()
    assert '"dali-cu13": ["nvidia-dali-cuda130' in setup and '"dali": ["nvidia-dali-cuda120' in setup


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_training_step_does_not_wait_for_the_gpu():
    """The GPU twin of tests/test_train.py's loss tests: MSeg's step (forward, per-dataset loss, backward,
    SGD) queues its kernels without one host synchronisation (CUDA's sync debug mode turns one into an error)."""
    from mseg_fast.data.batch import Batch
    from mseg_fast.models.factory import build_model
    from mseg_fast.train.loop import standard_step
    from mseg_fast.train.objective import build_optimizer

    model = build_model("hrnet_w18", 4).cuda().train()
    optimizer = build_optimizer(model.param_groups(), 0.01, 0.9, 1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    batch = Batch(torch.randn(4, 3, 97, 97), torch.randint(0, 4, (4, 97, 97), dtype=torch.uint8),
                  torch.tensor([0, 0, 1, 2])).to("cuda")
    weights = torch.ones(3, device="cuda")
    standard_step(model, batch, weights, optimizer, scaler, "fp32")  # the first step allocates and warms up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = standard_step(model, batch, weights, optimizer, scaler, "fp32")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert result.loss.is_cuda and torch.isfinite(result.loss) and len(result.part_values()) == 3


def test_tools_run_from_a_plain_checkout(tmp_path):
    """Without `pip install` (the editable install's finder removed, run from another folder), every tool
    finds mseg_fast at the repository root: `--help` of each exits 0."""
    code = f"""
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
sys.path[:] = [p for p in sys.path if p not in ("", {str(REPO)!r})]
for tool in sorted(__import__("pathlib").Path({str(REPO / 'tools')!r}).glob("[!_]*.py")):
    sys.argv = [str(tool), "--help"]
    try:
        runpy.run_path(str(tool), run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (0, None), (tool.name, stop.code)
    print("ran", tool.name)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("ran ") == len(list((REPO / "tools").glob("[!_]*.py")))


def test_a_device_failure_in_dali_is_not_reported_as_damaged_data():
    """Out of memory, CUDA errors and a decoder's internal error are the device's: said so, without hashing
    every shard; a decoder's refusal of bytes is the data's."""
    pytest.importorskip("nvidia.dali")
    from mseg_fast.dali.iterator import device_fault

    assert device_fault("Error in thread 0: [/opt/dali/dali/core/mm/default_resources.cc:1] CUDA allocation "
                        "failed: out of memory")
    assert device_fault("nvImageCodec failure: NVIMGCODEC_STATUS_INTERNAL_ERROR")
    assert device_fault("CUDA runtime API error cudaErrorIllegalAddress (700)")
    assert not device_fault("Error in CPU operator `nvidia.dali.fn.decoders.image`, which was used in the pipeline "
                            "definition with the following traceback: ... encountered: Unrecognized image format.")
