"""One shard task: convert its samples, write tar + index, then the stats sidecar.

The sidecar is written last, after the tar and index are renamed into place, so its
presence with a matching plan digest and checksum means the shard is complete.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from mseg_fast.atomic import write_atomic
from mseg_fast.digest import file_sha256
from mseg_fast.errors import SampleError
from mseg_fast.shards.convert import ConvertOptions, convert_sample
from mseg_fast.shards.plan import ShardPlan
from mseg_fast.shards.tarwriter import ShardWriter

STAGES = ("read", "image_check", "label_decode", "convert", "label_encode", "write")


def shard_paths(directory: Path, plan: ShardPlan, split: str) -> tuple[Path, Path, Path]:
    stem = plan.stem(split)
    return directory / f"{stem}.tar", directory / f"{stem}.idx", directory / f"{stem}.stats.json"


class _Throttled:
    """Batch progress updates: at most a few a second per worker, not one per sample."""

    def __init__(self, report: Callable[[int], None], interval: float = 0.25):
        self.report, self.interval, self.pending, self.last = report, interval, 0, time.monotonic()

    def __call__(self, count: int) -> None:
        self.pending += count
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.report(self.pending)
        self.pending, self.last = 0, time.monotonic()


def is_done(directory: Path, plan: ShardPlan, split: str) -> bool:
    tar_path, idx_path, stats_path = shard_paths(directory, plan, split)
    if not (tar_path.exists() and idx_path.exists() and stats_path.exists()):
        return False
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return stats.get("plan_sha256") == plan.digest and stats.get("sha256") == file_sha256(tar_path)


def write_shard(plan: ShardPlan, directory: Path, split: str, options: ConvertOptions, skip_bad: bool,
                *, progress: Callable[[int], None]) -> dict[str, float]:
    """Convert and write one shard with its index and stats sidecar.

    Returns:
        Seconds spent per stage.
    """
    cv2.setNumThreads(1)  # parallelism comes from worker processes
    progress = _Throttled(progress)
    tar_path, idx_path, stats_path = shard_paths(directory, plan, split)
    seconds = dict.fromkeys(STAGES, 0.0)
    class_pixels = np.zeros(options.target.num_classes, np.int64)
    ignore_pixels, sizes, exts, skipped = 0, [], set(), []
    writer = ShardWriter(tar_path, idx_path)
    try:
        for job in plan.jobs:
            try:
                sample = convert_sample(job, options)
            except SampleError as error:
                if not skip_bad:
                    raise
                skipped.append({"key": job.key, "line": job.line_no, "image": job.image, "label": job.label,
                                "reason": f"{error.problem} ({Path(error.path).name})"})
                progress(1)
                continue
            start = time.perf_counter()
            writer.add(sample.key, sample.components)
            seconds["write"] += time.perf_counter() - start
            for stage, value in sample.seconds.items():
                seconds[stage] += value
            class_pixels += sample.class_pixels
            ignore_pixels += sample.ignore_pixels
            sizes.append([sample.height, sample.width])
            exts.add(sample.image_ext)
            progress(1)
    except BaseException:
        writer.abort()
        raise
    finally:
        progress.flush()
    sha256, nbytes = writer.commit()
    stats = {
        "file": tar_path.name, "index": idx_path.name, "samples": len(sizes), "sha256": sha256, "bytes": nbytes,
        "plan_sha256": plan.digest, "image_exts": sorted(exts), "sizes": sizes,
        "class_pixels": class_pixels.tolist(), "ignore_pixels": ignore_pixels, "skipped": skipped,
    }
    write_atomic(stats_path, json.dumps(stats).encode("utf-8"))
    return seconds
