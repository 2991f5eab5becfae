"""The inference core against MSeg's algorithm (reference §7.3): window arithmetic, flip and multi-scale
averaging, the universal -> test projection, and the same predictions as an MSeg-style evaluator."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from mseg_fast.bench.mseg_eval import mseg_style_probabilities
from mseg_fast.eval.inference import InferenceSpec, predict_probabilities, resized_size, window_starts


def test_window_arithmetic_of_camvid_at_base_1080():
    """CamVid 720x960 at base 1080 -> 1080x1440 -> 2x3 windows of 713, stride 476, starts shifted back."""
    assert resized_size(720, 960, 1080) == (1080, 1440)
    assert InferenceSpec(base_size=1080).stride == 476
    assert window_starts(1080, 713, 476) == [0, 367]
    assert window_starts(1440, 713, 476) == [0, 476, 727]
    assert window_starts(713, 713, 476) == [0]  # padding makes every image at least a crop
    assert resized_size(1920, 1200, 360) == (576, 360)  # portrait: the width is the short side


class Tiny(nn.Module):
    """A small convolutional network with position-dependent, non-symmetric filters (so flips matter)."""

    def __init__(self, classes: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, classes, 3, padding=1))

    def forward(self, images):
        return self.body(images) * 4


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    import cv2

    return np.clip(cv2.resize(small, (width, height)), 0, 255).astype(np.uint8)


def test_flip_averaging_is_always_on():
    model = Tiny().eval()
    image = photo(60, 80)
    spec = InferenceSpec(base_size=60, crop=65)
    probs = predict_probabilities(model, [torch.from_numpy(image)], spec)[0]
    mirrored = predict_probabilities(model, [torch.from_numpy(image[:, ::-1].copy())], spec)[0]
    assert torch.allclose(probs, mirrored.flip(-1), atol=1e-5), "the mirror's prediction is the mirrored one"
    assert torch.allclose(probs.sum(0), torch.ones(60, 80), atol=1e-4)


@pytest.mark.parametrize("scales,projection", [((1.0,), False), ((0.5, 1.0, 1.5), False), ((1.0,), True)])
def test_agrees_with_the_mseg_style_evaluator(scales, projection):
    """Windows of several images in one batch, on the device, give MSeg's per-image CPU result."""
    model = Tiny().eval()
    images = [photo(90, 120, 1), photo(130, 70, 2), photo(50, 50, 3)]
    matrix = None
    if projection:  # 5 model classes onto 3: {0, 1} -> 0, {2} -> 1, {3} -> 2, class 4 dropped
        matrix = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0]], np.float32)
    spec = InferenceSpec(base_size=100, scales=scales, crop=65, window_batch=6)
    ours = predict_probabilities(model, [torch.from_numpy(i) for i in images], spec,
                                 torch.from_numpy(matrix) if matrix is not None else None)
    for image, probs in zip(images, ours):
        reference = mseg_style_probabilities(model, image, 100, scales, 65, matrix, torch.device("cpu"))
        assert probs.shape == (reference.shape[2], *image.shape[:2])
        ours_hwk = probs.permute(1, 2, 0).numpy()
        assert np.abs(ours_hwk - reference).max() < 2e-3
        assert (ours_hwk.argmax(-1) == reference.argmax(-1)).mean() >= 0.999


def test_projection_sums_probabilities_bicyclist(mseg_api):
    """§2.6's worked example: logits 0 but person = bicycle = 0.5 -> CamVid predicts Bicyclist
    (bicyclist + bicycle outweigh person)."""
    from mseg_fast.apiroot import master_tsv_path
    from mseg_fast.taxonomy import read_master_tsv, read_names, test_matrix, universal_names

    tsv = read_master_tsv(master_tsv_path(mseg_api))
    universal = universal_names(tsv)
    camvid = read_names(mseg_api / "mseg" / "dataset_lists" / "camvid-11" / "camvid-11_names.txt")
    matrix = torch.from_numpy(test_matrix(tsv, "camvid-11", camvid).astype(np.float32))

    class Constant(nn.Module):
        def forward(self, images):
            logits = torch.zeros(images.shape[0], len(universal), *images.shape[2:])
            logits[:, universal.index("person")] = 0.5
            logits[:, universal.index("bicycle")] = 0.5
            return logits

    probs = predict_probabilities(Constant(), [torch.zeros(20, 30, 3, dtype=torch.uint8)],
                                  InferenceSpec(base_size=20, crop=33), matrix)[0]
    assert camvid[int(probs[:, 5, 5].argmax())] == "Bicyclist"
    assert float(probs[camvid.index("Pedestrian"), 5, 5]) == pytest.approx(0.00844, abs=5e-5)


def test_mseg_metrics_and_results_txt():
    from mseg_fast.eval.mseg_metrics import harmonic_mean, miou_from_results_txt, mseg_scores, results_txt

    # 3 classes; class 2 is never present and never predicted: MSeg counts its IoU as 0.
    matrix = torch.tensor([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    scores = mseg_scores(matrix)
    assert scores["iou"][0] == pytest.approx(0.75) and scores["iou"][1] == pytest.approx(0.8)
    assert scores["miou"] == pytest.approx((0.75 + 0.8 + 0) / 3) and scores["all_acc"] == pytest.approx(7 / 8)
    excluded = mseg_scores(matrix, excluded=[2])
    assert excluded["miou"] == pytest.approx((0.75 + 0.8) / 2) and excluded["kept"] == [0, 1]
    text = results_txt(excluded, ["road", "car", "wood"])
    assert text.splitlines()[0] == "Eval result: mIoU/mAcc/allAcc 0.7750/0.8750/0.8750."
    assert text.splitlines()[1] == "Class_00 result: iou/accuracy 0.7500/0.7500, name: road."
    assert len(text.splitlines()) == 3 and miou_from_results_txt(text) == pytest.approx(77.5)
    assert harmonic_mean([0.5, 0.25]) == pytest.approx(1 / 3) and harmonic_mean([0.5, None]) is None
    from mseg_fast.eval.metrics import confusion

    # A prediction that is no class (the relabeled protocol's void) lands in no cell, not in the next row's.
    counted = confusion(torch.tensor([255, 0, 1]), torch.tensor([0, 0, 1]), 3)
    assert counted.sum() == 2 and counted[0, 0] == 1 and counted[1, 1] == 1


def test_evaluation_plans_follow_msegs_four_combinations(mseg_api):
    from mseg_fast.errors import UserError
    from mseg_fast.evaluation.protocol import plan_evaluation

    zero_shot = plan_evaluation("universal", 194, "camvid-11", mseg_api)
    assert zero_shot.combination == "zero-shot" and zero_shot.label_taxonomy == "self"
    assert zero_shot.projection.shape == (11, 194) and zero_shot.projection.sum() == 12 and zero_shot.folder == "camvid-11"
    pascal = plan_evaluation("universal", 194, "pascal-context-60", mseg_api)
    for unreachable in ("flower", "wood"):
        assert pascal.projection[pascal.class_names.index(unreachable)].sum() == 0
    coco = plan_evaluation("universal", 194, "coco-panoptic-133", mseg_api)
    assert coco.combination == "universal" and len(coco.excluded) == 72 and coco.folder == "coco-panoptic-133_universal"
    # §2.7: test classes without an exact lower-cased naive name can never be predicted.
    unreachable = {"camvid-11": {"SignSymbol", "Pedestrian", "Column_Pole"}, "kitti-19": set(), "wilddash-19": set(),
                   "scannet-20": {"otherfurniture"},
                   "voc2012": {"background", "aeroplane", "diningtable", "motorbike", "pottedplant", "tvmonitor"}}
    for dataset, expected in unreachable.items():
        naive = plan_evaluation("naive", 316, dataset, mseg_api)
        missing = {n for n, row in zip(naive.class_names, naive.projection) if row.sum() == 0}
        assert missing == expected, dataset
    assert sum(row.sum() == 0 for row in plan_evaluation("naive", 316, "pascal-context-60", mseg_api).projection) == 11
    assert plan_evaluation("self", 11, "camvid-11", mseg_api).combination == "oracle"
    for args, reason in ((("self", 19, "camvid-11"), "oracle model is scored on its own dataset"),
                         (("naive", 316, "coco-panoptic-133"), "test sets"),
                         (("universal", 19, "camvid-11"), "194"),
                         (("universal", 194, "no-such-set"), "no class names")):
        with pytest.raises(UserError, match=reason):
            plan_evaluation(*args, mseg_api)


def test_predicted_labels_are_the_argmax_of_the_probabilities():
    from mseg_fast.eval.inference import predict_labels

    model = Tiny(classes=7).eval()
    images = [torch.from_numpy(photo(70, 90, 5)), torch.from_numpy(photo(40, 40, 6))]
    spec = InferenceSpec(base_size=60, scales=(0.75, 1.0), crop=33, window_batch=4)
    labels = predict_labels(model, images, spec)
    for label, probs in zip(labels, predict_probabilities(model, images, spec)):
        assert torch.equal(label, probs.argmax(0))


def test_relabeled_protocol_worked_examples(mseg_api):
    """§7.6's examples in universal ids of the real TSV: COCO person relabeled as motorcyclist, and a cabinet
    region relabeled to unlabeled."""
    from mseg_fast.apiroot import master_tsv_path
    from mseg_fast.eval.mseg_metrics import mseg_counts, mseg_scores, relabeled_rewrite
    from mseg_fast.taxonomy import read_master_tsv, universal_names

    names = universal_names(read_master_tsv(master_tsv_path(mseg_api)))
    person, motorcyclist, road, cabinet, wall = (names.index(n) for n in
                                                 ("person", "motorcyclist", "road", "cabinet", "wall"))

    def score(prediction, unrelabeled, relabeled):
        counts = mseg_counts(*relabeled_rewrite(torch.tensor(prediction), torch.tensor(unrelabeled),
                                                torch.tensor(relabeled)), len(names))
        return mseg_scores(*counts[:1], missed=counts[1])

    unrelabeled = [[road] * 4, [road, person, person, person], [road, person, person, person], [road] * 4]
    relabeled = [[road] * 4, [road] + [motorcyclist] * 3, [road] + [motorcyclist] * 3, [road] * 4]
    right = score(relabeled, unrelabeled, relabeled)  # predicted the relabeled class: counts as correct
    assert right["all_acc"] == pytest.approx(1.0) and right["iou"][person] == pytest.approx(1.0)
    wrong = score(unrelabeled, unrelabeled, relabeled)  # predicted the old class: the 6 pixels are errors
    assert wrong["all_acc"] == pytest.approx(10 / 16)
    assert wrong["iou"][person] == pytest.approx(0.0) and wrong["acc"][person] == pytest.approx(0.0)
    assert wrong["iou"][road] == pytest.approx(1.0), "a voided pixel lowers its own class only"
    assert wrong["iou"][motorcyclist] == 0 and float(wrong["iou"].sum()) == pytest.approx(1.0)

    cabinet_u = [[cabinet, cabinet], [cabinet, cabinet]]
    cabinet_r = [[cabinet, cabinet], [cabinet, 255]]
    prediction = [[cabinet, cabinet], [cabinet, wall]]
    plain = mseg_scores(*mseg_counts(torch.tensor(prediction), torch.tensor(cabinet_u), len(names))[:1])
    assert plain["all_acc"] == pytest.approx(0.75)
    assert score(prediction, cabinet_u, cabinet_r)["all_acc"] == pytest.approx(1.0), "unlabeled after relabeling"


def test_relabeled_protocol_on_msegs_coco_example(mseg_api, test_photos):
    """MSeg's own COCO test image 000000025986: both labels converted with the shard tables, the table
    relabeled as counter_other; a prediction of `table` there is now wrong, one of the relabeled class right."""
    from mseg_fast.apiroot import dataset_lists_dir, master_tsv_path
    from mseg_fast.eval.mseg_metrics import mseg_counts, mseg_scores, relabeled_rewrite
    from mseg_fast.taxonomy import read_master_tsv, read_names, universal_names, universal_table

    tsv = read_master_tsv(master_tsv_path(mseg_api))
    names = universal_names(tsv)

    def read(kind, dataset=None):
        label = cv2.imread(str(test_photos / f"relabeled_gt/000000025986-{kind}.png"), cv2.IMREAD_UNCHANGED)
        if dataset:
            label = universal_table(tsv, dataset, read_names(dataset_lists_dir(mseg_api) / dataset /
                                                             f"{dataset}_names.txt"))[label]
        return torch.from_numpy(label.astype(np.int64))

    unrelabeled, relabeled = read("unrelabeled-gt", "coco-panoptic-133"), read("relabeled-gt", "coco-panoptic-133-relabeled")
    prediction = read("pred")
    changed = relabeled != unrelabeled
    assert int(changed.sum()) == 117313 and set(unrelabeled[changed].tolist()) == {names.index("table")}
    assert set(relabeled[changed].tolist()) == {names.index("counter_other")}
    plain = mseg_scores(mseg_counts(prediction, unrelabeled, len(names))[0])
    matrix, voided = mseg_counts(*relabeled_rewrite(prediction, unrelabeled, relabeled), len(names))
    protocol = mseg_scores(matrix, missed=voided)
    table = names.index("table")
    assert int(voided[table]) == int((prediction[changed] != names.index("counter_other")).sum()) > 0
    assert protocol["all_acc"] < plain["all_acc"] and protocol["iou"][table] < plain["iou"][table]
    right = torch.where(changed, relabeled, prediction)  # the relabeled class predicted on the relabeled region
    fixed, none = mseg_counts(*relabeled_rewrite(right, unrelabeled, relabeled), len(names))
    kept = int(((prediction == table) & (unrelabeled == table) & ~changed).sum())
    assert int(fixed[table, table]) == kept + 117313 and int(none.sum()) == 0


@pytest.mark.parametrize("smooth", [True, False])
def test_resized_argmax_equals_the_argmax_of_resized_maps(smooth):
    """Both paths: pixels whose four source pixels agree (smooth maps) and pixels decided by the K-class
    weighted mean (noise: nearly every pixel), over two scales, in small chunks; against MSeg's resize (OpenCV's
    INTER_LINEAR, channels last), not PyTorch's, whose float32 scale moves the source positions."""
    import torch.nn.functional as F

    from mseg_fast.eval.inference import resized_argmax

    generator = torch.Generator().manual_seed(3)
    maps = [torch.rand(9, 6, 8, generator=generator), torch.rand(9, 9, 12, generator=generator)]
    if smooth:
        maps = [F.interpolate(m[None], scale_factor=4, mode="bilinear")[0] for m in maps]
    size = (37, 50)

    def opencv(m: torch.Tensor) -> np.ndarray:
        hwc = m.permute(1, 2, 0).numpy()
        return np.concatenate([cv2.resize(np.ascontiguousarray(hwc[:, :, c:c + 3]), size[::-1],
                                          interpolation=cv2.INTER_LINEAR) for c in range(0, hwc.shape[2], 3)], 2)

    expected = torch.from_numpy(sum(opencv(m) for m in maps).argmax(-1))
    assert torch.equal(resized_argmax(maps, size, dense=1.0), expected)
    assert torch.equal(resized_argmax(maps, size, dense=0.0), expected)


def test_images_too_large_for_memory_are_refused_before_any_work():
    """A 10000 x 10 panorama at base 720 becomes 720 x 720000: 194 class maps of it are ~400 GB. Refused with
    the size and a base size that fits, before a window runs (the network is never called)."""
    from mseg_fast.errors import UserError
    from mseg_fast.eval.inference import check_fits, free_bytes, predict_labels

    class NeverCalled(nn.Module):
        num_classes = 194

        def forward(self, x):
            raise AssertionError("the network ran")

    panorama = torch.zeros((10, 10000, 3), dtype=torch.uint8)
    with pytest.raises(UserError, match=r"base size 720 on images of 10x10000 .* needs [\d.]+ GiB .* at most \d+"):
        predict_labels(NeverCalled(), [panorama], InferenceSpec(720))
    if free_bytes(torch.device("cpu")) is not None:
        check_fits([torch.zeros((720, 960, 3), dtype=torch.uint8)], InferenceSpec(360), 194)  # a photo fits
