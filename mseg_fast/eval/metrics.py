"""Segmentation metrics from a confusion matrix (reference §7.5 and §8 items 9-12)."""

from __future__ import annotations

import torch

from mseg_fast.constants import IGNORE_LABEL


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K x K counts, rows = target class, columns = predicted class; ignore pixels are not counted
    (neither as target nor as prediction), nor are predictions that are no class (>= K: the relabeled
    protocol's voided pixels, which mseg_metrics.mseg_counts counts as misses; left in, t*K + 255 would land
    in another cell)."""
    keep = (target != IGNORE_LABEL) & (pred < num_classes)
    index = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(matrix: torch.Tensor) -> dict:
    """Per-class intersection, union, target counts, IoU and accuracy; mIoU and mAcc over the classes
    present in the labels; overall pixel accuracy."""
    matrix = matrix.double()
    intersection = matrix.diag()
    target = matrix.sum(1)
    union = target + matrix.sum(0) - intersection
    present = target > 0
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
    acc = torch.where(present, intersection / target.clamp(min=1), torch.zeros_like(target))
    return {"intersection": intersection, "union": union, "target": target, "iou": iou, "acc": acc,
            "miou": float(iou[present].mean()) if present.any() else 0.0,
            "macc": float(acc[present].mean()) if present.any() else 0.0,
            "all_acc": float(intersection.sum() / target.sum().clamp(min=1)),
            "present": present}
