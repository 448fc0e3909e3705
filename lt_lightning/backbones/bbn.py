"""BBN's bilateral-branch CIFAR ResNet: a shared trunk, a conventional and a re-balancing branch.

Zhou, Cui, Wei, Chen, "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed Visual Recognition",
CVPR 2020, Sec. 3 (megvii-research/BBN, ``lib/backbone/resnet_cifar.py`` ``BBN_ResNet_Cifar``): the CIFAR ResNet's
stem, stages 1 and 2 and all but the last residual block of stage 3 are shared; the last block of stage 3 exists
twice, ``cb_block`` (conventional learning branch) and ``rb_block`` (re-balancing branch), each followed by global
average pooling to ``D`` features. For ResNet-32 that is 4 shared blocks of stage 3 and one block per branch.

Training (``self.training``): the batch is ``[conventional half | reversed half]`` (a
:class:`~lt_lightning.data.bilateral_sampler.BilateralSampler`); the conventional branch sees the first half, the
re-balancing branch the second, each through its own pass of the shared trunk (as the reference's two forward calls,
so batch-norm statistics are those of each half), and the features are mixed by the cumulative-learning ``α``::

    f = s [α f_c ‖ (1 - α) f_r]          ([B/2, 2D]; s = 2: the reference's ``2 * cat(l f_a, (1 - l) f_b)``)

so that one linear classifier ``W f + b = sα W_c f_c + s(1 - α) W_r f_r + b`` gives the mixed logits
``α ℓ_c + (1 - α) ℓ_r`` (with ``ℓ_c = s W_c f_c + b``, ``ℓ_r = s W_r f_r + b``). ``α`` is set by the
:class:`~lt_lightning.callbacks.bbn_schedule.CumulativeLearning` callback (``1 - (T / T_max)^2``).

Evaluation: both branches run on the same images with ``α = 0.5``, ``f = (s / 2) [f_c ‖ f_r]`` -- for ``s = 2`` the
reference's inference ``torch.cat((cb_block(out), rb_block(out)))`` -- whatever :attr:`BBNResNetCifar.alpha` is.

The scale ``s`` (``feature_scale``) matters: with ``α`` near 1 (the first epochs) or 0 (the last) a branch's features
reach the classifier multiplied by about 2, which doubles the gradients into the network and quadruples the
classifier's effective learning rate. On Digits-LT with the CE recipe (lr 0.05, 30 epochs; single CPU runs) the full
BBN schedule reached 74.0% / 46.0% test accuracy with ``s = 2`` (seeds 0 / 1) and 94.25% with ``s = 1`` (CE: 93.25%);
with ``α = 1`` fixed (conventional branch only, equivalent to CE) ``s = 2`` reached 64.5% validation accuracy where
``s = 1`` and CE reached 94.5%. ``configs/method/digits_lt/bbn.yaml`` therefore uses ``s = 1``; the CIFAR
configs keep the reference's ``s = 2``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lt_lightning._checks import check_float
from lt_lightning.backbones.resnet_cifar import BasicBlock, ResNetCifar

__all__ = ["BBNResNetCifar", "check_alpha"]


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """``alpha`` as a float if it lies in ``[0, 1]``, else ``ValueError``."""
    return float(check_float(name, alpha, minimum=0, maximum=1))


class BBNResNetCifar(ResNetCifar):
    """The CIFAR ResNet of depth ``6n + 2`` with BBN's two branches on its last residual block.

    Args:
        depth: total depth ``6n + 2`` (32 in BBN's CIFAR recipe).
        widths: channels of the three stages (non-decreasing).
        in_channels: channels of the input images.
        alpha: cumulative-learning ``α`` for training forwards; ``None`` (default): set by the
            :class:`~lt_lightning.callbacks.bbn_schedule.CumulativeLearning` callback. A fixed value is the
            paper's fixed-α ablation.
        feature_scale: ``s`` of the mixed features ``s [α f_c ‖ (1 - α) f_r]`` (the reference's 2); evaluation
            features are ``(s / 2) [f_c ‖ f_r]``, the training mix at ``α = 0.5``.

    Attributes:
        num_features: ``2D`` (``D = widths[2]``), the concatenated features of both branches.
        branch_features_dim: ``D``.
        alpha: the ``α`` of the next training forward (``None`` until set).
        feature_scale: ``s``.
    """

    def __init__(
        self,
        depth: int = 32,
        widths: tuple[int, int, int] = (16, 32, 64),
        in_channels: int = 3,
        alpha: float | None = None,
        feature_scale: float = 2.0,
    ) -> None:
        super().__init__(depth=depth, widths=widths, in_channels=in_channels)
        if (
            isinstance(feature_scale, bool)
            or not isinstance(feature_scale, (int, float))
            or not (feature_scale > 0 and math.isfinite(feature_scale))
        ):
            raise ValueError(f"feature_scale must be a finite positive number, got {feature_scale!r}")
        last = self.layer3[-1]
        # the last residual block of stage 3 becomes the conventional branch; the re-balancing branch is a copy of
        # its structure (for depth 8, n = 1, that is the down-sampling block itself)
        self.layer3 = nn.Sequential(*list(self.layer3)[:-1])
        in_planes = self.widths[1] if len(self.layer3) == 0 else self.widths[2]
        self.cb_block = last
        self.rb_block = BasicBlock(in_planes, self.widths[2], last.stride)
        self.branch_features_dim = self.widths[2]
        self.num_features = 2 * self.widths[2]
        self.alpha: float | None = None if alpha is None else check_alpha(alpha)
        self.feature_scale = float(feature_scale)
        self.reset_parameters()

    def set_alpha(self, alpha: float | None) -> None:
        """Set the ``α`` of training forwards (``None``: unset, a training forward then raises)."""
        self.alpha = None if alpha is None else check_alpha(alpha)

    # ------------------------------------------------------------------ parts
    def shared_features(self, x: Tensor) -> Tensor:
        """The shared trunk's feature map (stem, stages 1-2, stage 3 without its last block)."""
        out = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(out)))

    def conventional_features(self, x: Tensor) -> Tensor:
        """``f_c``: pooled ``[B, D]`` features of the conventional branch on images ``x``."""
        return self.cb_block(self.shared_features(x)).mean(dim=(2, 3))

    def rebalancing_features(self, x: Tensor) -> Tensor:
        """``f_r``: pooled ``[B, D]`` features of the re-balancing branch on images ``x``."""
        return self.rb_block(self.shared_features(x)).mean(dim=(2, 3))

    # ------------------------------------------------------------------ forward
    def mixed_features(self, x_conventional: Tensor, x_reversed: Tensor, alpha: float) -> Tensor:
        """``s [α f_c(x_conventional) ‖ (1 - α) f_r(x_reversed)]``, ``[B, 2D]`` (``s``: :attr:`feature_scale`)."""
        alpha = check_alpha(alpha)
        f_c = self.conventional_features(x_conventional)
        f_r = self.rebalancing_features(x_reversed)
        return self.feature_scale * torch.cat((alpha * f_c, (1.0 - alpha) * f_r), dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        if not self.training:  # α = 0.5 on the same images, one pass of the trunk: s/2 [f_c ‖ f_r]
            shared = self.shared_features(x)
            features = torch.cat((self.cb_block(shared).mean(dim=(2, 3)), self.rb_block(shared).mean(dim=(2, 3))), 1)
            return features if self.feature_scale == 2.0 else (0.5 * self.feature_scale) * features
        if self.alpha is None:
            raise RuntimeError(
                "BBNResNetCifar.alpha is not set: add the lt_lightning.callbacks.bbn_schedule.CumulativeLearning "
                "callback (it sets alpha every epoch), or give a fixed alpha"
            )
        if x.shape[0] % 2:
            raise ValueError(
                f"BBNResNetCifar trains on [conventional half | reversed half] batches, got an odd batch of "
                f"{x.shape[0]} images: use lt_lightning.data.bilateral_sampler.BilateralSampler with "
                "data.batch_size = 2 x branch_batch_size"
            )
        x_conventional, x_reversed = x.chunk(2)
        return self.mixed_features(x_conventional, x_reversed, self.alpha)
