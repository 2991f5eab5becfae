"""Metrics against the reference's worked examples (MSEG_REFERENCE.md §8 items 9-11, 23)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mseg_fast.eval.metrics import confusion, scores
from mseg_fast.eval.validate import confusion_picture, report


def counts(pred, target, k):
    result = scores(confusion(torch.tensor(pred), torch.tensor(target), k))
    return [result[key].long().tolist() for key in ("intersection", "target", "union")]


def test_reference_examples():
    assert counts([[0, 0], [1, 0]], [[0, 0], [1, 1]], 2) == [[2, 1], [2, 2], [3, 2]]
    assert counts([[2, 0], [1, 0]], [[2, 0], [1, 1]], 3) == [[1, 1, 1], [1, 2, 1], [2, 2, 1]]
    # Ignored pixels count neither as target nor as prediction.
    assert counts([[1, 0], [1, 0]], [[255, 0], [255, 1]], 2) == [[1, 0], [1, 1], [2, 1]]
    matrix = confusion(torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 1, 1]), 3)
    assert matrix.tolist() == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]


def test_miou_over_present_classes_and_picture():
    result = scores(confusion(torch.tensor([[0, 0], [1, 0]]), torch.tensor([[0, 0], [1, 1]]), 4))
    assert abs(result["miou"] - (2 / 3 + 1 / 2) / 2) < 1e-9 and result["present"].tolist() == [True, True, False, False]
    assert abs(result["all_acc"] - 0.75) < 1e-9
    picture = confusion_picture(torch.tensor([[5, 1], [0, 4]]), [0, 1], ("road", "sky"))
    # 26-pixel cells below and right of the names' 150-pixel margin; a 110-pixel colour scale at the right.
    assert picture.shape == (150 + 100 + 16, 150 + 2 * 26 + 110, 3) and picture.dtype == np.uint8
    scale = picture[150:250, 150 + 2 * 26 + 12]  # the green bar, dark (100 %) at the top to white (0 %)
    assert tuple(scale[0]) == (0, 255, 0) and tuple(scale[-1]) == (255, 255, 255)


def test_validation_report_writes_whole_files_or_says_why(tmp_path):
    """A picture that cannot be written is an OSError (the trainer's one error line), not a missing file
    nobody notices (cv2.imwrite only returns False); the JSON record appears whole."""
    matrix = torch.tensor([[5, 1], [0, 4]])
    lines, _ = report([matrix], ["demo-fields"], ("road", "sky"), 30, tmp_path)
    assert lines[0].startswith("val demo-fields: mIoU") and (tmp_path / "confusion_00000030_demo-fields.png").exists()
    assert json.loads((tmp_path / "val_00000030.json").read_text())["datasets"]["demo-fields"]["iou"]["road"] > 0
    assert not list(tmp_path.glob("*.tmp-*"))
    (tmp_path / "confusion_00000040_demo-fields.png").mkdir()  # the picture's name is taken by a folder
    with pytest.raises(OSError):
        report([matrix], ["demo-fields"], ("road", "sky"), 40, tmp_path)
