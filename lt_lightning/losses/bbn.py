"""BBN's bilateral loss: the mixed logits scored against both halves' labels, weighted by ``α``.

Zhou, Cui, Wei, Chen, "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed Visual Recognition",
CVPR 2020, Eq. (3) (megvii-research/BBN, ``lib/core/combiner.py`` ``bbn_mix``)::

    L = α E(z, y_c) + (1 - α) E(z, y_r)

with ``z`` the logits of the mixed features ``2 [α f_c ‖ (1 - α) f_r]`` (one row per pair of images), ``y_c`` the
labels of the conventional (instance-balanced) half of the batch, ``y_r`` those of the reversed half, and ``E`` the
base criterion (softmax cross-entropy in the paper's CIFAR recipe). ``α`` is set every epoch by the
:class:`~lt_lightning.callbacks.bbn_schedule.CumulativeLearning` callback, the same value as the backbone's.

The training batch is ``[conventional half | reversed half]``, so the target has twice as many rows as the logits:
``y_c = target[:B]``, ``y_r = target[B:]``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from lt_lightning.backbones.bbn import check_alpha
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.losses.cross_entropy import CrossEntropyLoss, cross_entropy
from lt_lightning.output import ModelOutput

__all__ = ["BilateralLoss", "bilateral_loss", "split_bilateral_target"]


def split_bilateral_target(target: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """``(y_c, y_r) = (target[:rows], target[rows:])``; ``ValueError`` unless ``target`` has ``2 * rows`` rows."""
    if target.ndim not in (1, 2) or target.shape[0] != 2 * rows:
        raise ValueError(
            f"BBN's loss needs the labels of both halves of the batch: target of {2 * rows} rows for {rows} rows of "
            f"logits, got target of shape {tuple(target.shape)}. Train with "
            "lt_lightning.data.bilateral_sampler.BilateralSampler (data.batch_size = 2 x branch_batch_size) and "
            "lt_lightning.backbones.bbn.BBNResNetCifar"
        )
    return target[:rows], target[rows:]


def bilateral_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float,
    criterion: Callable[[Tensor, Tensor], Tensor] = cross_entropy,
) -> Tensor:
    """``α E(z, y_c) + (1 - α) E(z, y_r)`` with ``(y_c, y_r)`` the two halves of ``target``.

    Args:
        logits: ``[B, C]`` logits of the mixed features.
        target: ``[2B]`` class indices (or ``[2B, C]`` soft targets): the conventional half, then the reversed half.
        alpha: cumulative-learning ``α`` in ``[0, 1]``.
        criterion: ``E(logits, target) -> scalar`` (default softmax cross-entropy).
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, C], got shape {tuple(logits.shape)}")
    alpha = check_alpha(alpha)
    y_c, y_r = split_bilateral_target(target, logits.shape[0])
    return alpha * criterion(logits, y_c) + (1.0 - alpha) * criterion(logits, y_r)


class BilateralLoss(LongTailLoss):
    """``α E(output, y_c) + (1 - α) E(output, y_r)``, ``E`` any criterion reading a :class:`ModelOutput`.

    YAML (``model.init_args.criterion``)::

        class_path: lt_lightning.losses.bbn.BilateralLoss

    Args:
        criterion: the base criterion ``E`` (default :class:`~lt_lightning.losses.cross_entropy.CrossEntropyLoss`,
            the paper's); a class-prior-aware one (LDAM, balanced softmax, ...) is told the class counts by the
            module, as a sub-module of this loss.
        alpha: ``α``; ``None`` (default): set by the
            :class:`~lt_lightning.callbacks.bbn_schedule.CumulativeLearning` callback.

    Attributes:
        alpha: the ``α`` of the next call (``None`` until set).
    """

    def __init__(self, criterion: nn.Module | None = None, alpha: float | None = None) -> None:
        super().__init__()
        self.criterion = criterion if criterion is not None else CrossEntropyLoss()
        self.alpha: float | None = None if alpha is None else check_alpha(alpha)

    def set_alpha(self, alpha: float | None) -> None:
        """Set ``α`` (``None``: unset, a call then raises)."""
        self.alpha = None if alpha is None else check_alpha(alpha)

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        if self.alpha is None:
            raise RuntimeError(
                "BilateralLoss.alpha is not set: add the lt_lightning.callbacks.bbn_schedule.CumulativeLearning "
                "callback (it sets alpha every epoch), or give a fixed alpha"
            )
        y_c, y_r = split_bilateral_target(target, output.logits.shape[0])
        return self.alpha * self.criterion(output, y_c) + (1.0 - self.alpha) * self.criterion(output, y_r)
