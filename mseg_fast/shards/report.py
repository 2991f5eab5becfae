"""Human-readable summaries of a sharding run and of a shard directory's manifest."""

from __future__ import annotations

import sys
from pathlib import Path

from mseg_fast.shards.build import CODEC_STAGES, BuildSummary
from mseg_fast.shards.manifest import MANIFEST, read_manifest


def codec_share(summary: BuildSummary) -> float:
    """Share of the per-sample work spent in label decode, convert and encode."""
    total = sum(summary.stage_seconds.values())
    return sum(summary.stage_seconds[s] for s in CODEC_STAGES) / total if total else 0.0


def print_summary(summary: BuildSummary) -> None:
    rate = summary.samples_converted / summary.seconds if summary.seconds else 0.0
    print(f"{summary.directory} [{summary.split}]: {summary.samples} samples in "
          f"{summary.shards_written + summary.shards_reused} shards ({summary.shards_written} written, "
          f"{summary.shards_reused} reused), {summary.bytes_written / 2**20:.1f} MiB, {summary.skipped} skipped; "
          f"{summary.samples_converted} converted in {summary.seconds:.1f} s ({rate:.1f} img/s)")
    total = sum(summary.stage_seconds.values())
    if total:
        shares = ", ".join(f"{stage} {100 * value / total:.0f}%" for stage, value in summary.stage_seconds.items())
        print(f"  worker time: {shares}; label codecs {100 * codec_share(summary):.0f}%")
    if summary.skipped:
        print(f"  skipped samples are listed in {summary.directory / MANIFEST} under splits.{summary.split}.skipped")
    if summary.duplicates:
        examples = ", ".join(f"line {line} repeats line {first}" for line, first in summary.duplicates[:3])
        print(f"warning: {summary.directory.name} {summary.split} list {summary.list_name}: {len(summary.duplicates)} "
              f"lines name an image/label pair already listed ({examples}); "
              f"each is sharded as often as it is listed (manifest: splits.{summary.split}.duplicate_pairs)",
              file=sys.stderr)
    for split in summary.dropped_splits:
        print(f"  note: split '{split}' was sharded with other settings (taxonomy/TSV/version) and was dropped "
              f"from the manifest; shard it again")


def describe(directory: Path, top: int = 5) -> str:
    """A few lines on what a shard directory holds: splits, samples, shards, sizes, top classes."""
    manifest = read_manifest(directory)
    if manifest is None:
        return f"{directory}: no manifest"
    lines = [f"{manifest['dataset']} -> {manifest['taxonomy']} ({manifest['num_classes']} classes, "
             f"{manifest['label_dtype']} labels)"]
    names = manifest["class_names"]
    for split, entry in manifest["splits"].items():
        height, width = entry["image_size"]["height"], entry["image_size"]["width"]
        pixels = entry["class_pixels"]
        labelled = sum(pixels) or 1
        best = sorted(range(len(pixels)), key=lambda i: -pixels[i])[:top]
        classes = ", ".join(f"{names[i]} {100 * pixels[i] / labelled:.0f}%" for i in best if pixels[i])
        lines.append(f"  {split}: {entry['samples']} samples in {len(entry['shards'])} shards, "
                     f"images {width['min']}-{width['max']} x {height['min']}-{height['max']} px, "
                     f"{len(entry['skipped'])} skipped; top classes: {classes}")
    return "\n".join(lines)
