"""MSeg's taxonomies: the universal one (MSeg_master.tsv), the naive merge, and lookup tables.

Pure functions over class-name lists and the master TSV; reading dataset folders is
`targets.py`'s job. Rules follow MSEG_REFERENCE.md §2. One deliberate difference from
mseg-api: a table slot that no class maps to holds UNMAPPED, and converting a label that
contains such a value is an error. mseg-api fills those slots with 0 (`backpack`), which
silently corrupts labels (reference §9, item 3).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.digest import file_sha256
from mseg_fast.errors import UserError
from mseg_fast.textfile import read_text

UNMAPPED = -1
UNIVERSAL_COLUMN = "universal"
UNLABELED_NAME = "unlabeled"
# Source label maps are 8-bit PNGs, so a table indexed by pixel value has 256 slots.
TABLE_SIZE = 256


def read_names(path: Path) -> tuple[str, ...]:
    """Read a `<name>_names.txt` file: one class name a line, line index = class id.

    Several mseg-api names files use CRLF endings and some lack a final newline, so lines
    are split with `splitlines` (which also drops `\\r`).
    """
    try:
        text = read_text(path, "class-names file")
    except FileNotFoundError:
        raise UserError(f"class-names file {path} does not exist; check --mseg-api") from None
    names = tuple(text.splitlines())
    if not names:
        raise UserError(f"class-names file {path} is empty; it needs one class name per line")
    return names


@dataclass(frozen=True)
class MasterTsv:
    """The parsed MSeg_master.tsv: every cell a plain string (empty cells stay empty)."""

    path: Path
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    sha256: str

    def has_column(self, name: str) -> bool:
        return name in self.header

    def column(self, name: str) -> tuple[str, ...]:
        if name not in self.header:
            raise UserError(
                f"{self.path} has no column '{name}'. Add a column with that header that names, "
                f"in each universal row, the dataset classes that belong to it (see docs/data.md, "
                f"'Adding your own dataset')."
            )
        index = self.header.index(name)
        return tuple(row[index] for row in self.rows)


def read_master_tsv(path: Path) -> MasterTsv:
    """Parse a master TSV in MSeg_master.tsv's format (tab-separated, one header row)."""
    path = Path(path)
    try:
        text = read_text(path, "taxonomy TSV")
        # QUOTE_NONE: cells are plain strings; MSeg read them with NA parsing off.
        table = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    except FileNotFoundError:
        raise UserError(f"taxonomy TSV {path} does not exist; check --mseg-api or --tsv") from None
    table = [row for row in table if row]
    if len(table) < 2:
        raise UserError(f"taxonomy TSV {path} has no data rows")
    header = tuple(table[0])
    for line_no, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            raise UserError(
                f"{path}:{line_no}: {len(row)} tab-separated cells, the header has {len(header)}; "
                f"every row needs one cell per column (empty cells are allowed)"
            )
    if UNIVERSAL_COLUMN not in header:
        raise UserError(f"{path} has no '{UNIVERSAL_COLUMN}' column")
    return MasterTsv(path, header, tuple(tuple(r) for r in table[1:]), file_sha256(path))


def universal_row_ids(tsv: MasterTsv) -> list[int]:
    """Universal id of each TSV row: its index, except the `unlabeled` row, which is 255."""
    names = [cell.strip() for cell in tsv.column(UNIVERSAL_COLUMN)]
    seen: set[str] = set()
    for line_no, name in enumerate(names, start=2):
        if not name:
            raise UserError(f"{tsv.path}:{line_no}: empty '{UNIVERSAL_COLUMN}' cell")
        if name in seen:
            raise UserError(f"{tsv.path}:{line_no}: universal class '{name}' appears twice")
        seen.add(name)
    ids = [IGNORE_LABEL if name == UNLABELED_NAME else i for i, name in enumerate(names)]
    real = [i for i in ids if i != IGNORE_LABEL]
    if real != list(range(len(real))) or len(real) > IGNORE_LABEL:
        raise UserError(
            f"{tsv.path}: the '{UNLABELED_NAME}' row must be the last row and there must be at most "
            f"{IGNORE_LABEL} universal classes, so that ids are 0..N-1 with 255 for unlabeled"
        )
    return ids


def universal_names(tsv: MasterTsv) -> tuple[str, ...]:
    """The universal class names in id order (MSeg: 194 names, `unlabeled` excluded)."""
    names = [cell.strip() for cell in tsv.column(UNIVERSAL_COLUMN)]
    ids = universal_row_ids(tsv)
    return tuple(name for name, uid in zip(names, ids) if uid != IGNORE_LABEL)


def parse_train_cell(cell: str, where: str) -> list[str]:
    """Class names listed in a training-dataset cell: empty, `name`, or `{a, b, c}`."""
    if cell != cell.strip():
        raise UserError(f"{where}: cell {cell!r} has leading or trailing whitespace; remove it")
    if not cell:
        return []
    if cell.startswith("{"):
        return [piece.strip() for piece in cell[1:-1].split(",")]
    return [cell]


def _new_table(size: int = TABLE_SIZE) -> np.ndarray:
    table = np.full(size, UNMAPPED, dtype=np.int32)
    table[IGNORE_LABEL] = IGNORE_LABEL
    return table


def universal_table(tsv: MasterTsv, dataset: str, dataset_names: Sequence[str]) -> np.ndarray:
    """Lookup table dataset id -> universal id for one training taxonomy (reference §2.4).

    Returns:
        int32 array of 256 slots; 255 maps to 255; slots of no class hold UNMAPPED.
    """
    cells = tsv.column(dataset)
    index_of = {name: i for i, name in enumerate(dataset_names)}
    table = _new_table()
    for row_no, (cell, uid) in enumerate(zip(cells, universal_row_ids(tsv)), start=2):
        where = f"{tsv.path}:{row_no}, column '{dataset}'"
        for name in parse_train_cell(cell, where):
            if name not in index_of:
                raise UserError(f"{where}: class '{name}' is not in {dataset}'s names file")
            class_id = index_of[name]
            if table[class_id] not in (UNMAPPED, uid):
                raise UserError(f"{where}: class '{name}' is listed in two universal rows")
            table[class_id] = uid
    return table


def naive_names(datasets_names: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """Naive-merge class list (reference §2.7): lower-cased names in first-seen order.

    Args:
        datasets_names: the names files of the merged datasets, in MSeg's order.

    Returns:
        One name per id; id 255 is never a class, so slot 255 holds "".
    """
    slots: list[str] = []
    seen: set[str] = set()
    for names in datasets_names:
        for name in names:
            lowered = name.lower()
            if lowered in seen:
                continue
            seen.add(lowered)
            slots.append(lowered)
            if len(slots) == IGNORE_LABEL:
                slots.append("")
    return tuple(slots)


def naive_table(dataset_names: Sequence[str], naive: Sequence[str]) -> np.ndarray:
    """Lookup table dataset id -> naive id (every class maps by its lower-cased name)."""
    id_of = {name: i for i, name in enumerate(naive) if name}
    table = _new_table()
    for class_id, name in enumerate(dataset_names):
        table[class_id] = id_of[name.lower()]
    return table


def self_table(num_classes: int) -> np.ndarray:
    """Identity table for a dataset's own taxonomy (oracle training)."""
    if num_classes > IGNORE_LABEL:
        raise UserError(
            f"a dataset with {num_classes} classes cannot keep its own taxonomy in 8-bit labels "
            f"with {IGNORE_LABEL} as ignore; use its semseg-format variant"
        )
    table = _new_table()
    table[:num_classes] = np.arange(num_classes)
    return table


def test_matrix(tsv: MasterTsv, test_dataset: str, test_names: Sequence[str]) -> np.ndarray:
    """Binary K_t x U matrix mapping universal classes to a test taxonomy (reference §2.6).

    P[i, j] = 1 iff universal row j's cell in the test column names test class i.
    """
    cells = tsv.column(test_dataset)
    index_of = {name: i for i, name in enumerate(test_names)}
    ids = universal_row_ids(tsv)
    num_universal = sum(1 for uid in ids if uid != IGNORE_LABEL)
    matrix = np.zeros((len(test_names), num_universal), dtype=np.uint8)
    for row_no, (cell, uid) in enumerate(zip(cells, ids), start=2):
        name = cell.strip()
        if not name or uid == IGNORE_LABEL:
            continue
        if name not in index_of:
            raise UserError(
                f"{tsv.path}:{row_no}, column '{test_dataset}': '{name}' is not a {test_dataset} class"
            )
        matrix[index_of[name], uid] = 1
    return matrix


def apply_table(label: np.ndarray, table: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    """Convert a label map through a lookup table; caller has checked for UNMAPPED values."""
    return table.astype(out_dtype)[label]
