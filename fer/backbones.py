"""Small backbones for 48x48 faces that train at useful speed on a CPU.

ImageNet ResNets downsample 4x in their stem, which throws away most of a 48x48 face
before the first block. Both nets here keep full resolution at first and halve it per stage.

* :class:`FerCNN` (``fer_cnn``, the default small model): VGG-style, two 3x3 conv-BN-ReLU
  layers then a 2x2 max-pool per stage (48 -> 24 -> 12 -> 6 -> 3).
* :class:`FerResNet` (``fer_resnet``): one residual block per stage with strided
  convolutions. Measured on FERPlus (Adam 1e-3, batch 64, 100 steps, same data): it stayed at
  the class prior (train loss 1.60, accuracy 0.36) where ``fer_cnn`` reached loss 1.20 and
  accuracy 0.58 and timm's resnet18 0.48. With SGD (lr 0.01) after 5 epochs its training loss
  was 1.54 against the prior's 1.60 (accuracy 0.40 vs 0.36). Kept for
  comparison; do not use it as a default until that is understood.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18 style)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, stride)
        self.conv2 = _conv_bn(cout, cout)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        nn.init.zeros_(self.conv2[1].weight)  # start each block as identity: stabler training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))) + self.shortcut(x))


class FerResNet(nn.Module):
    """Stem (3x3 conv, stride 1) + four residual stages, the last three with stride 2.

    Args:
        in_chans: Input channels (1 for grayscale faces).
        widths: Channels of the four stages.
        depths: Blocks in each stage.
    """

    def __init__(
        self,
        in_chans: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (1, 1, 1, 1),
    ):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(in_chans, widths[0]), nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(d)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stages_for_freezing(self) -> list[nn.Module]:
        """Stem then each stage, matching the paper's stage numbering."""
        return [self.stem, *self.stages]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, 48, 48)`` -> ``(B, widths[-1], 6, 6)``."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class FerCNN(nn.Module):
    """VGG-style stages of two 3x3 conv-BN-ReLU layers followed by a 2x2 max-pool.

    Args:
        in_chans: Input channels (1 for grayscale faces).
        widths: Channels of the four stages.
    """

    def __init__(self, in_chans: int = 1, widths: Sequence[int] = (32, 64, 128, 256)):
        super().__init__()
        stages, cin = [], in_chans
        for w in widths:
            stages.append(nn.Sequential(
                _conv_bn(cin, w), nn.ReLU(inplace=True), _conv_bn(w, w), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]

    def stages_for_freezing(self) -> list[nn.Module]:
        return list(self.stages)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, 48, 48)`` -> ``(B, widths[-1], 3, 3)``."""
        return self.stages(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
