"""The one adapter between the config and a loader backend: DALI (mseg_fast/dali/) or torch.

DALI is imported here only, inside its branch, so `import mseg_fast` works without it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Iterator

import torch

from mseg_fast.config import Config
from mseg_fast.data.batch import Batch
from mseg_fast.data.geometry import Augment
from mseg_fast.data.mixing import plan_streams, plan_val_streams
from mseg_fast.data.shardset import ShardSet
from mseg_fast.data.torch_loader import LoaderSpec, TorchTrainLoader, torch_sample_crops, torch_val_batches
from mseg_fast.errors import UserError

DALI_INSTALL = "pip install nvidia-dali-cuda120 (or `pip install -e .[dali]`)"


def dali_available() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):  # a parent package missing, or an import blocked
        return False


def dali_target(device: str) -> tuple[str, int | None]:
    """The DALI graph's device and device_id for a torch device name: 'cuda:N' -> ('gpu', N), a bare
    'cuda' -> the current CUDA device, anything else -> ('cpu', None). Every pipeline of a rank is built
    on its rank's GPU, not on GPU 0."""
    target = torch.device(device)
    if target.type != "cuda":
        return "cpu", None
    if not torch.cuda.is_available():
        raise UserError(f"device {device}: no CUDA device is available on this machine; use --device cpu")
    return "gpu", target.index if target.index is not None else torch.cuda.current_device()


def choose_backend(config: Config, device: str = "cpu") -> str:
    """`loader` from the config; otherwise DALI when training on CUDA (its GPU graph), else the torch
    fallback: on a CPU the DALI CPU graph is about half as fast as the fallback (docs/speed.md). An explicit
    `loader=dali` without DALI installed is an error, not a fallback."""
    if config.loader == "torch":
        return "torch"
    if config.loader == "dali" and not dali_available():
        raise UserError(f"loader: dali needs NVIDIA DALI, which is not installed: {DALI_INSTALL}; "
                        f"or set loader=torch for the CPU fallback")
    if config.loader == "dali":
        return "dali"
    return "dali" if dali_target(device)[0] == "gpu" and dali_available() else "torch"


def cores_per_rank(local_ranks: int = 1) -> int:
    """The cores this process may run on (its CPU affinity, which a scheduler may restrict), shared by the
    ranks of this node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_ranks))


def resolve_workers(config: Config, local_ranks: int = 1) -> int:
    """Loader threads (DALI) or processes (torch) of one rank: the config's `workers`, else its cores."""
    return config.workers if config.workers is not None else cores_per_rank(local_ranks)  # range: config.py


def window_decode(config: Config, device: str) -> bool:
    """DALI decodes only the crop's box (`window`) or the whole JPEG and slices the box (`whole`).

    `auto`: window on the CPU, where it was measured faster (+15 %, docs/config.md); whole on a GPU until
    tools/gpu_check.py has measured both there: nvImageCodec 0.9's ROI decode (DALI 2.4) is reported to
    fail on H100/B200 (INTERNAL_ERROR or SIGSEGV), and the whole-image path gives the same pixels.
    """
    if config.jpeg_decode != "auto":
        return config.jpeg_decode == "window"
    return dali_target(device)[0] == "cpu"


def loader_summary(config: Config, spec: LoaderSpec, backend: str, device: str, local_ranks: int = 1) -> str:
    """The start-up line that says how the loader was set up and why."""
    source = ("workers from the config" if config.workers is not None
              else f"{cores_per_rank(local_ranks)} cores for this rank: CPU affinity / {local_ranks} local ranks")
    if backend == "dali":
        kind, device_id = dali_target(device)
        threads = max(1, spec.workers // len(spec.streams))
        where = f"gpu {device_id}" if kind == "gpu" else "cpu"
        decode = "crop window" if spec.window_decode else "whole image, then slice"
        return (f"loader: dali on {where}, {len(spec.streams)} pipelines x {threads} threads ({source}), "
                f"JPEG decode: {decode}")
    return f"loader: torch, {spec.workers} worker processes ({source})"


def augment_of(config: Config, train: bool) -> Augment:
    if not train:
        return Augment.validation(config.short_size, config.train_h, config.train_w)
    return Augment(config.short_size, config.train_h, config.train_w, config.scale_min, config.scale_max,
                   config.rotate_min, config.rotate_max, config.rotate_prob, config.flip_prob, config.blur_prob,
                   config.crop_type == "rand")


def build_spec(config: Config, rank: int, world_size: int, train: bool = True, device: str = "cpu",
               local_ranks: int = 1) -> LoaderSpec:
    """Resolve datasets, shards, augmentation and loader workers for one rank."""
    if train:
        streams = plan_streams(config.dataset, config.batch_size, world_size, rank, config.dataset_weights,
                               config.dataset_gpu_mapping)
    else:
        streams = plan_val_streams(config.dataset, world_size, rank, config.dataset_gpu_mapping)
    split = "train" if train else config.val_split
    shardsets = tuple(ShardSet.open(config.shards, config.taxonomy(), s.dataset, split) for s in streams)
    hashes = {s.taxonomy_sha256 for s in shardsets}
    if config.taxonomy() != "self" and len(hashes) > 1:
        raise UserError(f"the shards of {', '.join(config.dataset)} were written with different class lists; "
                        f"re-shard them with the same taxonomy TSV")
    return LoaderSpec(tuple(streams), shardsets, augment_of(config, train), config.blur_kernel, config.blur_sigma,
                      config.manual_seed, config.output_dtype, resolve_workers(config, local_ranks),
                      config.shuffle_buffer, rank, window_decode(config, device))


def build_train_loader(config: Config, rank: int = 0, world_size: int = 1, device: str = "cpu",
                       state: dict | None = None, local_ranks: int = 1):
    """An endless iterator of mixed training `Batch`es with `state_dict()` for exact resume.

    Args:
        device: "cpu" or "cuda[:N]"; DALI runs its GPU graph on that GPU.
        state: a previous loader's `state_dict()` to continue from.
        local_ranks: ranks on this node (they share its cores).
    """
    spec = build_spec(config, rank, world_size, train=True, device=device, local_ranks=local_ranks)
    backend = choose_backend(config, device)
    if state is not None and state.get("backend") != backend:
        raise UserError(f"the saved loader state is from the {state.get('backend')} backend, this run uses {backend}; "
                        f"set loader={state.get('backend')} to resume exactly")
    if backend == "dali":
        from mseg_fast.dali.iterator import DaliTrainLoader

        return DaliTrainLoader(spec, *dali_target(device), state)
    return TorchTrainLoader(spec, iteration=state["iteration"] if state else 0, pin_memory=str(device).startswith("cuda"))


def build_val_batches(config: Config, rank: int = 0, world_size: int = 1, device: str = "cpu",
                      batch_size: int = 1, local_ranks: int = 1) -> Iterator[Batch]:
    """This rank's validation samples, each once, as `Batch`es (dataset after dataset)."""
    spec = build_spec(config, rank, world_size, train=False, device=device, local_ranks=local_ranks)
    whole = config.val_crop == "whole"
    if choose_backend(config, device) == "dali":
        from mseg_fast.dali.iterator import dali_val_batches

        return dali_val_batches(spec, *dali_target(device), batch_size, whole)
    return torch_val_batches(spec, batch_size, whole)


def sample_crops(config: Config, count: int, device: str = "cpu") -> list[dict]:
    """The first training crops of rank 0, with source and drawn uniforms (tools/show_batch.py)."""
    spec = build_spec(config, 0, 1, train=True, device=device)
    if choose_backend(config, device) == "dali":
        from mseg_fast.dali.iterator import dali_sample_crops

        return dali_sample_crops(spec, *dali_target(device), count)
    return torch_sample_crops(spec, count)


def dali_stage_pipes(config: Config, device: str = "cpu") -> dict:
    """DALI pipelines that stop after reading, and after decoding (bench/loader_bench.py)."""
    from mseg_fast.dali.stages import stage_pipes

    return stage_pipes(build_spec(config, 0, 1, train=True, device=device), *dali_target(device))


def run_graph_on_arrays(images: list, labels: list, aug: Augment, blur_kernel: int, blur_sigma: float, device: str,
                        label_dtype: str, seed: int, window: bool = True) -> tuple[list, list, list]:
    """Encoded images and labels through the DALI training graph on `device` (differential checks:
    tools/gpu_check.py, tests). Returns crops, labels and each sample's uniforms."""
    from mseg_fast.dali.memory import run_train_graph

    return run_train_graph(images, labels, aug, blur_kernel, blur_sigma, *dali_target(device), label_dtype, seed, window)
