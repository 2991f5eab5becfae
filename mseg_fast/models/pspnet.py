"""PSPNet on a dilated deep-base ResNet, the network of MSeg's CCSA baseline (reference §4.3).

Key names follow the PSPNet code MSeg builds on (`layer0.*` for the three-conv stem, `layer1-4`,
`ppm.features.*`, `cls.*`, `aux.*`), so its checkpoints load strictly, and the deep-base
ImageNet ResNets load through `load.load_imagenet_backbone`. BatchNorm keeps PyTorch's default
momentum (0.1), as that code does; only HRNet uses MSeg's 0.01.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mseg_fast.models.blocks import Bottleneck
from mseg_fast.models.outputs import SegOutputs

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BINS = (1, 2, 3, 6)  # pyramid pooling grid sizes
HEAD_LR_MULT = 10.0  # ppm, cls and aux train at 10x the backbone's learning rate (reference §3.10)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _stage(cin: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    """A ResNet layer; in the dilated layers every 3x3 conv is dilated and none strides."""
    layers = [Bottleneck(cin, planes, True, stride, dilation)]
    layers += [Bottleneck(planes * 4, planes, False, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _classifier(cin: int, mid: int, num_classes: int) -> nn.Sequential:
    """3x3 conv, BN, ReLU, Dropout2d(0.1), 1x1 conv to the classes (keys .0, .1, .4)."""
    return nn.Sequential(*_conv_bn_relu(cin, mid, 3), nn.Dropout2d(0.1), nn.Conv2d(mid, num_classes, 1))


class PyramidPooling(nn.Module):
    """Average-pool to 1, 2, 3 and 6 cells, reduce to a quarter of the channels, upsample, concatenate."""

    def __init__(self, channels: int):
        super().__init__()
        reduced = channels // len(BINS)
        self.features = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), *_conv_bn_relu(channels, reduced, 1))
                                      for b in BINS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(f(x), size, mode="bilinear", align_corners=True) for f in self.features]
        return torch.cat([x] + pooled, 1)


class PSPNet(nn.Module):
    """PSPNet-{layers}: output stride 8, pyramid pooling, main and auxiliary heads.

    Args:
        num_classes: output channels.
        layers: ResNet depth, 50, 101 or 152.
    """

    CLASSIFIER = ("cls.4.", "aux.4.")  # the tensors whose shape depends on the class count

    def __init__(self, num_classes: int, layers: int = 50):
        super().__init__()
        if layers not in DEPTHS:
            raise ValueError(f"PSPNet depth {layers} is not one of {sorted(DEPTHS)}")
        self.num_classes, self.layers = num_classes, layers
        blocks = DEPTHS[layers]
        # Deep-base stem: three 3x3 convs instead of one 7x7 (keys layer0.0/.1, .3/.4, .6/.7).
        self.layer0 = nn.Sequential(*_conv_bn_relu(3, 64, 3, 2), *_conv_bn_relu(64, 64, 3), *_conv_bn_relu(64, 128, 3),
                                    nn.MaxPool2d(3, stride=2, padding=1))
        self.layer1 = _stage(128, 64, blocks[0], 1, 1)
        self.layer2 = _stage(256, 128, blocks[1], 2, 1)
        self.layer3 = _stage(512, 256, blocks[2], 1, 2)  # stride removed, dilation 2: output stride 8
        self.layer4 = _stage(1024, 512, blocks[3], 1, 4)
        self.ppm = PyramidPooling(2048)
        self.cls = _classifier(4096, 512, num_classes)
        self.aux = _classifier(1024, 256, num_classes)
        for name, module in self.named_modules():
            if name.startswith("layer") and isinstance(module, nn.Conv2d):  # the ResNet's init; heads keep PyTorch's
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor, extras: bool = False) -> torch.Tensor | SegOutputs:
        """Logits at the input resolution; with `extras`, also the auxiliary logits (training mode)
        and layer4's features (CCSA's embedding)."""
        x = self.layer2(self.layer1(self.layer0(images)))
        middle = self.layer3(x)
        features = self.layer4(middle)
        size = images.shape[-2:]  # MSeg's (H - 1) / 8 * 8 + 1 for its 8k+1 crops
        logits = F.interpolate(self.cls(self.ppm(features)), size, mode="bilinear", align_corners=True)
        if not extras:
            return logits
        aux = F.interpolate(self.aux(middle), size, mode="bilinear", align_corners=True) if self.training else None
        return SegOutputs(logits, aux, features)

    def param_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """Backbone at the base learning rate, pyramid pooling and heads at 10x."""
        backbone = [p for n, p in self.named_parameters() if n.startswith("layer")]
        head = [p for n, p in self.named_parameters() if not n.startswith("layer")]
        return [(backbone, 1.0), (head, HEAD_LR_MULT)]
