"""What a segmentation network returns when a step asks for more than the logits."""

from __future__ import annotations

from typing import NamedTuple

import torch


class SegOutputs(NamedTuple):
    """`model(images, extras=True)`: every tensor a training step may need, from one forward.

    logits: N x K x H x W at the input resolution.
    aux: the auxiliary head's logits at the input resolution (PSPNet in training mode), else None.
    embedding: the feature map a CCSA step aligns across domains (PSPNet: layer4, 2048 channels at
        stride 8; HRNet: the concatenated branches at stride 4). Its grid maps onto the input with
        align_corners geometry, as the final upsampling of both networks does.
    """

    logits: torch.Tensor
    aux: torch.Tensor | None
    embedding: torch.Tensor
