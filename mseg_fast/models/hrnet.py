"""HRNetV2 for segmentation with MSeg's numerics and state-dict layout (reference §4.1, §4.5).

Written here rather than taken from timm (DESIGN.md §6): timm's fuse layers upsample with
nearest neighbour where MSeg resizes bilinearly, it rejects MSeg's odd crops (713, 593, 473)
and its BatchNorm momentum differs. This module keeps MSeg's key names, so its checkpoints
and the HRNet ImageNet weights load strictly, and it sums fusion terms in MSeg's order.

Any input size works (bilinear fusion resizes to the exact branch sizes); MSeg's crops
satisfy (H - 1) % 8 == 0, which keeps its branch sizes (713 -> 179, 90, 45, 23).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mseg_fast.models.blocks import Bottleneck
from mseg_fast.models.outputs import SegOutputs

BN_MOMENTUM = 0.01  # MSeg: running = 0.99 * running + 0.01 * batch
WIDTHS = {"hrnet_w48": 48, "hrnet_w18": 18}
MODULES = (1, 4, 3)  # high-resolution modules in stages 2, 3, 4
BLOCKS = 4  # blocks per branch in every module, and in layer1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(channels, channels), _bn(channels)
        self.conv2, self.bn2 = _conv3x3(channels, channels), _bn(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def _down_chain(cin: int, cout: int, steps: int) -> nn.Sequential:
    """`steps` stride-2 3x3 convs: C_j channels with BN+ReLU, the last to C_i with BN only."""
    layers = []
    for t in range(steps):
        last = t == steps - 1
        layers.append(nn.Sequential(_conv3x3(cin, cout if last else cin, 2), _bn(cout if last else cin),
                                    *([] if last else [nn.ReLU(inplace=True)])))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of basic blocks, then every branch fuses all others (sum, ReLU)."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(c) for _ in range(BLOCKS)]) for c in channels)
        fuse = []
        for i, ci in enumerate(channels):
            row: list[nn.Module | None] = []
            for j, cj in enumerate(channels):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(cj, ci, 1, bias=False), _bn(ci)))
                elif j == i:
                    row.append(None)
                else:
                    row.append(_down_chain(cj, ci, i - j))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            # MSeg's order: start from branch 0's term, add j = 1, 2, ... (floating-point sums differ by order).
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    y = y + F.interpolate(row[j](xs[j]), size=xs[i].shape[-2:], mode="bilinear", align_corners=False)
                else:
                    y = y + row[j](xs[j])
            out.append(self.relu(y))
        return out


def _transition(previous: tuple[int, ...], channels: tuple[int, ...]) -> nn.ModuleList:
    """Adapt existing branches (when widths differ) and create the new, coarser one."""
    layers: list[nn.Module | None] = []
    for i, c in enumerate(channels):
        if i < len(previous):
            layers.append(None if previous[i] == c else
                          nn.Sequential(_conv3x3(previous[i], c), _bn(c), nn.ReLU(inplace=True)))
        else:
            layers.append(nn.Sequential(nn.Sequential(_conv3x3(previous[-1], c, 2), _bn(c), nn.ReLU(inplace=True))))
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """HRNetV2-W{width} segmentation network; forward returns logits at the input resolution.

    Args:
        num_classes: output channels (194 universal, 316 naive, or a dataset's own count).
        width: 48 (MSeg's model) or 18 (tests and small runs).
    """

    CLASSIFIER = ("last_layer.3.",)  # the tensors whose shape depends on the class count

    def __init__(self, num_classes: int, width: int = 48):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        self.conv1, self.bn1 = _conv3x3(3, 64, 2), _bn(64)
        self.conv2, self.bn2 = _conv3x3(64, 64, 2), _bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Bottleneck(64, 64, True, momentum=BN_MOMENTUM),
                                    *[Bottleneck(256, 64, False, momentum=BN_MOMENTUM) for _ in range(BLOCKS - 1)])
        widths = tuple(width * 2**k for k in range(4))
        self.transition1 = _transition((256,), widths[:2])
        self.stage2 = nn.Sequential(*[HighResolutionModule(widths[:2]) for _ in range(MODULES[0])])
        self.transition2 = _transition(widths[:2], widths[:3])
        self.stage3 = nn.Sequential(*[HighResolutionModule(widths[:3]) for _ in range(MODULES[1])])
        self.transition3 = _transition(widths[:3], widths)
        self.stage4 = nn.Sequential(*[HighResolutionModule(widths) for _ in range(MODULES[2])])
        head = sum(widths)  # 720 for W48
        self.last_layer = nn.Sequential(nn.Conv2d(head, head, 1), _bn(head), nn.ReLU(inplace=True),
                                        nn.Conv2d(head, num_classes, 1))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.001)  # MSeg's init; biases keep PyTorch's default

    @staticmethod
    def _run_stage(stage: nn.Sequential, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for module in stage:
            xs = module(xs)
        return xs

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The 4-resolution features, resized to branch 0 and concatenated (N x 720 x H/4 x W/4 for W48)."""
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        xs = [t(x) if t is not None else x for t in self.transition1]
        xs = self._run_stage(self.stage2, xs)
        xs = [t(xs[-1]) if t is not None else xs[i] for i, t in enumerate(self.transition2)]
        xs = self._run_stage(self.stage3, xs)
        xs = [t(xs[-1]) if t is not None else xs[i] for i, t in enumerate(self.transition3)]
        xs = self._run_stage(self.stage4, xs)
        size = xs[0].shape[-2:]
        return torch.cat([xs[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in xs[1:]], 1)

    def forward(self, images: torch.Tensor, extras: bool = False) -> torch.Tensor | SegOutputs:
        """Logits at the input resolution; with `extras`, also the features (CCSA's embedding)."""
        features = self.features(images)
        logits = self.last_layer(features)  # output stride 4
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=True)
        return SegOutputs(logits, None, features) if extras else logits

    def param_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """MSeg trains HRNet with one learning rate for every parameter (reference §3.10)."""
        return [(list(self.parameters()), 1.0)]

