"""The training taxonomy of one dataset: class names plus the lookup table into them.

`build_target` joins taxonomy.py (pure rules) with the files of an mseg-api root. The
trainer uses the same function to know class names and counts, so shards and model agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mseg_fast import taxonomy
from mseg_fast.apiroot import dataset_lists_dir, master_tsv_path
from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.datasets import UNRELABELED_TRAIN, DatasetSpec
from mseg_fast.errors import UserError

TAXONOMIES = ("universal", "naive", "self")


@dataclass(frozen=True)
class Target:
    """Labels of one dataset expressed in one training taxonomy.

    Attributes:
        taxonomy: `universal`, `naive` or `self`.
        class_names: one name per class id (the naive list has an empty slot 255).
        table: int32 lookup, source id -> target id, UNMAPPED where no class maps.
        source_names: the dataset's own class names (to name values in error messages).
        tsv_sha256: hash of the master TSV for `universal`, else None.
        sha256: hash of the target class list, to refuse mixing taxonomies later.
    """

    taxonomy: str
    class_names: tuple[str, ...]
    table: np.ndarray
    source_names: tuple[str, ...]
    tsv_sha256: str | None
    sha256: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label_dtype(self) -> np.dtype:
        """uint8 while every id fits in a byte beside 255, else uint16 (naive: ids up to 315)."""
        return np.dtype(np.uint16 if self.num_classes > IGNORE_LABEL else np.uint8)

    def describe_source_value(self, value: int) -> str:
        if value < len(self.source_names):
            return f"{value} ('{self.source_names[value]}')"
        return f"{value} (the dataset has {len(self.source_names)} classes, 0..{len(self.source_names) - 1}, and 255)"


def names_sha256(names: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def naive_class_names(api_root: Path) -> tuple[str, ...]:
    """The naive-merge taxonomy over MSeg's 7 unrelabeled datasets (316 slots)."""
    lists = dataset_lists_dir(api_root)
    return taxonomy.naive_names([taxonomy.read_names(lists / n / f"{n}_names.txt") for n in UNRELABELED_TRAIN])


def build_target(kind: str, spec: DatasetSpec, api_root: Path, tsv_path: Path | None = None) -> Target:
    """Class names and lookup table of `spec`'s labels in taxonomy `kind`.

    Args:
        kind: `universal` (the master TSV), `naive` (MSeg's naive merge) or `self`.
        spec: the dataset.
        api_root: mseg-api root (names files, default TSV).
        tsv_path: a master TSV other than mseg-api's (e.g. with a column for your dataset).
    """
    source = taxonomy.read_names(spec.names_file)
    if kind == "universal":
        tsv = taxonomy.read_master_tsv(tsv_path or master_tsv_path(api_root))
        names = taxonomy.universal_names(tsv)
        table = taxonomy.universal_table(tsv, spec.name, source)
        return Target(kind, names, table, source, tsv.sha256, names_sha256(names))
    if kind == "naive":
        if spec.name not in UNRELABELED_TRAIN:
            raise UserError(
                f"the naive taxonomy merges MSeg's 7 unrelabeled datasets ({', '.join(UNRELABELED_TRAIN)}); "
                f"{spec.name} is not one of them. Add --unrelabeled, or pick --taxonomy universal."
            )
        names = naive_class_names(api_root)
        return Target(kind, names, taxonomy.naive_table(source, names), source, None, names_sha256(names))
    if kind == "self":
        return Target(kind, source, taxonomy.self_table(len(source)), source, None, names_sha256(source))
    raise UserError(f"unknown taxonomy '{kind}'; choose one of {', '.join(TAXONOMIES)}")
