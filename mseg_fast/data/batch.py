"""The one type that crosses from the loaders to the training loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """images NCHW float; labels NHW (255 = ignore): int64 after `to()`, and from a loader possibly still
    in the shards' width (uint8, or int16 for 16-bit labels), which is 1/8 of the bytes to hand over and
    to copy; dataset_ids N int64 (config order)."""

    images: torch.Tensor
    labels: torch.Tensor
    dataset_ids: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "Batch":
        """On `device`, labels int64 (widened after the copy, where it is cheap on a GPU)."""
        return Batch(self.images.to(device, non_blocking=non_blocking),
                     self.labels.to(device, non_blocking=non_blocking).long(),
                     self.dataset_ids.to(device, non_blocking=non_blocking))

    def __len__(self) -> int:
        return self.images.shape[0]
