"""DALI pipelines that read shards: one per dataset and rank, training or validation."""

from __future__ import annotations

from nvidia.dali import fn, pipeline_def

from mseg_fast.data.geometry import Augment
from mseg_fast.data.shardset import ShardSet
from mseg_fast.dali import processing
from mseg_fast.dali.codegen import private_codegen_dir


def _reader(shardset: ShardSet, shard_id: int, num_shards: int, train: bool, shuffle_buffer: int, with_meta: bool):
    ext = [shardset.image_ext, shardset.label_ext] + ([shardset.meta_ext] if with_meta else [])
    return fn.readers.webdataset(
        paths=list(shardset.tars), index_paths=list(shardset.indexes), ext=ext, missing_component_behavior="error",
        shard_id=shard_id, num_shards=num_shards, random_shuffle=train, initial_fill=shuffle_buffer,
        # Validation reads each sample once: pad the last batch (trimmed by the iterator), stay on the shard.
        pad_last_batch=not train, stick_to_shard=not train, name="reader")


def build_train_pipe(shardset: ShardSet, batch: int, shard_id: int, num_shards: int, aug: Augment, blur_kernel: int,
                     blur_sigma: float, device: str, output_dtype: str, seed: int, threads: int, shuffle_buffer: int,
                     with_meta: bool = False, checkpoint: str | None = None, device_id: int | None = None,
                     window_decode: bool = True):
    """Training pipeline of one dataset on one rank, built. Outputs image (CHW), label (HW)[, meta, uniforms].

    Args:
        device: "gpu" or "cpu"; device_id: the rank's GPU (None on the CPU).
        window_decode: decode only the JPEG box the crop reads (else the whole image, then slice the box).
    """

    @pipeline_def(enable_conditionals=True, enable_checkpointing=True)
    def pipe():
        outputs = _reader(shardset, shard_id, num_shards, True, shuffle_buffer, with_meta)
        image, label, draws = processing.augment_train(outputs[0], outputs[1], aug, blur_kernel, blur_sigma, device,
                                                       shardset.label_dtype, output_dtype, window_decode)
        return (image, label, outputs[2], draws) if with_meta else (image, label)

    with private_codegen_dir():
        built = pipe(batch_size=batch, num_threads=threads, device_id=device_id if device == "gpu" else None,
                     seed=seed, checkpoint=checkpoint)
        built.build()
    return built


def build_val_pipe(shardset: ShardSet, batch: int, shard_id: int, num_shards: int, aug: Augment, whole: bool,
                   device: str, output_dtype: str, threads: int, with_meta: bool = False, device_id: int | None = None):
    """Validation pipeline of one dataset on one rank (no randomness), built."""

    @pipeline_def(enable_conditionals=True)
    def pipe():
        outputs = _reader(shardset, shard_id, num_shards, False, 1, with_meta)
        image, label = processing.augment_val(outputs[0], outputs[1], aug, whole, device, shardset.label_dtype,
                                              output_dtype)
        return (image, label, outputs[2]) if with_meta else (image, label)

    with private_codegen_dir():
        built = pipe(batch_size=batch, num_threads=threads, device_id=device_id if device == "gpu" else None, seed=0)
        built.build()
    return built
