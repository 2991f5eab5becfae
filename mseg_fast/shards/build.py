"""Write the shards of one (taxonomy, dataset, split): plan, convert in parallel, manifest.

Crash safety: each shard's tar and index are renamed into place when complete, then a
`<stem>.stats.json` sidecar records its plan digest, checksum and statistics. A rerun
reuses a shard only when its sidecar's digest matches the new plan and the tar's checksum
matches the sidecar, and redoes the rest; the manifest is assembled from the sidecars, so
it comes out identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import mseg_fast
from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.datasets import ListEntry
from mseg_fast.errors import UserError
from mseg_fast.shards import manifest as manifest_io
from mseg_fast.shards.convert import LABEL_EXT, META_EXT, RELABELED_EXT, ConvertOptions
from mseg_fast.shards.plan import ShardPlan, make_plan
from mseg_fast.shards.task import STAGES, is_done, shard_paths, write_shard
from mseg_fast.shards.workers import run_pool
from mseg_fast.targets import Target

CODEC_STAGES = ("label_decode", "convert", "label_encode")


@dataclass(frozen=True)
class ShardOptions:
    """How to cut and convert. Exactly one of samples_per_shard and shard_size is set."""

    seed: int = 0
    samples_per_shard: int | None = 256
    shard_size: int | None = None
    short_size: int | None = None
    jpeg_quality: int = 95
    skip_bad: bool = False
    workers: int = 1
    force: bool = False  # rewrite every shard, even those that match their sources


@dataclass
class BuildSummary:
    """What a run did, for the CLI's summary and the benchmark (not part of the manifest)."""

    directory: Path
    split: str
    samples: int = 0
    skipped: int = 0
    shards_written: int = 0
    shards_reused: int = 0
    samples_converted: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0  # until the first worker process was ready (0 without workers)
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    dropped_splits: list[str] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, line it repeats) of repeated pairs
    list_name: str = ""  # the list file the line numbers refer to


def _run(todo: list[ShardPlan], directory: Path, split: str, options: ConvertOptions, skip_bad: bool,
         workers: int, bar: tqdm, summary: BuildSummary) -> None:
    args = (directory, split, options, skip_bad)
    if workers <= 1 or len(todo) <= 1:
        results = [write_shard(plan, *args, progress=bar.update) for plan in todo]
    else:
        results, summary.startup_seconds = run_pool(write_shard, args, todo, min(workers, len(todo)), bar.update)
    for seconds in results:
        for stage, value in seconds.items():
            summary.stage_seconds[stage] += value


def _remove_split_files(directory: Path, split: str, keep: int | None = None) -> None:
    """Delete this split's shard files (all of them, or those numbered >= keep) and temporaries."""
    pattern = re.compile(rf"^{re.escape(split)}-(\d{{6}})\.(tar|idx|stats\.json)(\.tmp-\d+)?$")
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match and (keep is None or match.group(3) or int(match.group(1)) >= keep):
            path.unlink(missing_ok=True)


def duplicate_pairs(entries: list[ListEntry]) -> list[tuple[int, int]]:
    """(line, earlier line) for every list line that names an image/label pair already named."""
    first: dict[tuple[str, str], int] = {}
    repeats = []
    for entry in entries:
        pair = (entry.image, entry.label)
        if pair in first:
            repeats.append((entry.line_no, first[pair]))
        else:
            first[pair] = entry.line_no
    return repeats


def _stats(values: list[int]) -> dict:
    if not values:
        return {"min": None, "max": None, "mean": None}
    return {"min": min(values), "max": max(values), "mean": round(sum(values) / len(values), 2)}


def _split_entry(directory: Path, plans: list[ShardPlan], split: str, target: Target, list_name: str,
                 list_sha256: str, settings: dict, duplicates: list[tuple[int, int]]) -> dict:
    shards, sizes, exts, skipped = [], [], set(), []
    class_pixels = np.zeros(target.num_classes, np.int64)
    ignore_pixels = 0
    for plan in plans:
        stats = json.loads(shard_paths(directory, plan, split)[2].read_text(encoding="utf-8"))
        shards.append({k: stats[k] for k in ("file", "index", "samples", "sha256", "bytes")})
        sizes += stats["sizes"]
        exts.update(stats["image_exts"])
        skipped += stats["skipped"]
        class_pixels += np.asarray(stats["class_pixels"], np.int64)
        ignore_pixels += stats["ignore_pixels"]
    return {
        "split": split,
        "list": list_name,
        "list_sha256": list_sha256,
        # DALI's webdataset reader accepts alternatives as "jpg;png" when a dataset mixes formats.
        "components": {"image": ";".join(sorted(exts)) or "jpg", "label": LABEL_EXT, "meta": META_EXT,
                       **({"relabeled": RELABELED_EXT} if "relabeled_list" in settings else {})},
        "samples": sum(s["samples"] for s in shards),
        "shards": shards,
        "image_size": {"height": _stats([h for h, _ in sizes]), "width": _stats([w for _, w in sizes])},
        "class_pixels": class_pixels.tolist(),
        "ignore_pixels": ignore_pixels,
        "skipped": skipped,
        # A pair named twice is sharded twice (the list's weighting is kept), and said so.
        "duplicate_pairs": len(duplicates),
        "settings": settings,
    }


def common_fields(dataset: str, target: Target) -> dict:
    """Manifest fields shared by every split of a directory."""
    return {
        "format": manifest_io.FORMAT, "format_version": manifest_io.FORMAT_VERSION,
        "tool_version": mseg_fast.__version__, "dataset": dataset, "taxonomy": target.taxonomy,
        "num_classes": target.num_classes, "class_names": list(target.class_names),
        "label_dtype": target.label_dtype.name, "ignore_label": IGNORE_LABEL,
        "tsv_sha256": target.tsv_sha256, "taxonomy_sha256": target.sha256,
    }


def build_shards(entries: list[ListEntry], list_name: str, list_sha256: str, convert: ConvertOptions, split: str,
                 directory: Path, options: ShardOptions, show_progress: bool = True,
                 relabeled_list: tuple[str, str] | None = None) -> BuildSummary:
    """Write (or complete) the shards of one split and record them in the manifest.

    Args:
        entries: the list's samples, in file order.
        list_name, list_sha256: the list file's name and hash, for the manifest.
        convert: dataset, data folder, target taxonomy, resizing.
        split: split name, the shards' file prefix.
        directory: `<out>/<taxonomy>/<dataset>`; created if missing.
        options: cutting, seed, workers, skip-bad.
        relabeled_list: (name, sha256) of the relabeled list when the entries carry relabeled labels.

    Raises:
        SampleError: a bad sample without skip_bad; no shard file of this split is left behind.
    """
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    settings = {
        "seed": options.seed, "samples_per_shard": options.samples_per_shard, "shard_size": options.shard_size,
        "short_size": options.short_size, "jpeg_quality": options.jpeg_quality, "skip_bad": options.skip_bad,
    }
    if relabeled_list is not None:
        settings["relabeled_list"], settings["relabeled_list_sha256"] = relabeled_list
    digest_settings = {**settings, **common_fields(convert.dataset, convert.target), "list_sha256": list_sha256}
    plans = make_plan(entries, options.seed, options.samples_per_shard, options.shard_size, convert.data_dir,
                      digest_settings)
    _remove_split_files(directory, split, keep=0 if options.force else len(plans))
    todo = [plan for plan in plans if not is_done(directory, plan, split)]
    summary = BuildSummary(directory, split, shards_reused=len(plans) - len(todo), shards_written=len(todo))
    summary.samples_converted = sum(len(plan.jobs) for plan in todo)
    bar = tqdm(total=summary.samples_converted, unit="img", desc=f"{convert.dataset}/{split}", disable=not show_progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        _run(todo, directory, split, convert, options.skip_bad, options.workers, bar, summary)
    except BaseException:
        bar.close()
        _remove_split_files(directory, split)
        manifest_io.update_split(directory, common_fields(convert.dataset, convert.target), split, None)
        raise
    bar.close()
    duplicates = duplicate_pairs(entries)
    entry = _split_entry(directory, plans, split, convert.target, list_name, list_sha256, settings, duplicates)
    if entry["samples"] == 0:
        _remove_split_files(directory, split)
        manifest_io.update_split(directory, common_fields(convert.dataset, convert.target), split, None)
        reasons = "; ".join(f"{s.get('image', s)}: {s.get('reason', '')}" for s in entry["skipped"][:3])
        raise UserError(f"{convert.dataset}/{split}: every one of the {len(entry['skipped'])} samples was skipped as "
                        f"bad, so no shard was written (first: {reasons}). Fix the data or the list, or check "
                        f"--data-root")
    summary.dropped_splits = manifest_io.update_split(directory, common_fields(convert.dataset, convert.target),
                                                      split, entry)
    summary.samples, summary.skipped = entry["samples"], len(entry["skipped"])
    summary.duplicates, summary.list_name = duplicates, list_name
    summary.bytes_written = sum(s["bytes"] for s in entry["shards"])
    summary.seconds = time.perf_counter() - started
    return summary


def summary_dict(summary: BuildSummary) -> dict:
    data = asdict(summary)
    data["directory"] = str(summary.directory)
    return data
