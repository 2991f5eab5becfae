"""Taxonomy tables against the real mseg-api files and the reference's worked examples (§2)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mseg_fast import taxonomy as tax
from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.datasets import RELABELED_TRAIN, TEST_DATASETS, TRAIN_DATASETS, UNRELABELED_TRAIN, DatasetSpec
from mseg_fast.errors import SampleError, UserError
from mseg_fast.shards.convert import check_values, convert_label
from mseg_fast.targets import build_target, naive_class_names

# Reference §2.4: distinct universal ids reachable from each training taxonomy.
COVERAGE = {
    "ade20k-150": 117, "bdd": 19, "cityscapes-19": 19, "coco-panoptic-133": 122, "idd-39": 25,
    "mapillary-public65": 44, "sunrgbd-37": 37, "ade20k-150-relabeled": 141, "bdd-relabeled": 21,
    "cityscapes-19-relabeled": 21, "cityscapes-34-relabeled": 26, "coco-panoptic-133-relabeled": 155,
    "idd-39-relabeled": 30, "mapillary-public65-relabeled": 51, "sunrgbd-37-relabeled": 48,
}
# Reference §2.4: dataset classes in the `unlabeled` row, sent to 255.
TO_IGNORE = {
    "ade20k-150": [10, 32, 42, 47, 80, 90, 107, 116, 124],
    "idd-39": [5, 7, 18, 28, 34, 35, 36, 37, 38],
    "mapillary-public65": [36, 41, 59, 63, 64],
}


@pytest.fixture(scope="module")
def tsv(mseg_api):
    return tax.read_master_tsv(mseg_api / "mseg" / "class_remapping_files" / "MSeg_master.tsv")


def names_of(mseg_api: Path, name: str) -> tuple[str, ...]:
    return tax.read_names(mseg_api / "mseg" / "dataset_lists" / name / f"{name}_names.txt")


def table_of(tsv, mseg_api, name):
    return tax.universal_table(tsv, name, names_of(mseg_api, name))


def test_universal_names(tsv):
    names = tax.universal_names(tsv)
    assert len(names) == 194
    for uid, name in {0: "backpack", 35: "building", 57: "chair_other", 67: "table", 98: "road",
                      100: "sidewalk_pavement", 125: "person", 126: "rider_other", 127: "bicyclist",
                      128: "motorcyclist", 142: "sky", 143: "pole", 174: "vegetation", 175: "bicycle",
                      176: "car", 191: "wall", 193: "window_blind"}.items():
        assert names[uid] == name


@pytest.mark.parametrize("name", TRAIN_DATASETS)
def test_every_training_taxonomy(tsv, mseg_api, name):
    names = names_of(mseg_api, name)
    table = tax.universal_table(tsv, name, names)
    k = len(names)
    assert (table[:k] != tax.UNMAPPED).all(), "every class of a training taxonomy is mapped"
    assert table[IGNORE_LABEL] == IGNORE_LABEL
    # MSeg leaves these slots at 0 (backpack); we mark them so conversion refuses them.
    assert (table[k:IGNORE_LABEL] == tax.UNMAPPED).all()
    assert len(set(table[:k].tolist()) - {IGNORE_LABEL}) == COVERAGE[name]
    assert [i for i in range(k) if table[i] == IGNORE_LABEL] == TO_IGNORE.get(name, [])
    # §2.2: the column names each class of the names file exactly once.
    column = [n for cell in tsv.column(name) for n in tax.parse_train_cell(cell, name)]
    assert Counter(column) == Counter(names)


@pytest.mark.parametrize("name", [n for n in RELABELED_TRAIN])
def test_relabeled_classes_map_to_their_own_name(tsv, mseg_api, name):
    names = names_of(mseg_api, name)
    universal = tax.universal_names(tsv)
    table = tax.universal_table(tsv, name, names)
    assert list(names) == sorted(names)
    assert [universal[table[i]] for i in range(len(names))] == list(names)


def test_unions_cover_all_universal_classes(tsv, mseg_api):
    for group in (UNRELABELED_TRAIN, [n for n in RELABELED_TRAIN if n != "cityscapes-34-relabeled"]):
        reached = set()
        for name in group:
            reached |= set(table_of(tsv, mseg_api, name).tolist())
        assert reached - {IGNORE_LABEL, tax.UNMAPPED} == set(range(194))


def test_cityscapes_tables(tsv, mseg_api):
    expected = [98, 100, 35, 191, 144, 143, 136, 135, 174, 102, 142, 125, 127, 176, 182, 180, 181, 178, 175]
    assert table_of(tsv, mseg_api, "cityscapes-19")[:19].tolist() == expected
    relabeled = [175, 127, 35, 180, 176, 144, 178, 128, 125, 143, 126, 98, 100, 142, 102, 136, 135, 181, 182, 174, 191]
    assert table_of(tsv, mseg_api, "cityscapes-19-relabeled")[:21].tolist() == relabeled
    assert table_of(tsv, mseg_api, "bdd-relabeled")[:21].tolist() == relabeled


def test_worked_examples(tsv, mseg_api):
    assert table_of(tsv, mseg_api, "bdd")[12] == 126  # rider -> rider_other
    idd = table_of(tsv, mseg_api, "idd-39")
    assert idd[8] == 128 and idd[[0, 1, 2]].tolist() == [98, 98, 98]
    assert (idd[4], idd[15], idd[19], idd[27]) == (97, 176, 100, 143)
    mapillary = names_of(mseg_api, "mapillary-public65")
    mtable = table_of(tsv, mseg_api, "mapillary-public65")
    road_cell = ["Pothole", "Parking", "Road", "Bike Lane", "Service Lane", "Crosswalk - Plain",
                 "Lane Marking - General", "Lane Marking - Crosswalk"]
    assert {int(mtable[mapillary.index(n)]) for n in road_cell} == {98}
    assert mtable[[0, 20, 21, 22, 63]].tolist() == [6, 127, 128, 126, IGNORE_LABEL]
    coco = names_of(mseg_api, "coco-panoptic-133")
    ctable = table_of(tsv, mseg_api, "coco-panoptic-133")
    assert ctable[41] == ctable[113] == 67
    walls = ["wall-brick", "wall-stone", "wall-tile", "wall-wood", "wall-other-merged"]
    assert {int(ctable[coco.index(n)]) for n in walls} == {191}
    ade = names_of(mseg_api, "ade20k-150")
    atable = table_of(tsv, mseg_api, "ade20k-150")
    assert {int(atable[ade.index(n)]) for n in ("flower", "tree", "palm")} == {174}
    assert atable[78] == 178  # minibike -> motorcycle


def test_naive_taxonomy(mseg_api):
    naive = naive_class_names(mseg_api)
    assert len(naive) == 316 and naive[255] == "" and sum(1 for n in naive if n) == 315
    for name, nid in {"airplane": 0, "car": 33, "person": 87, "road": 101, "sky": 118, "wall": 144, "rider": 153,
                      "bird": 196, "toothbrush": 250, "parking": 251, "autorickshaw": 256, "motorcyclist": 279,
                      "night stand": 315}.items():
        assert naive.index(name) == nid
    mapillary = names_of(mseg_api, "mapillary-public65")
    table = tax.naive_table(mapillary, naive)
    coco = names_of(mseg_api, "coco-panoptic-133")  # lower-casing merges Mapillary's Bird with COCO's bird
    assert table[mapillary.index("Bird")] == 196 == tax.naive_table(coco, naive)[coco.index("bird")]
    assert table[mapillary.index("Car Mount")] != IGNORE_LABEL  # the unlabeled row is not consulted
    idd = names_of(mseg_api, "idd-39")
    assert tax.naive_table(idd, naive)[35] == naive.index("ego vehicle")
    assert tax.naive_table(names_of(mseg_api, "ade20k-150"), naive)[names_of(mseg_api, "ade20k-150").index("road")] == 101


def test_motorcyclist_label_converts(tsv, mseg_api):
    """Reference §8 item 3: a 4x4 Motorcyclist map -> 128 (universal) / motorcyclist (naive)."""
    spec = DatasetSpec("mapillary-public65", Path("."), mseg_api / "mseg/dataset_lists/mapillary-public65/"
                       "mapillary-public65_names.txt", Path("."))
    label = np.full((4, 4), 21, np.uint8)
    universal = build_target("universal", spec, mseg_api)
    naive = build_target("naive", spec, mseg_api)
    assert (convert_label(label, universal) == 128).all()
    out = convert_label(label, naive)
    assert out.dtype == np.uint16 and (out == naive.class_names.index("motorcyclist")).all()
    ignore = np.full((4, 4), 255, np.uint8)
    assert (convert_label(ignore, universal) == 255).all() and (convert_label(ignore, naive) == 255).all()


def test_unknown_value_is_an_error_not_class_0(tsv, mseg_api):
    spec = DatasetSpec("cityscapes-19", Path("."), mseg_api / "mseg/dataset_lists/cityscapes-19/cityscapes-19_names.txt",
                       Path("."))
    target = build_target("universal", spec, mseg_api)
    hist = np.zeros(256, np.int64)
    hist[[0, 200]] = [10, 3]
    with pytest.raises(SampleError, match=r"200 \(the dataset has 19 classes"):
        check_values(hist, target, "cityscapes-19", "x.png")


def test_test_matrices(tsv, mseg_api):
    pairs = {"camvid-11": 12, "kitti-19": 22, "wilddash-19": 23, "scannet-20": 37, "voc2012": 194,
             "pascal-context-60": 194}
    for name in TEST_DATASETS:
        names = names_of(mseg_api, name)
        matrix = tax.test_matrix(tsv, name, names)
        assert matrix.shape == (len(names), 194) and matrix.sum() == pairs[name]
        assert (matrix.sum(axis=0) <= 1).all()  # a universal class feeds at most one test class
    pascal = names_of(mseg_api, "pascal-context-60")
    pmatrix = tax.test_matrix(tsv, "pascal-context-60", pascal)
    assert pmatrix[pascal.index("flower")].sum() == 0 and pmatrix[pascal.index("wood")].sum() == 0
    # §2.6: logits 0 except person = bicycle = 0.5 -> CamVid predicts Bicyclist.
    camvid = names_of(mseg_api, "camvid-11")
    logits = np.zeros(194)
    logits[[125, 175]] = 0.5
    probs = np.exp(logits) / np.exp(logits).sum()
    assert camvid[int(np.argmax(tax.test_matrix(tsv, "camvid-11", camvid) @ probs))] == "Bicyclist"


def test_tsv_errors(tmp_path, mseg_api):
    bad = tmp_path / "bad.tsv"
    bad.write_text("universal\tmy-set\nroad\t{road, lane}\nunlabeled\t\n", encoding="utf-8")
    with pytest.raises(UserError, match="'lane' is not in my-set's names file"):
        tax.universal_table(tax.read_master_tsv(bad), "my-set", ("road",))
    with pytest.raises(UserError, match="no column 'other-set'"):
        tax.read_master_tsv(bad).column("other-set")
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("universal\tmy-set\nroad\n", encoding="utf-8")
    with pytest.raises(UserError, match="ragged.tsv:2: 1 tab-separated cells"):
        tax.read_master_tsv(ragged)
