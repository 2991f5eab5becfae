"""Reduced pipelines for per-stage loader timings: read only, read + decode."""

from __future__ import annotations

from nvidia.dali import pipeline_def

from mseg_fast.data.torch_loader import LoaderSpec
from mseg_fast.dali import processing
from mseg_fast.dali.pipes import _reader


def stage_pipes(spec: LoaderSpec, device: str, device_id: int | None = None) -> dict:
    """{stage name: built pipeline} for the first stream: 'read' (bytes), 'decode' (image and label)."""
    stream, shardset = spec.streams[0], spec.shardsets[0]

    @pipeline_def
    def read():
        return tuple(_reader(shardset, stream.shard_id, stream.num_shards, True, spec.shuffle_buffer, False))

    @pipeline_def
    def decode():
        images, labels = _reader(shardset, stream.shard_id, stream.num_shards, True, spec.shuffle_buffer, False)
        image, label, _, _ = processing.decode(images, labels, device, shardset.label_dtype)
        return image, label

    pipes = {}
    for name, build in (("read", read), ("decode", decode)):
        pipe = build(batch_size=stream.batch, num_threads=max(1, spec.workers),
                     device_id=device_id if device == "gpu" else None, seed=spec.seed)
        pipe.build()
        pipes[name] = pipe
    return pipes
