"""The CPU fallback loader: a torch DataLoader over the same shards, OpenCV for the warp.

For machines without DALI, and the reference for differential tests. Samples are read by
offset through the DALI index files (random access, no tar scan). Everything random is a
pure function of (seed, dataset, rank, position): the k-th crop a rank takes from a dataset
is fixed by those, so the sequence does not depend on the number of workers, and resuming at
iteration t needs nothing but t.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import json
from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.data.batch import Batch
from mseg_fast.data.geometry import NUM_DRAWS, Augment, resized_size
from mseg_fast.data.mixing import Stream
from mseg_fast.data.shardset import ShardSet
from mseg_fast.data.slots import Slot, SlotPool
from mseg_fast.data.warp_cpu import Scratch, normalize_chw, warp_into, warp_sample
from mseg_fast.errors import UserError
from mseg_fast.lifeline import Owner, exit_with, owner


@dataclass(frozen=True)
class LoaderSpec:
    """What either backend needs, resolved from the config at the edge (mseg_fast/loader.py)."""

    streams: tuple[Stream, ...]
    shardsets: tuple[ShardSet, ...]  # one per stream
    aug: Augment
    blur_kernel: int
    blur_sigma: float
    seed: int
    output_dtype: str  # float32 | float16
    workers: int  # resolved: DALI threads or DataLoader processes of this rank
    shuffle_buffer: int = 256
    rank: int = 0
    window_decode: bool = True  # DALI: decode only the JPEG box a crop reads (else the whole image, then slice)


class SampleReader:
    """Reads a sample's components by offset; keeps files open per process."""

    def __init__(self, shardset: ShardSet):
        self.shardset = shardset
        self.table = shardset.sample_table()
        self._files: dict[str, object] = {}

    def read(self, index: int) -> dict[str, bytes]:
        tar, _, components = self.table[index]
        handle = self._files.get(tar)
        if handle is None:
            handle = self._files[tar] = open(tar, "rb")
        out = {}
        for ext, (offset, size) in components.items():
            handle.seek(offset)
            out[ext] = handle.read(size)
            if len(out[ext]) != size:
                raise ValueError(f"its .{ext} ends {size - len(out[ext])} bytes early (the shard is truncated)")
        return out

    def damage(self, index: int, error: Exception) -> str:
        """The error line for a sample that cannot be read or decoded: shard, key, and what to run."""
        tar, key, _ = self.table[index]
        return (f"{tar}: sample '{key}' cannot be used ({error}); the shard is damaged or was replaced: check with "
                f"`{self.shardset.verify_command()}` and rerun the shard command that wrote it (it rewrites damaged "
                f"shards)")

    def decoded(self, index: int, rgb: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
        """`decode(read(index))`, a damaged sample being a UserError that names it."""
        try:
            return decode(self.read(index), rgb)
        except (ValueError, cv2.error) as error:
            raise UserError(self.damage(index, error)) from None

    def decoded_relabeled(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """RGB image, label, relabeled label and meta of a sample sharded --with-relabeled."""
        try:
            components = self.read(index)
            image, label, meta = decode(components)
            relabeled = _decode_label(components, self.shardset.relabeled_ext or "relabeled.png")
        except (ValueError, cv2.error) as error:
            raise UserError(self.damage(index, error)) from None
        if relabeled.shape != label.shape:
            raise UserError(self.damage(index, ValueError("its relabeled label differs in size from its label")))
        return image, label, relabeled, meta

    def __getstate__(self):  # file handles stay in their process
        return {"shardset": self.shardset, "table": self.table, "_files": {}}


def _decode_label(components: dict[str, bytes], ext: str) -> np.ndarray:
    if ext not in components:
        raise ValueError(f"it lacks its .{ext} (has {', '.join(components)})")
    label = cv2.imdecode(np.frombuffer(components[ext], np.uint8), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2:
        raise ValueError(f"its .{ext} does not decode to a single-channel label map")
    return label


def decode(components: dict[str, bytes], rgb: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Image (uint8, RGB or OpenCV's BGR), label and meta of one sample.

    Raises:
        ValueError: the image or the label does not decode.
    """
    image_ext = next((ext for ext in components if ext in ("jpg", "png")), None)
    if image_ext is None:
        raise ValueError(f"it lacks its image (has {', '.join(components)})")
    image = cv2.imdecode(np.frombuffer(components[image_ext], np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"its .{image_ext} does not decode")
    label = _decode_label(components, "label.png")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image
    return image, label, json.loads(components.get("json", b"{}"))


def locate_damage(shardset: ShardSet) -> str:
    """Where a dataset's damage is, for an error line when a decoder failed without naming the sample (DALI):
    the first shard whose checksum differs from the manifest and, in it, the first sample that fails."""
    damaged = shardset.damaged()
    if not damaged:
        return (f"Every shard of {shardset.dataset}/{shardset.split} matches its manifest, so the source data was bad "
                f"when sharded; find the sample with `python tools/show_batch.py ... loader=torch`")
    reader = SampleReader(shardset)
    for index, (tar, _, _) in enumerate(reader.table):
        if tar == damaged[0]:
            try:
                decode(reader.read(index))
            except (ValueError, cv2.error) as error:
                return reader.damage(index, error)
    return (f"{damaged[0]} differs from its manifest (and {len(damaged) - 1} more shards); rerun the shard command "
            f"that wrote it, or `{shardset.verify_command()}` to list them")


def draws(seed: int, stream: Stream, position: int) -> np.ndarray:
    """The uniforms of a rank's `position`-th crop of a dataset."""
    return np.random.default_rng([seed, stream.dataset_id, stream.shard_id, position]).random(NUM_DRAWS)


@functools.lru_cache(maxsize=16)
def _epoch_order(seed: int, dataset_id: int, epoch: int, samples: int) -> np.ndarray:
    return np.random.default_rng([seed, dataset_id, epoch, 1 << 20]).permutation(samples)


def train_index(seed: int, stream: Stream, samples: int, position: int) -> int:
    """Sample index of a rank's `position`-th crop: each epoch a fresh permutation of the
    dataset, dealt to ranks round-robin (as torch's DistributedSampler), so ranks are disjoint."""
    per_rank = samples // stream.num_shards
    epoch, step = divmod(position, per_rank)
    return int(_epoch_order(seed, stream.dataset_id, epoch, samples)[stream.shard_id + step * stream.num_shards])


def augment(components: dict[str, bytes], u: np.ndarray, spec: LoaderSpec, image_out: np.ndarray,
            label_out: np.ndarray, scratch: Scratch) -> None:
    """Decode and augment one sample into `image_out` (normalised CHW) and `label_out`."""
    image, label, _ = decode(components, rgb=False)  # stays BGR until normalisation reorders it
    warp_into(image, label, u, spec.aug, spec.blur_kernel, spec.blur_sigma, image_out, label_out, scratch, bgr=True)


def augmented(components: dict[str, bytes], u: np.ndarray, spec: LoaderSpec, label_dtype: str, scratch: Scratch
              ) -> tuple[np.ndarray, np.ndarray]:
    """`augment` into new arrays: the normalised crop (the output dtype) and its label (`label_dtype`)."""
    image_out = np.empty((3, spec.aug.crop_h, spec.aug.crop_w), np.dtype(spec.output_dtype))
    label_out = np.empty((spec.aug.crop_h, spec.aug.crop_w), np.dtype(label_dtype))
    augment(components, u, spec, image_out, label_out, scratch)
    return image_out, label_out


class MixedBatches(Dataset):
    """Item (t, slot) = the rank's mixed batch of iteration t, written into the slot's shared memory."""

    def __init__(self, spec: LoaderSpec):
        self.spec = spec
        self.readers = [SampleReader(s) for s in spec.shardsets]
        # Labels cross to the trainer in their stored width (8 bits, or 16 for naive) and become int64
        # there: an int64 batch of 713 crops is 32 MB of shared memory per batch of 8, uint8 is 4 MB.
        wide = any(s.label_dtype == "uint16" for s in spec.shardsets)
        self.label_dtype = torch.int16 if wide else torch.uint8
        self._scratch: Scratch | None = None  # made in the process that augments (a worker)
        # In a worker, the slots it was sent: while it holds them, torch's shared-memory cache maps a slot
        # sent again to the same pages. Without this, every batch maps its slot anew and faults in every
        # page of it (52 MB for 8 crops of 713x713: ~1.5 ms per crop, measured).
        self._seen: dict[int, Slot] = {}
        for stream, shardset in zip(spec.streams, spec.shardsets):
            shardset.check_ranks(stream.num_shards)

    def __len__(self) -> int:
        return 2**62  # length is counted in iterations by the caller

    def items(self, iteration: int) -> Iterator[tuple[Stream, SampleReader, int, np.ndarray]]:
        """(stream, reader, sample index, uniforms) of every crop of iteration t's batch."""
        for stream, reader in zip(self.spec.streams, self.readers):
            for j in range(stream.batch):
                position = iteration * stream.batch + j
                index = train_index(self.spec.seed, stream, reader.shardset.samples, position)
                yield stream, reader, index, draws(self.spec.seed, stream, position)

    def slot_pool(self) -> SlotPool:
        """Shared-memory slots of this loader's batch shape (slots.py)."""
        aug, batch = self.spec.aug, sum(stream.batch for stream in self.spec.streams)
        return SlotPool((batch, 3, aug.crop_h, aug.crop_w), getattr(torch, self.spec.output_dtype),
                        (batch, aug.crop_h, aug.crop_w), self.label_dtype)

    def __getitem__(self, index: tuple[int, Slot]) -> dict[str, torch.Tensor]:
        """Iteration t's batch, written into the slot sent with it; {"error": line} for a damaged sample
        (returned, not raised: DataLoader would wrap the exception in its own traceback text)."""
        iteration, slot = index
        if torch.utils.data.get_worker_info() is not None:  # in the main process a held slot would never be idle
            self._seen.setdefault(slot.images.data_ptr(), slot)
        if self._scratch is None:
            self._scratch = Scratch(self.spec.aug.crop_h, self.spec.aug.crop_w)
        items = list(self.items(iteration))
        images, labels = slot.images, slot.labels
        for k, (stream, reader, index, u) in enumerate(items):
            try:
                augment(reader.read(index), u, self.spec, images[k].numpy(), labels[k].numpy(), self._scratch)
            except (ValueError, cv2.error) as error:
                return {"error": reader.damage(index, error)}
        ids = torch.tensor([stream.dataset_id for stream, *_ in items], dtype=torch.int64)
        # Aliases, not the slot's own tensors: without a worker process the caller would otherwise hold
        # the very tensor the pool holds, and its reference count would not show the slot in use.
        return {"images": images[...], "labels": labels[...], "dataset_ids": ids}


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks of up to 32 MB for reuse. By default it hands a decoded
    1080p image (6 MB) back to the kernel when it is freed, and the next decode faults every page in
    again: about 2,000 page faults per sample, 1.5-2 ms of a worker's time (measured). Only the speed
    changes; elsewhere than glibc this does nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # the largest value glibc accepts on 64 bits
    libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)


def init_worker(served: Owner, _: int) -> None:
    """DataLoader worker set-up: one thread each, parallelism comes from the processes; the worker
    ends when the process that owns the loader ends (lifeline.py: its parent is the forkserver)."""
    exit_with(served)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    keep_freed_memory()


def worker_init() -> Callable[[int], None]:
    """The `worker_init_fn` for a DataLoader made by this process."""
    return functools.partial(init_worker, owner())


def to_batch(arrays: dict) -> Batch:
    # Labels stay in their stored width: Batch.to() widens them after the copy (on the GPU, or in the
    # trainer). Widening here cost the loader's process 78 ms per batch of 8 713x713 crops (32 MB of new
    # int64 pages), on the cores the workers need: 55 -> 85 samples/s on 2 cores when it was moved.
    return Batch(arrays["images"], arrays["labels"], arrays["dataset_ids"])


class TorchTrainLoader:
    """Endless mixed training batches; `state_dict()` is the number of batches handed out."""

    def __init__(self, spec: LoaderSpec, iteration: int = 0, pin_memory: bool = False):
        self.spec, self.iteration = spec, iteration
        self._batches = MixedBatches(spec)
        self._pool = self._batches.slot_pool()
        self._in_flight: dict[int, Slot] = {}  # iteration -> the slot its batch is written into
        # forkserver, not fork: the trainer's process holds threads (DALI, OpenCV, CUDA) whose locks a
        # forked worker would inherit locked (seen here: a hang after a DALI pipeline had run).
        self._loader = DataLoader(self._batches, batch_size=None, sampler=self._indices(iteration),
                                  num_workers=spec.workers, worker_init_fn=worker_init(), pin_memory=pin_memory,
                                  prefetch_factor=2 if spec.workers else None,
                                  multiprocessing_context="forkserver" if spec.workers else None,
                                  # Its own generator: the DataLoader draws a base seed when its iterator
                                  # starts, which from the global one would shift the trainer's stream
                                  # (CCSA's pairs) after a resume. Workers ignore that seed (draws() above).
                                  generator=torch.Generator().manual_seed(spec.seed + spec.rank))
        self._iterator: Iterator | None = None

    def _indices(self, start: int) -> Iterator[tuple[int, Slot]]:
        """(iteration, slot) pairs; the DataLoader draws them when it sends work, so a slot is taken as
        late as possible and only when idle."""
        for iteration in itertools.count(start):
            slot = self._in_flight[iteration] = self._pool.take()
            yield iteration, slot

    def __iter__(self) -> "TorchTrainLoader":
        return self

    def __next__(self) -> Batch:
        if self._iterator is None:
            self._iterator = iter(self._loader)
        arrays = next(self._iterator)  # batches come back in order: this is iteration self.iteration's
        if "error" in arrays:
            raise UserError(arrays["error"])
        SlotPool.arrived(self._in_flight.pop(self.iteration))
        self.iteration += 1
        return to_batch(arrays)

    def state_dict(self) -> dict:
        return {"backend": "torch", "iteration": self.iteration}

    def close(self) -> None:
        """Stop the worker processes (the iterator owns them; dropping it shuts them down)."""
        self._iterator = None


def val_range(samples: int, shard_id: int, num_shards: int) -> range:
    """A rank's contiguous part of a validation set (DALI's readers split the same way)."""
    return range(samples * shard_id // num_shards, samples * (shard_id + 1) // num_shards)


def torch_val_batches(spec: LoaderSpec, batch_size: int, whole: bool) -> Iterator[Batch]:
    """Each of this rank's validation samples once, dataset after dataset (no randomness)."""
    for stream, shardset in zip(spec.streams, spec.shardsets):
        reader = SampleReader(shardset)
        indices = val_range(shardset.samples, stream.shard_id, stream.num_shards)
        for start in range(0, len(indices), batch_size):
            images, labels = [], []
            for index in indices[start:start + batch_size]:
                image, label, _ = reader.decoded(index)
                aug = spec.aug
                if whole:  # the crop is the resized image itself
                    new_h, new_w = (int(v) for v in resized_size(float(label.shape[0]), float(label.shape[1]),
                                                                  aug.short_size))
                    aug = Augment.validation(aug.short_size, new_h, new_w)
                crop, crop_label = warp_sample(image, label, np.zeros(NUM_DRAWS), aug, spec.blur_kernel, spec.blur_sigma)
                images.append(normalize_chw(crop, np.dtype(spec.output_dtype)))
                labels.append(crop_label.astype(np.int32))
            stacked, stacked_labels = pad_batch(images, labels)
            yield Batch(torch.from_numpy(stacked), torch.from_numpy(stacked_labels).long(),
                        torch.full((len(images),), stream.dataset_id, dtype=torch.int64))


def pad_batch(images: list[np.ndarray], labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack crops of different sizes ('whole' validation): pad with 0 (the normalised mean) and 255."""
    height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    out = np.zeros((len(images), 3, height, width), images[0].dtype)
    out_labels = np.full((len(images), height, width), IGNORE_LABEL, np.int32)
    for k, (image, label) in enumerate(zip(images, labels)):
        out[k, :, : image.shape[1], : image.shape[2]] = image
        out_labels[k, : label.shape[0], : label.shape[1]] = label
    return out, out_labels


def torch_sample_crops(spec: LoaderSpec, count: int) -> list[dict]:
    """The first `count` training crops with where they came from and what was drawn."""
    batches = MixedBatches(spec)
    scratch = Scratch(spec.aug.crop_h, spec.aug.crop_w)
    crops: list[dict] = []
    for iteration in itertools.count():
        for stream, reader, index, u in batches.items(iteration):
            try:
                components = reader.read(index)
                image, label = augmented(components, u, spec, reader.shardset.label_dtype, scratch)
            except (ValueError, cv2.error) as error:
                raise UserError(reader.damage(index, error)) from None
            meta = json.loads(components.get("json", b"{}"))
            crops.append({"image": image, "label": label, "dataset": stream.dataset, "meta": meta, "draws": u})
            if len(crops) == count:
                return crops
    return crops
