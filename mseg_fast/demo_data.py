"""Generate a small demo dataset tree in the MSeg on-disk layout, with its own taxonomy.

Everything here is made by the project (no MSeg file is copied): three datasets of
procedurally drawn scenes with matching label maps, their names and list files laid out
like mseg-api's `dataset_lists/`, a master TSV in MSeg_master.tsv's format, and a YAML
file registering the datasets (`--extra-datasets`). Layout under `root`:

    data/DemoStreets/images/{train,val}/*.jpg, labels/...png     (JPEG images, like ADE20K)
    data/DemoRooms/leftImg8bit/{train,val}/*.png, gtFine/...png  (PNG images, like Cityscapes)
    data/DemoFields/...
    data/DemoOutdoor/...     (a test set in a taxonomy of its own, for the zero-shot evaluation; val only)
    mseg-api/mseg/class_remapping_files/MSeg_master.tsv
    mseg-api/mseg/dataset_lists/<name>/<name>_names.txt, list/{train,val}.txt
    datasets.yaml
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from mseg_fast.constants import IGNORE_LABEL


@dataclass(frozen=True)
class DemoDataset:
    name: str
    root: str
    image_dir: str
    label_dir: str
    image_ext: str
    size: tuple[int, int]  # height, width
    classes: tuple[str, ...]
    counts: tuple[int, int]  # train, val


DATASETS = (
    DemoDataset("demo-streets", "DemoStreets", "images", "labels", "jpg", (360, 640),
                ("road", "sidewalk", "building", "sky", "car", "person", "tree", "bush", "ego vehicle"), (24, 8)),
    DemoDataset("demo-rooms", "DemoRooms", "leftImg8bit", "gtFine", "png", (384, 512),
                ("floor", "wall", "ceiling", "table", "chair", "window", "person"), (16, 6)),
    DemoDataset("demo-fields", "DemoFields", "photos", "annotations", "jpg", (320, 480),
                ("grass", "sky", "tree", "cow", "water", "road"), (16, 6)),
)

# A test set the demo model never trains on, in a taxonomy of its own (MSeg's zero-shot setting): outdoor
# scenes drawn like demo-streets' and demo-fields', labelled with coarser classes of their own.
TEST_DATASET = DemoDataset("demo-outdoor", "DemoOutdoor", "images", "labels", "jpg", (360, 640),
                           ("road", "pavement", "building", "sky", "vehicle", "person", "plants", "ground", "animal",
                            "water"), (0, 8))
# Its classes for the scenes' own ids (drawn as those datasets draw them); ego vehicle stays unlabelled.
TEST_FROM = {"demo-streets": (0, 1, 2, 3, 4, 5, 6, 6, IGNORE_LABEL), "demo-fields": (7, 3, 6, 8, 9, 0)}

# The demo's universal taxonomy: (universal name, {dataset: cell}) in MSeg_master.tsv's cell
# syntax; braces merge several dataset classes; the last row, `unlabeled`, maps to 255.
UNIVERSAL_ROWS = (
    ("road", {"demo-streets": "road", "demo-fields": "road", "demo-outdoor": "road"}),
    ("sidewalk_pavement", {"demo-streets": "sidewalk", "demo-outdoor": "pavement"}),
    ("building", {"demo-streets": "building", "demo-outdoor": "building"}),
    ("sky", {"demo-streets": "sky", "demo-fields": "sky", "demo-outdoor": "sky"}),
    ("car", {"demo-streets": "car", "demo-outdoor": "vehicle"}),
    ("person", {"demo-streets": "person", "demo-rooms": "person", "demo-outdoor": "person"}),
    ("vegetation", {"demo-streets": "{tree, bush}", "demo-fields": "tree", "demo-outdoor": "plants"}),
    ("terrain", {"demo-fields": "grass", "demo-outdoor": "ground"}),
    ("cow", {"demo-fields": "cow", "demo-outdoor": "animal"}),
    ("water_other", {"demo-fields": "water", "demo-outdoor": "water"}),
    ("floor", {"demo-rooms": "floor"}),
    ("wall", {"demo-rooms": "wall"}),
    ("ceiling", {"demo-rooms": "ceiling"}),
    ("table", {"demo-rooms": "table"}),
    ("chair_other", {"demo-rooms": "chair"}),
    ("window", {"demo-rooms": "window"}),
    ("unlabeled", {"demo-streets": "ego vehicle"}),
)


def _palette(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(30, 226, size=(n, 3)).astype(np.float32)


def _streets(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    label = np.full((h, w), 3, np.uint8)  # sky
    horizon = int(h * rng.uniform(0.35, 0.5))
    for _ in range(rng.integers(2, 5)):  # buildings
        x0 = int(rng.uniform(0, w * 0.8)); bw = int(rng.uniform(w * 0.1, w * 0.3))
        top = int(rng.uniform(h * 0.05, horizon * 0.8))
        cv2.rectangle(label, (x0, top), (x0 + bw, horizon), 2, -1)
    label[horizon:] = 1  # sidewalk
    road = np.array([[w * 0.15, h], [w * 0.45, horizon], [w * 0.55, horizon], [w * 0.85, h]], np.int32)
    cv2.fillPoly(label, [road], 0)
    for cls in (6, 7):  # tree, bush
        cx = int(rng.uniform(0, w)); cy = int(rng.uniform(horizon * 0.7, horizon * 1.1))
        cv2.circle(label, (cx, cy), int(rng.uniform(h * 0.05, h * 0.12)), cls, -1)
    for _ in range(rng.integers(1, 4)):  # cars
        cx = int(rng.uniform(w * 0.3, w * 0.7)); cy = int(rng.uniform(horizon + 10, h - 30))
        cw = int(rng.uniform(30, 90))
        cv2.rectangle(label, (cx - cw // 2, cy - cw // 3), (cx + cw // 2, cy + cw // 4), 4, -1)
    cx = int(rng.uniform(w * 0.1, w * 0.9)); cy = int(rng.uniform(horizon, h - 40))
    cv2.ellipse(label, (cx, cy), (8, 25), 0, 0, 360, 5, -1)  # person
    cv2.rectangle(label, (0, h - 12), (w - 1, h - 1), 8, -1)  # ego vehicle (-> unlabeled)
    label[:3, :] = IGNORE_LABEL  # an unannotated border, as real datasets have
    return label


def _rooms(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    label = np.full((h, w), 1, np.uint8)  # wall
    label[: int(h * rng.uniform(0.1, 0.2))] = 2  # ceiling
    label[int(h * rng.uniform(0.6, 0.75)):] = 0  # floor
    x0 = int(rng.uniform(0, w * 0.6))
    cv2.rectangle(label, (x0, int(h * 0.25)), (x0 + int(w * 0.25), int(h * 0.5)), 5, -1)  # window
    tx = int(rng.uniform(w * 0.1, w * 0.6))
    cv2.rectangle(label, (tx, int(h * 0.6)), (tx + int(w * 0.3), int(h * 0.75)), 3, -1)  # table
    cv2.rectangle(label, (tx - 40, int(h * 0.55)), (tx - 5, int(h * 0.85)), 4, -1)  # chair
    if rng.uniform() < 0.7:
        px = int(rng.uniform(w * 0.6, w * 0.9))
        cv2.ellipse(label, (px, int(h * 0.55)), (18, 60), 0, 0, 360, 6, -1)  # person
    return label


def _fields(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    label = np.full((h, w), 1, np.uint8)  # sky
    horizon = int(h * rng.uniform(0.3, 0.55))
    label[horizon:] = 0  # grass
    cv2.ellipse(label, (int(rng.uniform(0, w)), h), (int(w * 0.3), int(h * 0.2)), 0, 180, 360, 4, -1)  # water
    road = np.array([[w * 0.6, h], [w * 0.65, horizon], [w * 0.68, horizon], [w * 0.9, h]], np.int32)
    cv2.fillPoly(label, [road], 5)
    for _ in range(rng.integers(1, 4)):
        cv2.circle(label, (int(rng.uniform(0, w)), horizon), int(rng.uniform(15, 40)), 2, -1)  # tree
    for _ in range(rng.integers(1, 3)):
        cx, cy = int(rng.uniform(w * 0.1, w * 0.9)), int(rng.uniform(horizon + 20, h - 20))
        cv2.ellipse(label, (cx, cy), (28, 14), 0, 0, 360, 3, -1)  # cow
    return label


_DRAW = {"demo-streets": _streets, "demo-rooms": _rooms, "demo-fields": _fields}


def render(label: np.ndarray, palette: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An RGB picture of a label map: class colours, a lighting gradient and texture noise."""
    h, w = label.shape
    colours = np.vstack([palette, np.zeros((256 - len(palette), 3), np.float32)])
    image = colours[label]
    image[label == IGNORE_LABEL] = 20.0
    gradient = np.linspace(0.8, 1.15, h, dtype=np.float32)[:, None, None]
    noise = rng.normal(0.0, 12.0, size=(h, w, 1)).astype(np.float32)
    image = cv2.GaussianBlur(image * gradient + noise, (3, 3), 0)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_tsv(path: Path) -> None:
    columns = [d.name for d in (*DATASETS, TEST_DATASET)]
    header = ["Parent Category", *columns, "universal"]
    lines = ["\t".join(header)]
    for name, cells in UNIVERSAL_ROWS:
        lines.append("\t".join(["demo", *[cells.get(c, "") for c in columns], name]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def _write_test_set(root: Path, lists_root: Path, seed: int) -> None:
    """demo-outdoor's val split: scenes drawn and coloured as demo-streets' and demo-fields' are, labelled in
    the test set's own classes."""
    ds = TEST_DATASET
    meta_dir = lists_root / ds.name
    (meta_dir / "list").mkdir(parents=True, exist_ok=True)
    (meta_dir / f"{ds.name}_names.txt").write_text("\n".join(ds.classes) + "\n", encoding="utf-8")
    rng = np.random.default_rng([seed, 99])
    lines = []
    for i in range(ds.counts[1]):
        source = ("demo-streets", "demo-fields")[i % 2]
        number = next(k for k, d in enumerate(DATASETS) if d.name == source)
        palette = _palette(len(DATASETS[number].classes), np.random.default_rng([seed, number]))  # as in training
        label = _DRAW[source](rng, *ds.size)
        image = render(label, palette, rng)
        table = np.full(256, IGNORE_LABEL, np.uint8)
        table[:len(TEST_FROM[source])] = TEST_FROM[source]
        image_rel = f"{ds.image_dir}/val/{ds.name}_val_{i:04d}.jpg"
        label_rel = f"{ds.label_dir}/val/{ds.name}_val_{i:04d}.png"
        for rel, array, params in ((image_rel, image[:, :, ::-1], (cv2.IMWRITE_JPEG_QUALITY, 92)),
                                   (label_rel, table[label], ())):
            path = root / "data" / ds.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), array, params):
                raise OSError(f"could not write {path}")
        lines.append(f"{image_rel} {label_rel}")
    (meta_dir / "list" / "val.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_demo(root: Path, seed: int = 0) -> Path:
    """Write the demo tree under `root`; returns the path of its datasets.yaml."""
    root = Path(root)
    lists_root = root / "mseg-api" / "mseg" / "dataset_lists"
    write_tsv(root / "mseg-api" / "mseg" / "class_remapping_files" / "MSeg_master.tsv")
    registry = {}
    for number, ds in enumerate(DATASETS):
        rng = np.random.default_rng([seed, number])
        palette = _palette(len(ds.classes), rng)
        meta_dir = lists_root / ds.name
        (meta_dir / "list").mkdir(parents=True, exist_ok=True)
        (meta_dir / f"{ds.name}_names.txt").write_text("\n".join(ds.classes) + "\n", encoding="utf-8")
        for split, count in zip(("train", "val"), ds.counts):
            lines = []
            for i in range(count):
                image_rel = f"{ds.image_dir}/{split}/{ds.name}_{split}_{i:04d}.{ds.image_ext}"
                label_rel = f"{ds.label_dir}/{split}/{ds.name}_{split}_{i:04d}.png"
                label = _DRAW[ds.name](rng, *ds.size)
                image = render(label, palette, rng)
                image_params = (cv2.IMWRITE_JPEG_QUALITY, 92) if ds.image_ext == "jpg" else ()
                for rel, array, params in ((image_rel, image[:, :, ::-1], image_params), (label_rel, label, ())):
                    path = root / "data" / ds.root / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if not cv2.imwrite(str(path), array, params):
                        raise OSError(f"could not write {path}")
                lines.append(f"{image_rel} {label_rel}")
            (meta_dir / "list" / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        registry[ds.name] = {"root": ds.root}
    _write_test_set(root, lists_root, seed)
    registry[TEST_DATASET.name] = {"root": TEST_DATASET.root}
    registry_path = root / "datasets.yaml"
    registry_path.write_text(yaml.safe_dump(registry, sort_keys=False), encoding="utf-8")
    return registry_path
