"""Run one DALI pipeline per dataset and hand out mixed torch batches (training) or each
validation sample exactly once."""

from __future__ import annotations

import functools
import json
from typing import Iterator

import numpy as np
import torch

from mseg_fast.data.batch import Batch
from mseg_fast.data.shardset import ShardSet
from mseg_fast.data.torch_loader import LoaderSpec, locate_damage, pad_batch, val_range
from mseg_fast.errors import UserError
from mseg_fast.dali.pipes import build_train_pipe, build_val_pipe


def to_torch(tensor_list, device: str, device_id: int | None = None) -> torch.Tensor:
    """A dense DALI TensorList (CPU or GPU) -> a torch tensor on the same device."""
    tensor = tensor_list.as_tensor()
    if device == "gpu":
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        target = torch.device("cuda", device_id)
        out = torch.empty(tensor.shape(), dtype=to_torch_type[tensor.dtype], device=target)
        feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(target))
        return out
    return torch.from_numpy(np.array(tensor))


# What DALI's errors say when the device failed, not the data: memory, CUDA, a decoder's internal error.
DEVICE_FAULTS = ("out of memory", "cudaErrorMemoryAllocation", "CUDA_ERROR_OUT_OF_MEMORY", "bad_alloc",
                 "CUDA error", "cudaError", "CUDA_ERROR", "INTERNAL_ERROR", "EXECUTION_FAILED")


def device_fault(message: str) -> bool:
    """Whether a DALI error is the device's (out of memory, a CUDA error, a decoder's internal error)
    rather than a sample's: those are reported as such, without hashing every shard for damage."""
    return any(marker.lower() in message.lower() for marker in DEVICE_FAULTS)


def gather(tensor_lists: list, device: str, device_id: int | None, cuda_stream=None) -> torch.Tensor:
    """Dense TensorLists of the same sample shape (one per pipeline) in one new torch tensor on their device,
    each copied straight into its rows (no per-pipeline tensors, no concatenation). Labels keep the width the
    graph gives them (uint8, or int16 for 16-bit labels): Batch.to() widens them once."""
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    tensors = [tensor_list.as_tensor() for tensor_list in tensor_lists]
    dtypes = [to_torch_type[tensor.dtype] for tensor in tensors]
    dtype = functools.reduce(torch.promote_types, dtypes)
    rows = [tensor.shape()[0] for tensor in tensors]
    target = torch.device("cuda", device_id) if device == "gpu" else torch.device("cpu")
    out = torch.empty((sum(rows), *tensors[0].shape()[1:]), dtype=dtype, device=target)
    start = 0
    for tensor_list, tensor, rows_of, dtype_of in zip(tensor_lists, tensors, rows, dtypes):
        part = out[start:start + rows_of]
        if dtype_of == dtype:
            feed_ndarray(tensor, part, cuda_stream=cuda_stream)
        else:  # 8-bit labels beside 16-bit ones
            part.copy_(to_torch(tensor_list, device, device_id))
        start += rows_of
    return out


def run_pipe(pipe, shardset: ShardSet, cuda_stream=None):
    """`pipe.run()`, a sample that fails to read or decode being a UserError that says where it is.

    DALI's error names the operator, not the sample, so the dataset's shards are checked against their
    manifest to find it (only after a failure, which ends the run anyway). A failure of the device is
    said to be one, with what to change. With `cuda_stream` (a GPU pipeline) the outputs are bound to that
    stream instead of the host waiting for them.
    """
    try:
        return pipe.run(cuda_stream) if cuda_stream is not None else pipe.run()
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines()]
        operator = next((line for line in lines if line.startswith("Error in")), "").rstrip(",")
        after = lines[lines.index("encountered:") + 1:] if "encountered:" in lines else lines
        reason = next((line for line in after if line and "no longer valid" not in line), "unknown error")
        if device_fault(str(error)):
            raise UserError(f"{shardset.dataset}/{shardset.split}: DALI failed on the device, not on the data "
                            f"({operator}: {reason}); lower batch_size or workers, try jpeg_decode=whole (a "
                            f"decoder's internal error), or train with loader=torch") from None
        raise UserError(f"{shardset.dataset}/{shardset.split}: DALI failed on a sample ({operator}: {reason}). "
                        f"{locate_damage(shardset)}") from None


def stream_seed(spec: LoaderSpec, dataset_id: int) -> int:
    """Base seed + rank, and a different stream per dataset."""
    return spec.seed + spec.rank + 100_003 * dataset_id


def train_pipes(spec: LoaderSpec, device: str, device_id: int | None = None, with_meta: bool = False,
                checkpoints: list | None = None) -> list:
    """One built training pipeline per dataset stream (restored from DALI checkpoints when given), the
    rank's threads shared between them."""
    threads = max(1, spec.workers // len(spec.streams))
    pipes = []
    for stream, shardset, checkpoint in zip(spec.streams, spec.shardsets, checkpoints or [None] * len(spec.streams)):
        shardset.check_ranks(stream.num_shards)
        pipe = build_train_pipe(shardset, stream.batch, stream.shard_id, stream.num_shards, spec.aug, spec.blur_kernel,
                                spec.blur_sigma, device, spec.output_dtype, stream_seed(spec, stream.dataset_id),
                                threads, spec.shuffle_buffer, with_meta=with_meta, checkpoint=checkpoint,
                                device_id=device_id, window_decode=spec.window_decode)
        pipes.append(pipe)
    return pipes


class DaliTrainLoader:
    """Endless mixed training batches; state = iteration + each pipeline's DALI checkpoint."""

    def __init__(self, spec: LoaderSpec, device: str, device_id: int | None = None, state: dict | None = None):
        self.spec, self.device, self.device_id = spec, device, device_id
        self.iteration = state["iteration"] if state else 0
        self.pipes = train_pipes(spec, device, device_id, checkpoints=state["checkpoints"] if state else None)

    def __iter__(self) -> "DaliTrainLoader":
        return self

    def __next__(self) -> Batch:
        # On a GPU: the pipelines' outputs bound to the training stream (the host does not wait for them),
        # then copied once, on that stream, into their rows of the batch.
        stream = torch.cuda.current_stream(torch.device("cuda", self.device_id)) if self.device == "gpu" else None
        outputs = [run_pipe(pipe, shardset, stream) for shardset, pipe in zip(self.spec.shardsets, self.pipes)]
        ids = torch.cat([torch.full((s.batch,), s.dataset_id, dtype=torch.int64) for s in self.spec.streams])
        self.iteration += 1
        return Batch(gather([image for image, _ in outputs], self.device, self.device_id, stream),
                     gather([label for _, label in outputs], self.device, self.device_id, stream), ids)

    def state_dict(self) -> dict:
        return {"backend": "dali", "iteration": self.iteration, "checkpoints": [p.checkpoint() for p in self.pipes]}

    def close(self) -> None:
        self.pipes = []


def dali_val_batches(spec: LoaderSpec, device: str, device_id: int | None, batch_size: int, whole: bool
                     ) -> Iterator[Batch]:
    """Each of this rank's validation samples once, dataset after dataset; the reader pads the
    last batch with repeats, which are cut off here."""
    for stream, shardset in zip(spec.streams, spec.shardsets):
        expected = len(val_range(shardset.samples, stream.shard_id, stream.num_shards))
        pipe = build_val_pipe(shardset, batch_size, stream.shard_id, stream.num_shards, spec.aug, whole, device,
                              spec.output_dtype, max(1, spec.workers), device_id=device_id)
        seen = 0
        while seen < expected:
            image, label = run_pipe(pipe, shardset)
            keep = min(batch_size, expected - seen)
            if whole:
                image, label = (image.as_cpu(), label.as_cpu()) if device == "gpu" else (image, label)
                arrays = pad_batch([np.array(image.at(i)) for i in range(keep)], [np.array(label.at(i)) for i in range(keep)])
                images, labels = torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1]).long()
            else:
                images = to_torch(image, device, device_id)[:keep]
                labels = to_torch(label, device, device_id)[:keep].long()
            seen += keep
            yield Batch(images, labels, torch.full((keep,), stream.dataset_id, dtype=torch.int64))
        del pipe


def dali_sample_crops(spec: LoaderSpec, device: str, device_id: int | None, count: int) -> list[dict]:
    """The first `count` training crops, dataset streams interleaved per batch as in training."""
    pipes = list(zip(spec.streams, spec.shardsets, train_pipes(spec, device, device_id, with_meta=True)))
    crops: list[dict] = []
    while len(crops) < count:
        for stream, shardset, pipe in pipes:
            images, labels, metas, draws = (o.as_cpu() if device == "gpu" else o for o in run_pipe(pipe, shardset))
            for i in range(stream.batch):
                crops.append({"image": np.array(images.at(i)), "label": np.array(labels.at(i)),
                              "dataset": stream.dataset, "meta": json.loads(bytes(np.array(metas.at(i))).decode()),
                              "draws": np.array(draws.at(i))})
    return crops[:count]
