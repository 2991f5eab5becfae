"""Turn one list entry into the components of one shard sample.

Per sample: read the image bytes (kept as they are) and check they decode; decode the
label, check its size against the image and every value against the lookup table, convert
it, and encode it as PNG. Stage times are returned for the benchmark.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.errors import SampleError, os_hint
from mseg_fast.shards import codecs
from mseg_fast.targets import Target
from mseg_fast.taxonomy import UNMAPPED

LABEL_EXT = "label.png"
RELABELED_EXT = "relabeled.png"  # the relabeled label of a val image, in the same taxonomy (§7.6)
META_EXT = "json"
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_STEM = 80  # ustar names stop at 100 bytes: 8-digit index + '_' + stem + '.label.png'


@dataclass(frozen=True)
class SampleJob:
    """One list entry, with the key it gets in the shards.

    Attributes:
        line_no: 1-based line of the list file (for error messages).
        key: unique sample key, no dots or slashes.
        image, label: paths relative to the dataset's data folder.
        relabeled: the image's relabeled label, sharded beside the label, or None.
    """

    line_no: int
    key: str
    image: str
    label: str
    relabeled: str | None = None


def sample_key(position: int, image_rel: str) -> str:
    """Key = position in the list (unique) + the image's stem (readable); no dots."""
    stem = Path(image_rel).name.split(".")[0]
    return f"{position:08d}_{_KEY_UNSAFE.sub('_', stem)[:_MAX_STEM]}"


@dataclass(frozen=True)
class ConvertOptions:
    """What every sample of one shard set is converted with; `relabeled_target` converts the relabeled labels
    (the relabeled dataset's table into the same taxonomy) when they are sharded too."""

    dataset: str
    data_dir: Path
    target: Target
    relabeled_target: Target | None = None
    short_size: int | None = None
    jpeg_quality: int = 95


@dataclass
class Converted:
    """A converted sample: its tar components and statistics."""

    key: str
    components: list[tuple[str, bytes]]
    image_ext: str
    height: int
    width: int
    class_pixels: np.ndarray  # int64, one count per target class
    ignore_pixels: int
    seconds: dict[str, float] = field(default_factory=dict)


def _read(path: Path, what: str, line_no: int) -> bytes:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise SampleError(
            str(path), f"{what} file does not exist (list line {line_no})",
            "Check --data-root and the list file, or pass --skip-bad to leave the sample out.",
        ) from None
    except OSError as error:  # a loop of links, no permission, a disk's read error: the file exists but is unusable
        raise SampleError(str(path), f"{what} file cannot be read: {error.strerror or error} (list line {line_no})",
                          f"{os_hint(error.errno).capitalize()}, or pass --skip-bad to leave the sample out.") from None


def _histogram(label: np.ndarray) -> np.ndarray:
    if label.dtype == np.uint8:
        # calcHist is ~3x faster than bincount on 8-bit maps.
        return cv2.calcHist([label], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return np.bincount(label.ravel()).astype(np.int64)


def check_values(hist: np.ndarray, target: Target, dataset: str, path: str) -> None:
    """Refuse label values the lookup table does not map (MSeg would make them class 0)."""
    present = np.flatnonzero(hist)
    table = target.table
    bad = [int(v) for v in present if v >= len(table) or table[v] == UNMAPPED]
    if bad:
        shown = ", ".join(f"{target.describe_source_value(v)}: {int(hist[v])} px" for v in bad[:5])
        raise SampleError(
            path, f"label values not in the {dataset} -> {target.taxonomy} table: {shown}",
            f"The label is corrupt or from another taxonomy: fix or regenerate it (or the TSV column "
            f"for {dataset}), or pass --skip-bad to leave the sample out.",
        )


def convert_label(label: np.ndarray, target: Target) -> np.ndarray:
    """Gather through the table, into uint8 or uint16 as the taxonomy needs."""
    dtype = target.label_dtype
    if dtype == np.uint8 and label.dtype == np.uint8:
        # cv2.LUT is ~4x faster than a numpy gather on 8-bit maps.
        return cv2.LUT(label, target.table.astype(np.uint8))
    return target.table.astype(dtype)[label]


def source_identity(data_dir: Path, relative: str) -> str:
    """What a sample was made from, per source file: its size and modification time (ns). Recorded in the
    sample's json and in the shard plan's digest, so a changed source or another data root is seen by a
    rerun (the shard is rewritten) and by `--verify --data-root` (named)."""
    try:
        stat = (Path(data_dir) / relative).stat()
    except OSError:
        return "missing"  # reported, with its name, when the sample is converted
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _relabeled_png(job: SampleJob, options: ConvertOptions, size: tuple[int, int]) -> bytes:
    """The relabeled label, checked and converted like the label, as PNG."""
    path = options.data_dir / job.relabeled
    label = codecs.decode_label(_read(path, "relabeled label", job.line_no), str(path))
    if label.shape != size:
        raise SampleError(str(path), f"relabeled label is {label.shape[1]}x{label.shape[0]} (WxH) but its image is "
                                     f"{size[1]}x{size[0]}", "Pair each image with its own labels, or pass --skip-bad.")
    target = options.relabeled_target
    check_values(_histogram(label), target, f"{options.dataset}-relabeled", str(path))
    return codecs.encode_label(convert_label(label, target))


def convert_sample(job: SampleJob, options: ConvertOptions) -> Converted:
    """Read, check and convert one sample.

    Raises:
        SampleError: a file is missing, undecodable, of the wrong size or holds unknown values.
    """
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    image_path, label_path = options.data_dir / job.image, options.data_dir / job.label
    image_bytes = _read(image_path, "image", job.line_no)
    label_bytes = _read(label_path, "label", job.line_no)
    now = time.perf_counter(); seconds["read"] = now - start; start = now
    info = codecs.probe_image(image_bytes, str(image_path))
    now = time.perf_counter(); seconds["image_check"] = now - start; start = now
    label = codecs.decode_label(label_bytes, str(label_path))
    now = time.perf_counter(); seconds["label_decode"] = now - start; start = now
    if label.shape != (info.height, info.width):
        raise SampleError(
            str(label_path), f"label is {label.shape[1]}x{label.shape[0]} (WxH) but its image {image_path} is "
                             f"{info.width}x{info.height}", "Pair each image with its own label, or pass --skip-bad.",
        )
    hist = _histogram(label)
    check_values(hist, options.target, options.dataset, str(label_path))
    converted = convert_label(label, options.target)
    meta = {"dataset": options.dataset, "image": job.image, "label": job.label, "line": job.line_no,
            "sources": {"image": source_identity(options.data_dir, job.image),
                        "label": source_identity(options.data_dir, job.label)}}
    ext = info.ext
    extra = []
    if job.relabeled is not None:
        extra.append((RELABELED_EXT, _relabeled_png(job, options, (info.height, info.width))))
        meta["relabeled"] = job.relabeled
        meta["sources"]["relabeled"] = source_identity(options.data_dir, job.relabeled)
    if options.short_size and min(info.height, info.width) > options.short_size:
        image_bytes, converted = codecs.resize_short(
            image_bytes, converted, options.short_size, options.jpeg_quality, str(image_path))
        ext = "jpg"
        meta["source_size"] = [info.height, info.width]
        hist = None
    table_ids = options.target.table
    if hist is None:
        counts = _histogram(converted)
        target_ids, weights = np.arange(len(counts)), counts
    else:
        present = np.flatnonzero(hist)
        target_ids, weights = table_ids[present], hist[present]
    keep = target_ids != IGNORE_LABEL
    num_classes = options.target.num_classes
    class_pixels = np.bincount(target_ids[keep], weights=weights[keep], minlength=num_classes)[:num_classes]
    ignore_pixels = int(weights[~keep].sum())
    now = time.perf_counter(); seconds["convert"] = now - start; start = now
    label_png = codecs.encode_label(converted)
    seconds["label_encode"] = time.perf_counter() - start
    height, width = converted.shape
    meta["size"] = [height, width]
    components = [
        (ext, image_bytes),
        (LABEL_EXT, label_png),
        *extra,
        (META_EXT, json.dumps(meta, sort_keys=True).encode("utf-8")),
    ]
    return Converted(job.key, components, ext, height, width,
                     class_pixels.astype(np.int64), ignore_pixels, seconds)
