"""The one adapter between the config and a loader backend: DALI (pipelines/) or torch.

DALI is imported here only, inside its branch, so `import mseg_fast` works without it.
"""

from __future__ import annotations

import importlib.util
from typing import Iterator

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


def dali_device(device: str) -> str:
    """The DALI graph's device for a torch device name: 'gpu' for cuda, else 'cpu'."""
    return "gpu" if str(device).startswith("cuda") else "cpu"


def choose_backend(config: Config) -> str:
    """`loader` from the config, or DALI when it is installed; a missing DALI is an error, not a fallback."""
    if config.loader == "torch":
        return "torch"
    if config.loader == "dali" and not dali_available():
        raise UserError(f"loader: dali needs NVIDIA DALI, which is not installed: {DALI_INSTALL}; "
                        f"or set loader=torch for the CPU fallback")
    return "dali" if dali_available() else "torch"


def augment_of(config: Config, train: bool) -> Augment:
    if not train:
        return Augment.validation(config.short_size, config.train_h, config.train_w)
    return Augment(config.short_size, config.train_h, config.train_w, config.scale_min, config.scale_max,
                   config.rotate_min, config.rotate_max, config.rotate_prob, config.flip_prob, config.blur_prob,
                   config.crop_type == "rand")


def build_spec(config: Config, rank: int, world_size: int, train: bool = True) -> LoaderSpec:
    """Resolve datasets, shards and augmentation for one rank."""
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
                      config.manual_seed, config.output_dtype, config.workers, config.shuffle_buffer, rank)


def build_train_loader(config: Config, rank: int = 0, world_size: int = 1, device: str = "cpu",
                       state: dict | None = None):
    """An endless iterator of mixed training `Batch`es with `state_dict()` for exact resume.

    Args:
        device: "cpu" or "cuda"; DALI runs its GPU graph on "cuda".
        state: a previous loader's `state_dict()` to continue from.
    """
    spec = build_spec(config, rank, world_size, train=True)
    backend = choose_backend(config)
    if state is not None and state.get("backend") != backend:
        raise UserError(f"the saved loader state is from the {state.get('backend')} backend, this run uses {backend}; "
                        f"set loader={state.get('backend')} to resume exactly")
    if backend == "dali":
        from pipelines.iterator import DaliTrainLoader

        return DaliTrainLoader(spec, dali_device(device), state)
    return TorchTrainLoader(spec, iteration=state["iteration"] if state else 0, pin_memory=str(device).startswith("cuda"))


def build_val_batches(config: Config, rank: int = 0, world_size: int = 1, device: str = "cpu",
                      batch_size: int = 1) -> Iterator[Batch]:
    """This rank's validation samples, each once, as `Batch`es (dataset after dataset)."""
    spec = build_spec(config, rank, world_size, train=False)
    whole = config.val_crop == "whole"
    if choose_backend(config) == "dali":
        from pipelines.iterator import dali_val_batches

        return dali_val_batches(spec, dali_device(device), batch_size, whole)
    return torch_val_batches(spec, batch_size, whole)


def sample_crops(config: Config, count: int, device: str = "cpu") -> list[dict]:
    """The first training crops of rank 0, with source and drawn uniforms (tools/show_batch.py)."""
    spec = build_spec(config, 0, 1, train=True)
    if choose_backend(config) == "dali":
        from pipelines.iterator import dali_sample_crops

        return dali_sample_crops(spec, dali_device(device), count)
    return torch_sample_crops(spec, count)


def dali_stage_pipes(config: Config, device: str = "cpu") -> dict:
    """DALI pipelines that stop after reading, and after decoding (bench/loader_bench.py)."""
    from pipelines.stages import stage_pipes

    return stage_pipes(build_spec(config, 0, 1, train=True), dali_device(device))
