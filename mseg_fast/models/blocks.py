"""The ResNet bottleneck, shared by HRNet's first stage and PSPNet's backbone (same key names)."""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 to 4x planes, with a projected or identity shortcut.

    The stride sits on the 3x3 conv, as in the deep-base ResNets PSPNet loads; dilation keeps
    the receptive field growing where PSPNet removes the stride of layer3 and layer4.
    """

    def __init__(self, cin: int, planes: int, project: bool, stride: int = 1, dilation: int = 1,
                 momentum: float = 0.1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes, momentum=momentum)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=momentum)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(planes * 4, momentum=momentum)) if project else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))
