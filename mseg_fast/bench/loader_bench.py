"""Loader throughput: our two backends, an MSeg-style loader and decoding alone, on the same shards.

Every backend is timed the same way: batches pulled by the consumer after a warm-up, giving
samples/s and batch latency percentiles. Per-stage costs are timed alone (detectron2's
habit): read bytes, decode, augment, host->device.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mseg_fast.config import Config
from mseg_fast.data.geometry import NUM_DRAWS
from mseg_fast.data.mseg_chain import mseg_chain
from mseg_fast.data.torch_loader import LoaderSpec, SampleReader, decode, worker_init
from mseg_fast.data.warp_cpu import Scratch, normalize_chw, warp_into
from mseg_fast.loader import build_spec, build_train_loader, dali_stage_pipes


def time_batches(next_batch: Callable[[], int], iters: int, warmup: int) -> dict:
    """Pull `warmup` then `iters` batches; `next_batch` returns the batch's sample count."""
    for _ in range(warmup):
        next_batch()
    latencies, samples = [], 0
    start = time.perf_counter()
    for _ in range(iters):
        tick = time.perf_counter()
        samples += next_batch()
        latencies.append(time.perf_counter() - tick)
    seconds = time.perf_counter() - start
    return {"samples_per_s": round(samples / seconds, 2), "p50_ms": round(1e3 * float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(1e3 * float(np.percentile(latencies, 99)), 1), "batches": iters, "samples": samples}


class _Baseline(Dataset):
    """Batches from the first dataset, as large as the rank's whole batch, by index: MSeg's chain
    ('mseg') or decoding alone ('decode')."""

    def __init__(self, spec: LoaderSpec, mode: str, blur_kernel: int):
        self.spec, self.mode, self.blur_kernel = spec, mode, blur_kernel
        self.reader = SampleReader(spec.shardsets[0])

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, iteration: int):
        batch = sum(stream.batch for stream in self.spec.streams)
        rng = np.random.default_rng(iteration)
        images, labels = [], []
        for j in range(batch):
            index = (iteration * batch + j) % self.reader.shardset.samples
            image, label, _ = decode(self.reader.read(index))
            if self.mode == "decode":
                images.append(image)
                labels.append(label)
                continue
            # MSeg reads images as float32 and runs every step on the full image (reference §3.7).
            crop, crop_label = mseg_chain(image.astype(np.float32), label, rng.random(NUM_DRAWS), self.spec.aug,
                                          self.blur_kernel)
            images.append(torch.from_numpy(normalize_chw(crop)))
            labels.append(torch.from_numpy(crop_label.astype(np.int64)))
        if self.mode == "decode":
            return len(images)
        return torch.stack(images), torch.stack(labels)


def baseline_loader(spec: LoaderSpec, mode: str, blur_kernel: int) -> Iterator:
    return iter(DataLoader(_Baseline(spec, mode, blur_kernel), batch_size=None, sampler=range(2**62),
                           num_workers=spec.workers, worker_init_fn=worker_init(), multiprocessing_context="forkserver",
                           prefetch_factor=2))


def _per_sample_ms(function: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        function()
    return round(1e3 * (time.perf_counter() - start) / count, 2)


def _stage_times(spec: LoaderSpec, samples: int) -> dict:
    reader = SampleReader(spec.shardsets[0])
    indices = [i % reader.shardset.samples for i in range(samples)]
    raw = [reader.read(i) for i in indices]
    decoded = [decode(r, rgb=False) for r in raw]
    u = np.random.default_rng(0).random((samples, NUM_DRAWS))
    it = iter(range(10**9))
    image_out = np.empty((3, spec.aug.crop_h, spec.aug.crop_w), np.dtype(spec.output_dtype))
    label_out = np.empty((spec.aug.crop_h, spec.aug.crop_w), np.dtype(reader.shardset.label_dtype))
    scratch = Scratch(spec.aug.crop_h, spec.aug.crop_w)

    def augment() -> None:
        image, label, _ = decoded[k := next(it) % samples]
        warp_into(image, label, u[k], spec.aug, spec.blur_kernel, spec.blur_sigma, image_out, label_out, scratch, True)

    augment()  # the scratch buffers' first use
    return {
        "read": _per_sample_ms(lambda: reader.read(indices[next(it) % samples]), samples),
        "decode": _per_sample_ms(lambda: decode(raw[next(it) % samples], rgb=False), samples),
        "augment": _per_sample_ms(augment, samples),
    }


class _Stages(Dataset):
    """One item: the fallback's stage timings, taken where its work runs (a loader worker)."""

    def __init__(self, spec: LoaderSpec, samples: int):
        self.spec, self.samples = spec, samples

    def __len__(self) -> int:
        return 1

    def __getitem__(self, _: int) -> dict:
        return _stage_times(self.spec, self.samples)


def torch_stages(spec: LoaderSpec, samples: int = 16) -> dict:
    """ms per sample of each stage of the fallback, in one worker process set up as the loader's are
    (one thread, freed memory kept: the main process would time decoding 1.5-2 ms slower)."""
    loader = DataLoader(_Stages(spec, samples), batch_size=None, num_workers=1, worker_init_fn=worker_init(),
                        multiprocessing_context="forkserver")
    return next(iter(loader))


def dali_stages(config: Config, iters: int, warmup: int, device: str = "cpu") -> dict:
    """ms per sample for DALI pipelines that stop after reading and after decoding, on `device`."""
    out = {}
    for name, pipe in dali_stage_pipes(config, device).items():
        result = time_batches(lambda: len(pipe.run()[0]), iters, warmup)
        out[name] = round(1e3 / result["samples_per_s"], 2)
    return out


def run_backend(config: Config, backend: str, iters: int, warmup: int, device: str = "cpu") -> dict:
    """samples/s, latency and per-stage timings of one backend."""
    spec = build_spec(config, 0, 1, train=True, device=device)
    result = {"backend": backend, "batch": sum(s.batch for s in spec.streams), "workers": spec.workers,
              "crop": [config.train_h, config.train_w]}
    if backend in ("dali", "torch"):
        loader = build_train_loader(dataclasses.replace(config, loader=backend), device=device)
        h2d = []

        def next_batch() -> int:
            batch = next(loader)
            if device != "cpu":
                tick = time.perf_counter()
                batch.to(device, non_blocking=False)
                h2d.append(time.perf_counter() - tick)
            return len(batch)

        result.update(time_batches(next_batch, iters, warmup))
        loader.close()
        stages = dali_stages(config, iters, warmup, device) if backend == "dali" else torch_stages(spec)
        if backend == "dali":
            stages["decode"] = round(stages["decode"] - stages["read"], 2)
            stages["augment"] = round(1e3 / result["samples_per_s"] - stages["read"] - stages["decode"], 2)
            stages["note"] = "wall ms per sample with all threads; decode and augment by difference"
        stages["host_to_device"] = round(1e3 * float(np.mean(h2d)) / result["batch"], 3) if h2d else None
        result["stages_ms_per_sample"] = stages
    else:
        loader = baseline_loader(spec, backend, config.blur_kernel)
        result.update(time_batches(lambda: (lambda b: b if isinstance(b, int) else len(b[0]))(next(loader)),
                                   iters, warmup))
        del loader  # shuts its workers down before the next backend is timed
    return result
