"""Dataset names, aliases, data roots, lists and user-registered datasets."""

from __future__ import annotations

import pytest

from mseg_fast import datasets
from mseg_fast.apiroot import find_mseg_api
from mseg_fast.errors import UserError


def test_aliases():
    assert datasets.resolve_names("mapillary") == ["mapillary-public65-relabeled"]
    assert datasets.resolve_names("mapillary", unrelabeled=True) == ["mapillary-public65"]
    assert datasets.resolve_names("bdd") == ["bdd-relabeled"]
    assert datasets.resolve_names("camvid") == ["camvid-11"]
    assert datasets.resolve_names("all") == [f"{n}-relabeled" for n in datasets.UNRELABELED_TRAIN]
    assert datasets.resolve_names("all", unrelabeled=True) == list(datasets.UNRELABELED_TRAIN)
    assert datasets.resolve_names("cityscapes-34-relabeled") == ["cityscapes-34-relabeled"]


def test_unknown_name_suggests():
    with pytest.raises(UserError, match="Did you mean: mapillary"):
        datasets.resolve_names("mapilary")
    with pytest.raises(UserError, match="use --dataset idd-39"):
        datasets.resolve_names("idd-39-relabeled", unrelabeled=True)


@pytest.mark.parametrize("name", datasets.TRAIN_DATASETS + datasets.TEST_DATASETS)
def test_lists_and_names_exist(mseg_api, tmp_path, name):
    (tmp_path / datasets.DATA_ROOTS[name]).mkdir(parents=True)
    spec = datasets.build_spec(name, tmp_path, mseg_api)
    assert spec.names_file.is_file()
    if name.startswith("coco-panoptic"):
        with pytest.raises(UserError, match="no COCO train lists.*--list FILE"):
            datasets.read_list(spec.list_path("train"), name, "train")
        entries, _ = datasets.read_list(spec.list_path("val"), name, "val")
        assert len(entries) == 5000
    else:
        entries, digest = datasets.read_list(spec.list_path("train"), name, "train")
        assert entries and len(digest) == 64


def test_list_counts(mseg_api, tmp_path):
    """Reference §1.4 line counts (kitti-19's list has no final newline)."""
    for name, split, count in [("ade20k-150-relabeled", "train", 20210), ("mapillary-public65", "val", 2000),
                               ("cityscapes-19-relabeled", "train", 2975), ("kitti-19", "train", 150),
                               ("pascal-context-60", "train", 4999), ("sunrgbd-37-relabeled", "val", 475)]:
        entries, _ = datasets.read_list(mseg_api / "mseg/dataset_lists" / name / "list" / f"{split}.txt", name, split)
        assert len(entries) == count, name
    first = datasets.read_list(mseg_api / "mseg/dataset_lists/sunrgbd-37-relabeled/list/train.txt", "s", "train")[0][0]
    assert (first.image, first.label) == ("image/train/img-000001.jpg", "semseg-relabeled37/train/00000001.png")


def test_data_root_without_folder(mseg_api, tmp_path):
    with pytest.raises(UserError, match="has no folder 'MapillaryVistasPublic' for mapillary-public65-relabeled"):
        datasets.build_spec("mapillary-public65-relabeled", tmp_path, mseg_api)


def test_bad_list_lines(tmp_path):
    bad = tmp_path / "list.txt"
    bad.write_text("a.jpg b.png\nonly_one_field.jpg\n")
    with pytest.raises(UserError, match=r"list.txt:2: expected 'image_path label_path'"):
        datasets.read_list(bad, "x", "train")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(UserError, match="is empty"):
        datasets.read_list(empty, "x", "train")


def test_text_files_with_a_bom_read_and_others_name_file_and_line(tmp_path):
    """Windows editors start UTF-8 with a byte-order mark; Latin-1 names and an image given as a TSV are not text."""
    from mseg_fast.taxonomy import read_master_tsv, read_names

    listing = tmp_path / "bom.txt"
    listing.write_bytes(b"\xef\xbb\xbfa.jpg b.png\n")
    assert datasets.read_list(listing, "x", "train")[0][0].image == "a.jpg"
    names = tmp_path / "names.txt"
    names.write_bytes(b"\xef\xbb\xbfroad\nsky\n")
    assert read_names(names) == ("road", "sky")
    names.write_bytes("road\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"names.txt:2: not UTF-8 text \(byte 0xe9"):
        read_names(names)
    image = tmp_path / "photo.tsv"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(UserError, match=r"photo.tsv:\d+: not UTF-8 text .* a taxonomy TSV is a UTF-8 text file"):
        read_master_tsv(image)


def test_extra_datasets(tmp_path, mseg_api):
    (tmp_path / "names.txt").write_text("road\nsky\n")
    (tmp_path / "lists").mkdir()
    (tmp_path / "Mine").mkdir()
    registry = tmp_path / "extra.yaml"
    registry.write_text("my-set:\n  root: Mine\n  names: names.txt\n  lists: lists\n")
    extras = datasets.load_extra_datasets(registry)
    assert datasets.resolve_names("my-set", extras=extras) == ["my-set"]
    spec = datasets.build_spec("my-set", tmp_path, mseg_api, extras)
    assert spec.names_file == tmp_path / "names.txt" and spec.list_path("val") == tmp_path / "lists" / "val.txt"
    registry.write_text("my-set:\n  root: Mine\n  colour: red\n")
    with pytest.raises(UserError, match=r"unknown keys \['colour'\]"):
        datasets.load_extra_datasets(registry)


def test_find_mseg_api(mseg_api, tmp_path):
    assert find_mseg_api(mseg_api) == mseg_api.resolve()
    assert find_mseg_api(None, environ={"MSEG_API_ROOT": str(mseg_api)}) == mseg_api.resolve()
    with pytest.raises(UserError, match="cannot find the mseg-api data files"):
        find_mseg_api(tmp_path)
