"""CIFAR ResNets (ResNet-20/32/44/56/110) with the parameter-free option-A shortcut.

This is the network of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016, section 4.2) as used
by LDAM-DRW (Cao et al., NeurIPS 2019; ``kaidic/LDAM-DRW``, ``models/resnet_cifar.py``) and by most CIFAR-LT papers
surveyed in Zhang et al., "Deep Long-Tailed Learning: A Survey" (TPAMI 2023). ResNet-32 has 463,504 backbone
parameters (464,154 with a 10-class linear head, the "0.46M" of the literature).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from lt_lightning._checks import check_int, is_integer
from lt_lightning.backbones.base import Backbone

__all__ = ["BasicBlock", "ResNet20", "ResNet32", "ResNet44", "ResNet56", "ResNet110", "ResNetCifar"]


class BasicBlock(nn.Module):
    """Basic residual block ``y = relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` with an option-A shortcut.

    The option-A shortcut has no parameters: when the block downsamples it keeps every second pixel
    (``x[:, :, ::2, ::2]``), and when the width grows it zero-pads the new channels, half before and half after
    the existing ones (for widths 16 -> 32 that is LDAM-DRW's ``F.pad(..., (0, 0, 0, 0, planes // 4, planes // 4))``).

    Args:
        in_planes: input channels.
        planes: output channels (``>= in_planes``).
        stride: stride of the first 3x3 convolution (1 or 2).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        if planes < in_planes:
            raise ValueError(f"option-A shortcut needs planes >= in_planes, got in_planes={in_planes}, planes={planes}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad_before = (planes - in_planes) // 2
        self.pad_after = planes - in_planes - self.pad_before

    def shortcut(self, x: Tensor) -> Tensor:
        """Option-A identity shortcut: subsample spatially, zero-pad channels."""
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_before or self.pad_after:
            x = F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after), "constant", 0.0)
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(Backbone):
    """CIFAR ResNet of depth ``6n + 2``: a 3x3 stem, three stages of ``n`` basic blocks, global average pooling.

    Stage ``s`` has ``widths[s]`` channels; stages 2 and 3 start with stride 2. Convolution weights are drawn with
    ``kaiming_normal_`` (fan-in, gain ``sqrt(2)``), batch-norm starts at ``gamma = 1, beta = 0``, as in LDAM-DRW.
    Features are ``f = mean_{h,w} stage3(x)`` of size ``widths[2]`` (64 by default); inputs of any spatial size
    work (32x32 CIFAR, 8x8 digits, ...), in any memory format (``channels_last`` included).

    Args:
        depth: total depth ``6n + 2`` (20, 32, 44, 56, 110, ...).
        widths: channels of the three stages, non-decreasing (option-A shortcuts only pad).
        in_channels: channels of the input images (3 for RGB, 1 for grey-scale).
    """

    def __init__(self, depth: int = 32, widths: tuple[int, int, int] = (16, 32, 64), in_channels: int = 3) -> None:
        super().__init__()
        if not is_integer(depth) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth!r}")
        widths = tuple(widths)
        if len(widths) != 3 or any(not isinstance(w, int) or w <= 0 for w in widths):
            raise ValueError(f"widths must be three positive integers, got {widths!r}")
        if not widths[0] <= widths[1] <= widths[2]:
            raise ValueError(f"widths must be non-decreasing (option-A shortcuts zero-pad channels), got {widths!r}")
        check_int("in_channels", in_channels, minimum=1)
        self.depth = depth
        self.widths = widths
        self.in_channels = in_channels
        blocks_per_stage = (depth - 2) // 6

        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_stage(widths[0], widths[0], blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(widths[0], widths[1], blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(widths[1], widths[2], blocks_per_stage, stride=2)
        self.num_features = widths[2]
        self.reset_parameters()

    @staticmethod
    def _make_stage(in_planes: int, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    def reset_parameters(self) -> None:
        """Re-draw every weight as LDAM-DRW's ``_weights_init``: ``kaiming_normal_`` convolutions, default BN."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()

    def forward_features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out.mean(dim=(2, 3))


class ResNet20(ResNetCifar):
    """CIFAR ResNet-20 (3 blocks per stage, 0.27M parameters). See :class:`ResNetCifar`."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__(depth=20, in_channels=in_channels)


class ResNet32(ResNetCifar):
    """CIFAR ResNet-32 (5 blocks per stage, 0.46M parameters), the CIFAR-LT backbone of LDAM-DRW and the survey."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__(depth=32, in_channels=in_channels)


class ResNet44(ResNetCifar):
    """CIFAR ResNet-44 (7 blocks per stage, 0.66M parameters). See :class:`ResNetCifar`."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__(depth=44, in_channels=in_channels)


class ResNet56(ResNetCifar):
    """CIFAR ResNet-56 (9 blocks per stage, 0.85M parameters). See :class:`ResNetCifar`."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__(depth=56, in_channels=in_channels)


class ResNet110(ResNetCifar):
    """CIFAR ResNet-110 (18 blocks per stage, 1.7M parameters). See :class:`ResNetCifar`."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__(depth=110, in_channels=in_channels)
