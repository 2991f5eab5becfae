"""Networks by name: HRNetV2 (MSeg's model) and PSPNet (the CCSA baseline's)."""

from __future__ import annotations

from torch import nn

from mseg_fast.models.hrnet import HRNet, WIDTHS
from mseg_fast.models.pspnet import PSPNet

ARCHS = (*WIDTHS, "psp")


def build_model(arch: str, num_classes: int, layers: int = 50, init: str = "mseg") -> nn.Module:
    """`hrnet_w48` (MSeg), `hrnet_w18` (tests, small runs) or `psp` (PSPNet-`layers`, CCSA).

    Args:
        init: "mseg" keeps each network's MSeg init (HRNet: N(0, 0.001) convolutions); "kaiming" draws every
            convolution He-normal (fan-out), which a run from scratch needs to learn in a few hundred steps:
            MSeg's tiny weights make BatchNorm's effective step size huge at first and the loss spikes.
    """
    if arch in WIDTHS:
        model = HRNet(num_classes, WIDTHS[arch])
    elif arch == "psp":
        model = PSPNet(num_classes, layers)
    else:
        raise ValueError(f"unknown model '{arch}'; choose one of {', '.join(ARCHS)}")
    if init == "kaiming":
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif init != "mseg":
        raise ValueError(f"unknown init '{init}'; choose mseg or kaiming")
    return model
