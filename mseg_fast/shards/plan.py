"""Decide which samples go into which shard, before any work is done.

The plan is a pure function of the list, the seed and the cutting rule, so a rerun after a
crash computes the same plan and can tell finished shards (same plan digest, same checksum)
from missing ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mseg_fast.datasets import ListEntry
from mseg_fast.errors import UserError
from mseg_fast.shards.convert import SampleJob, sample_key, source_identity

_TAR_OVERHEAD = 3 * 1024  # three 512-byte headers plus padding, per sample


@dataclass(frozen=True)
class ShardPlan:
    """One shard to write: its number, its samples and a digest of everything that shapes it."""

    number: int
    jobs: tuple[SampleJob, ...]
    digest: str

    def stem(self, split: str) -> str:
        return f"{split}-{self.number:06d}"


def shuffled_jobs(entries: Sequence[ListEntry], seed: int) -> list[SampleJob]:
    """All samples in a seeded global order (DALI reads shards in order and shuffles only
    inside a buffer, so the shards themselves must be mixed)."""
    jobs = [SampleJob(e.line_no, sample_key(i, e.image), e.image, e.label, e.relabeled) for i, e in enumerate(entries)]
    order = np.random.default_rng(seed).permutation(len(jobs))
    return [jobs[i] for i in order]


def _estimated_bytes(job: SampleJob, data_dir: Path) -> int:
    total = _TAR_OVERHEAD
    for rel in (job.image, job.label):
        try:
            total += (data_dir / rel).stat().st_size
        except OSError:
            pass  # a missing file is reported, with its name, when the sample is converted
    return total


def cut(jobs: list[SampleJob], samples_per_shard: int | None, shard_size: int | None,
        data_dir: Path) -> list[list[SampleJob]]:
    """Split the ordered samples into shards by count, or by estimated bytes (source file sizes)."""
    if (samples_per_shard is None) == (shard_size is None):
        raise UserError("give exactly one of --samples-per-shard and --shard-size")
    if samples_per_shard is not None:
        if samples_per_shard < 1:
            raise UserError(f"--samples-per-shard must be at least 1, got {samples_per_shard}")
        return [jobs[i:i + samples_per_shard] for i in range(0, len(jobs), samples_per_shard)]
    if shard_size < 1:
        raise UserError(f"--shard-size must be a positive number of bytes, got {shard_size}")
    groups: list[list[SampleJob]] = [[]]
    filled = 0
    for job in jobs:
        size = _estimated_bytes(job, data_dir)
        if groups[-1] and filled + size > shard_size:
            groups.append([])
            filled = 0
        groups[-1].append(job)
        filled += size
    return groups


def make_plan(entries: Sequence[ListEntry], seed: int, samples_per_shard: int | None, shard_size: int | None,
              data_dir: Path, settings: dict) -> list[ShardPlan]:
    """The full plan. `settings` (tool version, taxonomy hash, options...), the resolved data folder, and
    each sample's list line and source files' identities enter the digests, so changing any of them
    invalidates the shards they shape."""
    groups = cut(shuffled_jobs(entries, seed), samples_per_shard, shard_size, data_dir)
    base = json.dumps({**settings, "data_dir": str(Path(data_dir).resolve())}, sort_keys=True)
    plans = []
    for number, group in enumerate(groups):
        digest = hashlib.sha256(base.encode())
        for job in group:
            digest.update(f"\n{job.line_no} {job.key} {job.image} {job.label} {source_identity(data_dir, job.image)} "
                          f"{source_identity(data_dir, job.label)}".encode())
            if job.relabeled is not None:
                digest.update(f" {job.relabeled} {source_identity(data_dir, job.relabeled)}".encode())
        plans.append(ShardPlan(number, tuple(group), digest.hexdigest()))
    return plans
