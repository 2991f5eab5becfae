"""MSeg's datasets: taxonomy names, data roots, list files, aliases and user-added datasets.

Facts from MSEG_REFERENCE.md §1. A `DatasetSpec` is everything the sharder needs to find a
dataset's files; it is resolved once, at the CLI edge, from names and folders the user gives.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from mseg_fast.apiroot import dataset_lists_dir
from mseg_fast.errors import UserError
from mseg_fast.textfile import decode_text, read_text

# The 7 unrelabeled training datasets, in MSeg's order (also the naive merge's order).
UNRELABELED_TRAIN = (
    "ade20k-150", "bdd", "cityscapes-19", "coco-panoptic-133", "idd-39", "mapillary-public65", "sunrgbd-37",
)
# The relabeled training datasets; cityscapes-34-relabeled is used by no config.
RELABELED_TRAIN = (
    "ade20k-150-relabeled", "bdd-relabeled", "cityscapes-19-relabeled", "cityscapes-34-relabeled",
    "coco-panoptic-133-relabeled", "idd-39-relabeled", "mapillary-public65-relabeled", "sunrgbd-37-relabeled",
)
TRAIN_DATASETS = UNRELABELED_TRAIN + RELABELED_TRAIN
TEST_DATASETS = ("camvid-11", "kitti-19", "pascal-context-60", "scannet-20", "voc2012", "wilddash-19")

# Taxonomy name -> data root under the MSeg dataset folder (reference §1.2).
DATA_ROOTS = {
    **dict.fromkeys(("ade20k-151", "ade20k-150", "ade20k-150-relabeled"), "ADE20K/ADEChallengeData2016"),
    "ade20k-151-inst": "ADE20K/ADE20K_2016_07_26",
    **dict.fromkeys(("bdd", "bdd-relabeled"), "BDD/bdd100k"),
    **dict.fromkeys(("camvid-32", "camvid-11"), "Camvid"),
    **dict.fromkeys(
        ("cityscapes-34", "cityscapes-19", "cityscapes-19-relabeled", "cityscapes-34-relabeled"), "Cityscapes"
    ),
    **dict.fromkeys(
        ("coco-panoptic-inst-201", "coco-panoptic-201", "coco-panoptic-133", "coco-panoptic-133-relabeled"),
        "COCOPanoptic",
    ),
    **dict.fromkeys(("idd-40", "idd-39", "idd-39-relabeled"), "IDD/IDD_Segmentation"),
    **dict.fromkeys(("kitti-34", "kitti-19"), "KITTI"),
    **dict.fromkeys(("mapillary-public66", "mapillary-public65", "mapillary-public65-relabeled"), "MapillaryVistasPublic"),
    **dict.fromkeys(("pascal-context-460", "pascal-context-60"), "PASCAL_Context"),
    **dict.fromkeys(("scannet-41", "scannet-20"), "ScanNet/scannet_frames_25k"),
    **dict.fromkeys(("sunrgbd-38", "sunrgbd-37", "sunrgbd-37-relabeled"), "SUNRGBD"),
    "voc2012": "PASCAL_VOC_2012",
    **dict.fromkeys(("wilddash-19", "wilddash-34"), "WildDash"),
}

# Short names: training datasets resolve to the relabeled variant (MSeg's main recipe)
# unless --unrelabeled is given; test datasets have one variant.
TRAIN_ALIASES = {
    "ade20k": "ade20k-150", "bdd": "bdd", "cityscapes": "cityscapes-19", "coco": "coco-panoptic-133",
    "idd": "idd-39", "mapillary": "mapillary-public65", "sunrgbd": "sunrgbd-37",
}
TEST_ALIASES = {
    "camvid": "camvid-11", "kitti": "kitti-19", "pascal-context": "pascal-context-60",
    "scannet": "scannet-20", "voc": "voc2012", "wilddash": "wilddash-19",
}
ALL = "all"
SPLITS = ("train", "val", "val_small", "test", "trainval", "train_small", "fine_val", "fine_val_small")


@dataclass(frozen=True)
class DatasetSpec:
    """Where one dataset's files are.

    Attributes:
        name: taxonomy name, e.g. `mapillary-public65-relabeled`.
        data_dir: absolute folder that list paths are relative to.
        names_file: the `<name>_names.txt` class-names file.
        list_dir: folder that holds `<split>.txt` list files.
    """

    name: str
    data_dir: Path
    names_file: Path
    list_dir: Path

    def list_path(self, split: str) -> Path:
        return self.list_dir / f"{split}.txt"


@dataclass(frozen=True)
class ExtraDataset:
    """A user-registered dataset (from an `--extra-datasets` YAML file)."""

    root: str
    names: Path | None
    lists: Path | None


def load_extra_datasets(path: Path | None) -> dict[str, ExtraDataset]:
    """Read a YAML file registering datasets of the user's own (docs/data.md: 'Adding your own dataset').

    Each top-level key is a dataset name; its value holds `root` (a folder under --data-root,
    or absolute) and optionally `names` (class-names file) and `lists` (folder of
    `<split>.txt`), both relative to the YAML file's folder. Left out, they follow
    mseg-api's layout under --mseg-api.
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        raw = yaml.safe_load(read_text(path, "datasets file")) or {}
    except FileNotFoundError:
        raise UserError(f"extra-datasets file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"extra-datasets file {path} cannot be read ({error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UserError(f"{path}: not valid YAML: {getattr(error, 'problem', None) or error}{where}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of dataset name -> {{root, names, lists}}")
    extras = {}
    allowed = {"root", "names", "lists"}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or "root" not in entry:
            raise UserError(f"{path}: dataset '{name}' needs at least a 'root' key (its folder under --data-root)")
        unknown = set(entry) - allowed
        if unknown:
            raise UserError(f"{path}: dataset '{name}' has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        extras[str(name)] = ExtraDataset(
            root=str(entry["root"]),
            names=(path.parent / entry["names"]).resolve() if entry.get("names") else None,
            lists=(path.parent / entry["lists"]).resolve() if entry.get("lists") else None,
        )
    return extras


def known_names(extras: dict[str, ExtraDataset] | None = None) -> list[str]:
    """Every name `resolve_names` accepts: taxonomy names, aliases, `all`, extras."""
    return sorted(set(DATA_ROOTS) | set(TRAIN_ALIASES) | set(TEST_ALIASES) | {ALL} | set(extras or {}))


def resolve_names(name: str, unrelabeled: bool = False, extras: dict[str, ExtraDataset] | None = None) -> list[str]:
    """Turn a user-given dataset name into taxonomy names.

    Args:
        name: a taxonomy name, a short alias (`mapillary`), `all`, or a user dataset's name.
        unrelabeled: pick the unrelabeled labels for aliases and `all`.
        extras: user-registered datasets.

    Returns:
        One name, or the 7 training datasets for `all`.
    """
    extras = extras or {}
    if name in extras:
        return [name]
    if name == ALL:
        return [n if unrelabeled else f"{n}-relabeled" for n in UNRELABELED_TRAIN]
    if name in TRAIN_ALIASES:
        base = TRAIN_ALIASES[name]
        return [base if unrelabeled else f"{base}-relabeled"]
    if name in TEST_ALIASES:
        return [TEST_ALIASES[name]]
    if name in DATA_ROOTS:
        if unrelabeled and name.endswith("-relabeled"):
            raise UserError(
                f"--dataset {name} names relabeled labels but --unrelabeled was given; "
                f"use --dataset {name[: -len('-relabeled')]} (or drop --unrelabeled)"
            )
        return [name]
    close = difflib.get_close_matches(name, known_names(extras), n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UserError(
        f"unknown dataset '{name}'.{hint} Valid names: the short names {', '.join(sorted(TRAIN_ALIASES))} "
        f"(relabeled unless --unrelabeled), {', '.join(sorted(TEST_ALIASES))}, '{ALL}', any mseg-api "
        f"taxonomy name (e.g. mapillary-public65-relabeled), or a dataset registered with --extra-datasets."
    )


def build_spec(name: str, data_root: Path, api_root: Path, extras: dict[str, ExtraDataset] | None = None) -> DatasetSpec:
    """Locate one dataset's data folder, class names and lists; check the folder exists."""
    extras = extras or {}
    lists_dir = dataset_lists_dir(api_root) / name
    if name in extras:
        extra = extras[name]
        root = extra.root
        names_file = extra.names or lists_dir / f"{name}_names.txt"
        list_dir = extra.lists or lists_dir / "list"
    else:
        root = DATA_ROOTS[name]
        names_file = lists_dir / f"{name}_names.txt"
        list_dir = lists_dir / "list"
    data_dir = (Path(data_root) / root).resolve()
    if not data_dir.is_dir():
        raise UserError(
            f"data root {Path(data_root).resolve()} has no folder '{root}' for {name}. --data-root must be "
            f"the MSeg dataset folder (the one that holds ADE20K/, BDD/, Cityscapes/, ...), laid out as "
            f"mseg-api's download scripts leave it."
        )
    return DatasetSpec(name=name, data_dir=data_dir, names_file=names_file, list_dir=list_dir)


@dataclass(frozen=True)
class ListEntry:
    """One line of a list file: paths relative to the dataset's data folder; `relabeled`, the same image's
    relabeled label (for MSeg's relabeled evaluation protocol, §7.6), when it is sharded beside."""

    line_no: int
    image: str
    label: str
    relabeled: str | None = None


def read_list(path: Path, dataset: str, split: str) -> tuple[list[ListEntry], str]:
    """Read a list file (`image_rel label_rel` per line, reference §1.3).

    Returns:
        The entries in file order, and the sha256 of the file.
    """
    path = Path(path)
    if not path.is_file():
        hint = ""
        if dataset.startswith("coco-panoptic") and split == "train":
            folder = "semantic_relabeled133" if dataset.endswith("relabeled") else "semantic_annotations133"
            hint = (
                f" mseg-api's public snapshot has no COCO train lists: write one line per image, "
                f"'images/train2017/<id>.jpg {folder}/train2017/<id>.png', and pass it with --list FILE "
                f"(with --dataset all: --list {dataset}=FILE)."
            )
        raise UserError(f"list file {path} for {dataset} split '{split}' does not exist.{hint} "
                        f"Pass --list FILE to use a list of your own.")
    data = path.read_bytes()
    text = decode_text(data, path, "list file (lines 'image_path label_path')")
    entries = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(" ")
        if len(fields) != 2 or not all(fields):
            raise UserError(
                f"{path}:{line_no}: expected 'image_path label_path' (two paths separated by one space), "
                f"got {line!r}"
            )
        entries.append(ListEntry(line_no, fields[0], fields[1]))
    if not entries:
        raise UserError(f"list file {path} is empty; it needs one 'image_path label_path' line per sample")
    return entries, hashlib.sha256(data).hexdigest()


def relabeled_name(dataset: str) -> str:
    """The relabeled counterpart of an unrelabeled training dataset (coco-panoptic-133 ->
    coco-panoptic-133-relabeled).

    Raises:
        UserError: the dataset has none.
    """
    if dataset.endswith("-relabeled") or f"{dataset}-relabeled" not in DATA_ROOTS:
        unrelabeled = ", ".join(n for n in DATA_ROOTS if f"{n}-relabeled" in DATA_ROOTS)
        raise UserError(f"--with-relabeled stores relabeled val labels beside an unrelabeled training dataset's "
                        f"({unrelabeled}); '{dataset}' is not one (short names need --unrelabeled)")
    return f"{dataset}-relabeled"


def pair_relabeled(entries: list[ListEntry], relabeled: list[ListEntry], path: Path,
                   relabeled_path: Path) -> list[ListEntry]:
    """The unrelabeled list's entries, each with the relabeled label of the same line (MSeg aligns the two
    val lists line by line; here the images must also agree, so a misaligned list is refused, not scored).

    Raises:
        UserError: the lists differ in length or name another image on some line.
    """
    if len(entries) != len(relabeled):
        raise UserError(f"{relabeled_path} has {len(relabeled)} samples and {path} {len(entries)}: the relabeled "
                        f"list must name the same images in the same order")
    paired = []
    for entry, other in zip(entries, relabeled):
        if entry.image != other.image:
            raise UserError(f"{relabeled_path}:{other.line_no} names {other.image} where {path}:{entry.line_no} "
                            f"names {entry.image}: the relabeled list must name the same images in the same order")
        paired.append(ListEntry(entry.line_no, entry.image, entry.label, other.label))
    return paired
