"""BBN's bilateral-branch CIFAR ResNet: structure, training mix of the two halves, inference with α = 0.5."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.backbones.bbn import BBNResNetCifar
from lt_lightning.backbones.resnet_cifar import BasicBlock, ResNet32
from lt_lightning.heads.linear import LinearHead

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int, channels: int = 3, size: int = 8) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(n))


def test_structure_of_bbn_resnet32() -> None:
    net = BBNResNetCifar(depth=32)
    # shared: stem, 5 + 5 blocks, 4 of stage 3's 5; each branch: the last block of stage 3 (64 -> 64)
    assert [len(net.layer1), len(net.layer2), len(net.layer3)] == [5, 5, 4]
    assert isinstance(net.cb_block, BasicBlock) and isinstance(net.rb_block, BasicBlock)
    assert net.num_features == 128 and net.branch_features_dim == 64
    block = sum(p.numel() for p in BasicBlock(64, 64).parameters())
    assert block == 2 * 64 * 64 * 9 + 4 * 64
    # ResNet-32 (463,504) plus one more copy of its last block
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ResNet32().parameters()) + block
    assert any(k.startswith("cb_block.") for k in net.state_dict()) and any(
        k.startswith("rb_block.") for k in net.state_dict()
    )


def test_depth_8_branches_are_the_downsampling_block() -> None:
    net = BBNResNetCifar(depth=8, widths=(4, 8, 16), in_channels=1, alpha=0.5)
    assert len(net.layer3) == 0
    assert net.cb_block.conv1.in_channels == net.rb_block.conv1.in_channels == 8
    assert net.cb_block.stride == net.rb_block.stride == 2
    assert net.train()(_images(4, channels=1)).shape == (2, 32)


def test_training_forward_mixes_the_two_halves() -> None:
    net = BBNResNetCifar(depth=8, widths=(4, 8, 16)).train()
    x = _images(6)
    net.set_alpha(0.3)
    features = net(x)
    assert features.shape == (3, 32)
    # conventional branch on the first half, re-balancing branch on the second, 2 [α f_c ‖ (1 - α) f_r]
    f_c = net.conventional_features(x[:3])
    f_r = net.rebalancing_features(x[3:])
    assert torch.allclose(features, torch.cat((0.6 * f_c, 1.4 * f_r), dim=1), atol=1e-6)
    assert torch.allclose(features, net.mixed_features(x[:3], x[3:], 0.3), atol=1e-6)


def test_alpha_one_trains_only_the_conventional_branch() -> None:
    net = BBNResNetCifar(depth=8, widths=(4, 8, 16), alpha=1.0).train()
    head = LinearHead(32, 3)
    head(net(_images(4))).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in net.rb_block.parameters())
    assert any(p.grad is not None and p.grad.any() for p in net.cb_block.parameters())


def test_inference_uses_both_branches_on_the_same_images_with_alpha_one_half() -> None:
    net = BBNResNetCifar(depth=8, widths=(4, 8, 16))
    net.train()
    net.set_alpha(0.5)
    net(_images(8))  # move the batch-norm running statistics away from their initial values
    net.eval()
    x = _images(5)  # any batch size at inference
    with torch.no_grad():
        out = net(x)
        expected = net.mixed_features(x, x, 0.5)  # 2 [0.5 f_c ‖ 0.5 f_r] = [f_c ‖ f_r]
        for alpha in (0.0, 0.9, None):  # whatever the training alpha is
            net.set_alpha(alpha)
            assert torch.equal(net(x), out)
    assert out.shape == (5, 32)
    assert torch.allclose(out, expected, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(out, torch.cat((net.conventional_features(x), net.rebalancing_features(x)), 1))


def test_bad_input_is_a_clear_error() -> None:
    net = BBNResNetCifar(depth=8, widths=(4, 8, 16)).train()
    with pytest.raises(RuntimeError, match="CumulativeLearning"):
        net(_images(4))  # alpha not set
    net.set_alpha(0.5)
    with pytest.raises(ValueError, match="odd batch of 3"):
        net(_images(3))
    for bad in (-0.5, 1.01, "0.5", True):
        with pytest.raises(ValueError, match="alpha must be"):
            net.set_alpha(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="alpha must be"):
            BBNResNetCifar(depth=8, alpha=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depth must be"):
        BBNResNetCifar(depth=33)


def test_feature_scale_keeps_inference_at_the_alpha_one_half_mix() -> None:
    net = BBNResNetCifar(depth=8, widths=(4, 8, 16), feature_scale=1.0, alpha=0.8).train()
    x = _images(4)
    f_c, f_r = net.conventional_features(x[:2]), net.rebalancing_features(x[2:])
    assert torch.allclose(net(x), torch.cat((0.8 * f_c, 0.2 * f_r), 1), atol=1e-6)  # s [α f_c ‖ (1 - α) f_r]
    net.eval()
    with torch.no_grad():
        both = torch.cat((net.conventional_features(x), net.rebalancing_features(x)), 1)
        assert torch.allclose(net(x), 0.5 * both, atol=1e-6)  # (s / 2) [f_c ‖ f_r]
        assert torch.allclose(net(x), net.mixed_features(x, x, 0.5), atol=1e-6)
    for bad in (0, -1.0, True, "2"):
        with pytest.raises(ValueError, match="feature_scale must be"):
            BBNResNetCifar(depth=8, feature_scale=bad)  # type: ignore[arg-type]
