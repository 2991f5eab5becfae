"""Which datasets a rank reads, which part of each, and how many crops of each per batch.

MSeg gives every dataset its own GPU, so a step averages per-dataset losses with equal
weight and needs as many GPUs as datasets. Here each rank reads every dataset (a disjoint
part of each) with a per-dataset sub-batch; a `dataset_gpu_mapping` brings back MSeg's layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from mseg_fast.errors import UserError


@dataclass(frozen=True)
class Stream:
    """One dataset as read by one rank."""

    dataset: str
    dataset_id: int  # position in the config's dataset list
    batch: int  # crops of this dataset per batch on this rank
    shard_id: int
    num_shards: int


def split_batch(total: int, weights: list[float]) -> list[int]:
    """Integer sub-batches proportional to weights, summing to total (largest remainders)."""
    exact = [total * w / sum(weights) for w in weights]
    sizes = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: sizes[i] - exact[i])[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes


def plan_streams(datasets: list[str], batch_size: int, world_size: int, rank: int, weights: list[float] | None = None,
                 mapping: dict[str, list[int]] | None = None) -> list[Stream]:
    """The datasets this rank reads.

    Args:
        datasets: config's dataset list (its order gives the dataset ids).
        batch_size: the global batch per step.
        world_size, rank: the process group.
        weights: per-dataset share of each batch (equal when None).
        mapping: MSeg's dataset -> ranks layout; each rank then reads only its dataset.
    """
    if not datasets:
        raise UserError("config key 'dataset' is empty: name at least one dataset")
    if batch_size % world_size:
        raise UserError(f"batch_size {batch_size} does not divide by the {world_size} ranks; make it a multiple")
    per_rank = batch_size // world_size
    if mapping:
        ranks = sorted(r for rs in mapping.values() for r in rs)
        if ranks != list(range(world_size)) or set(mapping) != set(datasets):
            raise UserError(f"dataset_gpu_mapping must give each of the {world_size} ranks exactly one dataset "
                            f"and cover every dataset of the config; got {mapping}")
        name = next(d for d, rs in mapping.items() if rank in rs)
        members = sorted(mapping[name])
        return [Stream(name, datasets.index(name), per_rank, members.index(rank), len(members))]
    sizes = split_batch(per_rank, weights or [1.0] * len(datasets))
    if 0 in sizes:
        raise UserError(f"a per-rank batch of {per_rank} cannot give every one of the {len(datasets)} datasets a crop "
                        f"(sub-batches {sizes}); raise batch_size or change dataset_weights")
    return [Stream(d, i, b, rank, world_size) for i, (d, b) in enumerate(zip(datasets, sizes))]

def global_crops(datasets: list[str], batch_size: int, world_size: int, weights: list[float] | None = None,
                 mapping: dict[str, list[int]] | None = None) -> dict[str, int]:
    """Crops of each dataset in one global batch, over all ranks (the start-up line shows it)."""
    crops = {d: 0 for d in datasets}
    for rank in range(world_size):
        for stream in plan_streams(datasets, batch_size, world_size, rank, weights, mapping):
            crops[stream.dataset] += stream.batch
    return crops


def plan_val_streams(datasets: list[str], world_size: int, rank: int,
                     mapping: dict[str, list[int]] | None = None) -> list[Stream]:
    """Validation: every rank reads its part of every dataset (batch sizes are the caller's)."""
    if mapping:
        return [Stream(d, i, 0, sorted(mapping[d]).index(rank), len(mapping[d]))
                for i, d in enumerate(datasets) if rank in mapping.get(d, [])]
    return [Stream(d, i, 0, rank, world_size) for i, d in enumerate(datasets)]
