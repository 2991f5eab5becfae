"""Training-step throughput: real batches from the loader against one synthetic batch kept in
memory. The difference is the data wait that the loader leaves exposed."""

from __future__ import annotations

import resource
import time

import torch

from mseg_fast.config import Config
from mseg_fast.data.batch import Batch
from mseg_fast.loader import build_spec, build_train_loader
from mseg_fast.models.factory import build_model
from mseg_fast.train.numerics import set_numerics
from mseg_fast.train.objective import build_optimizer
from mseg_fast.train.loop import device_used_gib
from mseg_fast.train.steps import build_step


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def run_steps(config: Config, real: bool, iters: int, warmup: int, device: torch.device) -> dict:
    numerics = set_numerics(config.tf32, config.deterministic)  # as train.py: the figures are the trainer's
    spec = build_spec(config, 0, 1)
    model = build_model(config.arch, len(spec.shardsets[0].class_names), config.layers, config.init)
    model = model.to(device).train()
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.param_groups(), config.base_lr, config.momentum, config.weight_decay,
                                config.optimizer)
    network = torch.compile(model) if config.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    weights = torch.ones(len(config.dataset), device=device)
    step = build_step(config)  # the configured step (MSeg's, MGDA's or CCSA's)
    batch_size = sum(s.batch for s in spec.streams)
    loader = build_train_loader(config, device=str(device)) if real else None
    synthetic = Batch(torch.randn(batch_size, 3, config.train_h, config.train_w),
                      torch.randint(0, len(spec.shardsets[0].class_names), (batch_size, config.train_h, config.train_w)),
                      torch.cat([torch.full((s.batch,), s.dataset_id) for s in spec.streams])).to(device)
    wait = 0.0
    for number in range(warmup + iters):
        if number == warmup:
            start, wait = time.perf_counter(), 0.0
        tick = time.perf_counter()
        batch = next(loader).to(device) if real else synthetic
        wait += time.perf_counter() - tick
        step(network, batch, weights, optimizer, scaler, config.precision)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if loader is not None:
        loader.close()
    return {"batches": "real" if real else "synthetic", "samples_per_s": round(iters * batch_size / seconds, 3),
            "step_s": round(seconds / iters, 3), "data_wait_share": round(wait / seconds, 3),
            "peak_memory_gib": round(peak_memory_gib(device), 2),
            "device_used_gib": round(device_used_gib(device), 2) if device.type == "cuda" else None,
            "batch": batch_size, "arch": config.arch,
            "crop": [config.train_h, config.train_w], "precision": config.precision, "device": str(device),
            "channels_last": config.channels_last, "compile": config.compile, "numerics": numerics}
