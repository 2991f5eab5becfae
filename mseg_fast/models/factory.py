"""Networks by name: HRNetV2 (MSeg's model) and PSPNet (the CCSA baseline's)."""

from __future__ import annotations

from torch import nn

from mseg_fast.models.hrnet import HRNet, WIDTHS
from mseg_fast.models.pspnet import PSPNet

ARCHS = (*WIDTHS, "psp")


def build_model(arch: str, num_classes: int, layers: int = 50) -> nn.Module:
    """`hrnet_w48` (MSeg), `hrnet_w18` (tests, small runs) or `psp` (PSPNet-`layers`, CCSA)."""
    if arch in WIDTHS:
        return HRNet(num_classes, WIDTHS[arch])
    if arch == "psp":
        return PSPNet(num_classes, layers)
    raise ValueError(f"unknown model '{arch}'; choose one of {', '.join(ARCHS)}")
