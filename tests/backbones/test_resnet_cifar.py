"""CIFAR ResNets (LDAM-DRW's ResNet-32): parameter count, shapes, option-A shortcut by hand, Kaiming init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lt_lightning.backbones import ResNet20, ResNet32, ResNet56, ResNetCifar
from lt_lightning.backbones.resnet_cifar import BasicBlock
from lt_lightning.heads.linear import LinearHead


def _ldam_drw_resnet_parameters(depth: int, num_classes: int | None = None, in_channels: int = 3) -> int:
    """Parameters of kaidic/LDAM-DRW ``resnet_cifar.py`` counted from its layer shapes.

    A 3x3 conv without bias from ``c_in`` to ``c_out`` has ``9 c_in c_out`` weights, a BatchNorm ``2 c`` (gamma,
    beta); each basic block is conv-bn-conv-bn; the option-A shortcut has no parameters; the head is
    ``Linear(64, C)`` with bias.
    """
    n = (depth - 2) // 6

    def conv(c_in: int, c_out: int) -> int:
        return 9 * c_in * c_out

    def bn(c: int) -> int:
        return 2 * c

    def block(c_in: int, c_out: int) -> int:
        return conv(c_in, c_out) + bn(c_out) + conv(c_out, c_out) + bn(c_out)

    total = conv(in_channels, 16) + bn(16)
    for c_in, c_out in ((16, 16), (16, 32), (32, 64)):
        total += block(c_in, c_out) + (n - 1) * block(c_out, c_out)
    if num_classes is not None:
        total += 64 * num_classes + num_classes
    return total


def _num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet32_parameter_count_matches_ldam_drw() -> None:
    backbone = ResNet32()
    assert _ldam_drw_resnet_parameters(32) == 463_504
    assert _ldam_drw_resnet_parameters(32, num_classes=10) == 464_154
    assert _num_parameters(backbone) == 463_504
    head = LinearHead(backbone.num_features, 10)
    assert _num_parameters(backbone) + _num_parameters(head) == 464_154


@pytest.mark.parametrize("cls, depth", [(ResNet20, 20), (ResNet56, 56)])
def test_other_depths_parameter_count(cls: type[ResNetCifar], depth: int) -> None:
    assert _num_parameters(cls()) == _ldam_drw_resnet_parameters(depth)


def test_grey_scale_input_channels() -> None:
    backbone = ResNet20(in_channels=1)
    assert _num_parameters(backbone) == _ldam_drw_resnet_parameters(20, in_channels=1)
    assert backbone(torch.zeros(2, 1, 8, 8)).shape == (2, 64)


def test_resnet32_features_shape() -> None:
    torch.manual_seed(0)
    backbone = ResNet32()
    assert backbone.num_features == 64
    x = torch.randn(3, 3, 32, 32)
    features = backbone(x)
    assert features.shape == (3, 64)
    assert torch.isfinite(features).all()
    # forward is forward_features; features follow a ReLU, so they are non-negative averages
    torch.testing.assert_close(backbone.forward_features(x), features)
    assert (features >= 0).all()


def test_channels_last_gives_same_features() -> None:
    torch.manual_seed(0)
    backbone = ResNet20().eval()
    x = torch.randn(2, 3, 32, 32)
    expected = backbone(x)
    got = backbone.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_option_a_shortcut_has_no_parameters() -> None:
    block = BasicBlock(16, 32, stride=2)
    expected = 9 * 16 * 32 + 2 * 32 + 9 * 32 * 32 + 2 * 32
    assert _num_parameters(block) == expected
    names = {name.split(".")[0] for name, _ in block.named_parameters()}
    assert names == {"conv1", "bn1", "conv2", "bn2"}


def test_option_a_shortcut_by_hand() -> None:
    """2 -> 4 channels, stride 2, on a 1x2x4x4 tensor: keep pixels (0,0),(0,2),(2,0),(2,2); one zero channel each
    side (LDAM-DRW: ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``)."""
    block = BasicBlock(2, 4, stride=2)
    x = torch.arange(32, dtype=torch.float32).reshape(1, 2, 4, 4)
    expected = torch.tensor(
        [
            [
                [[0.0, 0.0], [0.0, 0.0]],
                [[0.0, 2.0], [8.0, 10.0]],
                [[16.0, 18.0], [24.0, 26.0]],
                [[0.0, 0.0], [0.0, 0.0]],
            ]
        ]
    )
    torch.testing.assert_close(block.shortcut(x), expected)
    # LDAM-DRW's LambdaLayer, written out
    ldam = nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4 // 4, 4 // 4), "constant", 0)
    torch.testing.assert_close(block.shortcut(x), ldam)


def test_identity_shortcut_when_shapes_match() -> None:
    block = BasicBlock(4, 4, stride=1)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(block.shortcut(x), x)


def test_block_output_is_relu_of_residual_plus_shortcut() -> None:
    torch.manual_seed(0)
    block = BasicBlock(2, 4, stride=2).eval()
    x = torch.randn(1, 2, 4, 4)
    residual = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), torch.relu(residual + block.shortcut(x)))


def test_kaiming_normal_init() -> None:
    """Convs drawn from N(0, 2 / fan_in) (kaiming_normal_, fan-in, ReLU gain); BN starts at gamma 1, beta 0."""
    torch.manual_seed(0)
    backbone = ResNet32()
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 31  # stem + 15 blocks x 2
    # the 64 -> 64 convs of stage 3 (9 of them, 36,864 weights each) pooled: std of the estimate ~ 0.2 %
    stage3 = torch.cat([c.weight.flatten() for c in convs if c.in_channels == 64])
    assert stage3.std().item() == pytest.approx(math.sqrt(2.0 / (64 * 9)), rel=0.02)
    assert abs(stage3.mean().item()) < 0.01 * math.sqrt(2.0 / (64 * 9))
    for conv in convs:
        fan_in = conv.in_channels * 9
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.15)
        assert conv.bias is None
    for bn in (m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_reset_parameters_redraws_weights() -> None:
    backbone = ResNet20()
    before = backbone.conv1.weight.clone()
    with torch.no_grad():
        backbone.bn1.weight.fill_(3.0)
    backbone.reset_parameters()
    assert not torch.equal(before, backbone.conv1.weight)
    assert torch.equal(backbone.bn1.weight, torch.ones(16))


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    backbone = ResNet20()
    backbone(torch.randn(2, 3, 8, 8)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in backbone.parameters())


@pytest.mark.parametrize("depth", [30, 4, 32.0, True])
def test_bad_depth(depth: object) -> None:
    with pytest.raises(ValueError, match="depth"):
        ResNetCifar(depth=depth)  # type: ignore[arg-type]


@pytest.mark.parametrize("widths", [(16, 32), (32, 16, 64), (16, 0, 64)])
def test_bad_widths(widths: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="widths"):
        ResNetCifar(depth=20, widths=widths)  # type: ignore[arg-type]


def test_bad_in_channels() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        ResNet32(in_channels=0)


def test_block_rejects_narrowing_and_bad_stride() -> None:
    with pytest.raises(ValueError, match="planes"):
        BasicBlock(32, 16)
    with pytest.raises(ValueError, match="stride"):
        BasicBlock(16, 16, stride=3)
