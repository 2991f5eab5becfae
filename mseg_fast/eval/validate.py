"""Validation during training: mIoU per dataset, a table with class names, confusion pictures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import torch
import torch.distributed as dist

from mseg_fast.atomic import write_atomic
from mseg_fast.data.batch import Batch
from mseg_fast.eval.metrics import confusion, scores
from mseg_fast.viz import write_image


@torch.no_grad()
def validate(model, batches: Iterable[Batch], num_classes: int, num_datasets: int, device: torch.device
             ) -> list[torch.Tensor]:
    """One confusion matrix per dataset, summed over ranks."""
    was_training = model.training
    model.eval()
    matrices = [torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device) for _ in range(num_datasets)]
    for batch in batches:
        batch = batch.to(device)
        pred = model(batch.images.float()).argmax(1)  # in fp32 (MSeg's), float16 hand-over included
        for dataset_id in batch.dataset_ids.unique().tolist():
            rows = batch.dataset_ids == dataset_id
            matrices[dataset_id] += confusion(pred[rows], batch.labels[rows], num_classes)
    if dist.is_initialized():
        for matrix in matrices:
            dist.all_reduce(matrix)
    model.train(was_training)
    return matrices


def report(matrices: list[torch.Tensor], datasets: list[str], class_names: tuple[str, ...], iteration: int,
           out_dir: Path) -> tuple[list[str], dict[str, float]]:
    """Write val_XXXXXXXX.json and a confusion picture per dataset.

    Returns:
        The summary lines, and scalars (val/mIoU/<dataset>, ...) for TensorBoard.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    lines, record = [], {"iteration": iteration, "datasets": {}}
    for name, matrix in zip(datasets, matrices):
        result = scores(matrix.cpu())
        present = result["present"].nonzero().flatten().tolist()
        per_class = {class_names[c]: round(float(result["iou"][c]), 4) for c in present}
        record["datasets"][name] = {"miou": result["miou"], "macc": result["macc"], "all_acc": result["all_acc"],
                                    "iou": per_class}
        worst = sorted(per_class.items(), key=lambda kv: kv[1])[:3]
        lines.append(f"val {name}: mIoU {100 * result['miou']:.1f} mAcc {100 * result['macc']:.1f} "
                     f"allAcc {100 * result['all_acc']:.1f} over {len(present)} classes; lowest IoU: "
                     + ", ".join(f"{k} {100 * v:.0f}" for k, v in worst))
        write_image(out_dir / f"confusion_{iteration:08d}_{name}.png", confusion_picture(matrix.cpu(), present,
                                                                                         class_names))
    write_atomic(out_dir / f"val_{iteration:08d}.json", json.dumps(record, indent=1).encode())
    scalars = {f"val/{metric}/{name}": values[key] for name, values in record["datasets"].items()
               for metric, key in (("mIoU", "miou"), ("mAcc", "macc"), ("allAcc", "all_acc"))}
    return lines, scalars


def confusion_picture(matrix: torch.Tensor, classes: list[int], class_names: tuple[str, ...], cell: int = 26
                      ) -> np.ndarray:
    """Row-normalised confusion among the present classes (BGR): the diagonal green, errors red, darker = more
    of the label's pixels, each cell's percentage written in it; class names on both axes and a colour scale."""
    sub = matrix[classes][:, classes].double()
    rows = (sub / sub.sum(1, keepdim=True).clamp(min=1)).numpy()
    n, margin, scale_width = len(classes), 150, 110
    bar = max(100, min(n * cell, 300))  # the colour scale's height
    height = max(margin + n * cell, margin + bar + 16)
    picture = np.full((height, margin + n * cell + scale_width, 3), 255, np.uint8)
    font = (cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)

    def colour(share: float, diagonal: bool) -> tuple[int, int, int]:
        shade = int(255 * (1 - share))
        return (shade, 255, shade) if diagonal else (shade, shade, 255)

    for i in range(n):
        for j in range(n):
            y, x = margin + i * cell, margin + j * cell
            cv2.rectangle(picture, (x, y), (x + cell - 2, y + cell - 2), colour(rows[i, j], i == j), -1)
            percent = round(100 * rows[i, j])
            if percent:
                ink = (255, 255, 255) if rows[i, j] > 0.6 else (0, 0, 0)
                cv2.putText(picture, str(percent), (x + 2, y + cell - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.33, ink, 1,
                            cv2.LINE_AA)
        name = class_names[classes[i]][:20]
        cv2.putText(picture, name, (4, margin + i * cell + 17), *font)
        strip = np.full((cell, margin, 3), 255, np.uint8)
        cv2.putText(strip, name, (4, 17), *font)
        picture[:margin, margin + i * cell: margin + (i + 1) * cell] = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    cv2.putText(picture, "rows: label", (4, 20), *font)
    cv2.putText(picture, "columns: prediction", (4, 40), *font)
    cv2.putText(picture, "% of the row's pixels", (4, 60), *font)
    # The colour scale: share of a label's pixels, correct (green) and confused (red).
    left, top = margin + n * cell + 12, margin
    for k in range(bar):
        share = 1 - k / (bar - 1)
        picture[top + k, left:left + 14] = colour(share, True)
        picture[top + k, left + 16:left + 30] = colour(share, False)
    for share in (1.0, 0.5, 0.0):
        y = top + round((1 - share) * (bar - 1))
        cv2.putText(picture, f"{round(100 * share)} %", (left + 34, y + 4), *font)
    cv2.putText(picture, "ok / wrong", (left - 4, top - 8), *font)
    return picture
