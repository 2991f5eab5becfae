"""MSeg's evaluation metrics and its results.txt (MSEG_REFERENCE.md §7.4, §7.5, §7.7).

These differ from the in-training validation's scores (metrics.py): MSeg averages IoU over every
evaluation class, a class never present and never predicted counting as 0 (PASCAL Context's `flower`
and `wood`, which no universal class reaches), less the classes excluded for training datasets (§7.6).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.eval.metrics import confusion

EPS = 1e-10  # MSeg's guard in IoU and accuracy


def relabeled_rewrite(prediction: torch.Tensor, unrelabeled: torch.Tensor,
                      relabeled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MSeg's relabeled protocol (§7.6): the prediction and the target to score, from the unrelabeled and the
    relabeled ground truth (both in universal ids).

    Where the two differ, a prediction of the relabeled class counts as the unrelabeled class (correct), any
    other prediction becomes IGNORE_LABEL (wrong for certain: in its class's union, in no intersection);
    pixels the relabeling made unlabeled are not scored.
    """
    changed = relabeled != unrelabeled
    void = torch.full_like(prediction, IGNORE_LABEL)
    prediction = torch.where(changed, torch.where(prediction == relabeled, unrelabeled.to(prediction), void), prediction)
    target = torch.where(relabeled == IGNORE_LABEL, torch.full_like(unrelabeled, IGNORE_LABEL), unrelabeled)
    return prediction, target


def mseg_counts(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The confusion matrix (K x K) and, per ground-truth class, the pixels whose prediction was voided
    (IGNORE_LABEL by the relabeled protocol, no class): misses that belong to no predicted class."""
    voided = (prediction >= num_classes) & (target != IGNORE_LABEL)
    missed = torch.bincount(target[voided].long(), minlength=num_classes)[:num_classes]
    return confusion(prediction, target, num_classes), missed


def mseg_scores(matrix: torch.Tensor, excluded: Sequence[int] = (), missed: torch.Tensor | None = None) -> dict:
    """Per-class IoU and accuracy and MSeg's mIoU / mAcc / allAcc from a dataset-wide confusion matrix.

    Args:
        matrix: K x K counts, rows = ground truth, columns = prediction, ignore pixels not counted.
        excluded: classes left out of the means (and of results.txt), e.g. universal ids a training
            dataset never maps to.
        missed: per ground-truth class, pixels voided by the relabeled protocol (`mseg_counts`).

    Returns:
        iou, acc (K tensors), kept (the classes averaged), miou, macc, all_acc (fractions, not percent).
    """
    matrix = matrix.double()
    intersection = matrix.diag()
    target = matrix.sum(1) + (missed.double() if missed is not None else 0)
    union = target + matrix.sum(0) - intersection
    iou = intersection / (union + EPS)
    acc = intersection / (target + EPS)
    kept = [k for k in range(matrix.shape[0]) if k not in set(excluded)]
    return {"iou": iou, "acc": acc, "kept": kept, "miou": float(iou[kept].mean()), "macc": float(acc[kept].mean()),
            "all_acc": float(intersection.sum() / (target.sum() + EPS))}


def results_txt(scores: dict, class_names: Sequence[str]) -> str:
    """MSeg's results.txt, byte for byte in its layout, so that its result collector reads it."""
    lines = [f"Eval result: mIoU/mAcc/allAcc {scores['miou']:.4f}/{scores['macc']:.4f}/{scores['all_acc']:.4f}."]
    for k in scores["kept"]:
        lines.append(f"Class_{k:02d} result: iou/accuracy {float(scores['iou'][k]):.4f}/{float(scores['acc'][k]):.4f}, "
                     f"name: {class_names[k]}.")
    return "\n".join(lines) + "\n"


def miou_from_results_txt(text: str) -> float:
    """What MSeg's collector reads: the first line's third '/' piece, its last token, in percent."""
    return 100 * float(text.splitlines()[0].split("/")[2].split()[-1])


def harmonic_mean(values: Sequence[float | None]) -> float | None:
    """The harmonic mean of mIoUs (MSeg's summary column); None when a value is missing or 0 (MSeg then
    wrote a sentinel that made its mean meaningless; here the summary says which result is missing)."""
    if not values or any(v is None or v <= 0 for v in values):
        return None
    return len(values) / math.fsum(1 / v for v in values)
