"""The one type that crosses from the loaders to the training loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """images NCHW float, labels NHW int64 (255 = ignore), dataset_ids N int64 (config order)."""

    images: torch.Tensor
    labels: torch.Tensor
    dataset_ids: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "Batch":
        return Batch(self.images.to(device, non_blocking=non_blocking), self.labels.to(device, non_blocking=non_blocking),
                     self.dataset_ids.to(device, non_blocking=non_blocking))

    def __len__(self) -> int:
        return self.images.shape[0]
