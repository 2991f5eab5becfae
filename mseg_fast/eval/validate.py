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


def confusion_picture(matrix: torch.Tensor, classes: list[int], class_names: tuple[str, ...], cell: int = 22
                      ) -> np.ndarray:
    """Row-normalised confusion among the present classes (BGR): the diagonal green, errors red,
    darker = more pixels; class names on both axes."""
    sub = matrix[classes][:, classes].double()
    rows = (sub / sub.sum(1, keepdim=True).clamp(min=1)).numpy()
    n, margin = len(classes), 150
    picture = np.full((margin + n * cell, margin + n * cell, 3), 255, np.uint8)
    font = (cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(n):
        for j in range(n):
            shade = int(255 * (1 - rows[i, j]))
            colour = (shade, 255, shade) if i == j else (shade, shade, 255)
            y, x = margin + i * cell, margin + j * cell
            cv2.rectangle(picture, (x, y), (x + cell - 2, y + cell - 2), colour, -1)
        name = class_names[classes[i]][:20]
        cv2.putText(picture, name, (4, margin + i * cell + 15), *font)
        strip = np.full((cell, margin, 3), 255, np.uint8)
        cv2.putText(strip, name, (4, 15), *font)
        picture[:margin, margin + i * cell: margin + (i + 1) * cell] = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    cv2.putText(picture, "rows: label", (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(picture, "columns: prediction", (4, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return picture
