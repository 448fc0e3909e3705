"""``DeferredReweighting`` (DRW): switch the criterion's class weights on at epoch ``E``.

Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS
2019, Alg. 1: train with the loss unweighted until epoch ``E`` (160 of 200 on CIFAR-LT), then re-weight class ``c``
by the effective-number weight of Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019:

    w_c = (1 - beta) / (1 - beta^{n_c}),  normalised so that sum_c w_c = C,  beta = 0.9999,

(LDAM-DRW's ``betas = [0, 0.9999]``: beta = 0 before ``E`` gives all-ones weights). ``weighting="inverse_power"``
uses ``w_c ∝ n_c^{-power}`` instead (normalised to sum ``C``), and any callable ``counts -> weights`` may be given.

The callback works with every loss that exposes ``set_class_weights(weights | None)`` and keeps its weights in a
registered ``class_weights`` buffer (weighted CE, focal, class-balanced, LDAM, ...): from ``E`` it calls
``criterion.set_class_weights(w)``, before ``E`` ``criterion.set_class_weights(None)`` (the loss's own default).
The weights are computed from the module's ``class_counts`` buffer, the single path of the class prior.

Everything derives from the epoch: :meth:`DeferredReweighting.apply` is idempotent and runs from ``on_train_start``
(also after a mid-epoch resume, where ``on_train_epoch_start`` is skipped) and ``on_train_epoch_start``; the weights
live in the criterion's buffer and are saved with the model. Resuming before or after ``E`` gives the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from lt_lightning.callbacks._schedule import EpochSchedule
from lt_lightning.losses.weighting import effective_number_weights, inverse_power_weights
from lt_lightning.schedule import validate_epoch_value

__all__ = ["DeferredReweighting"]

Weighting = Literal["effective_number", "inverse_power"]


class DeferredReweighting(EpochSchedule):
    """From epoch ``switch_epoch`` on, set the criterion's class weights from the training class counts.

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.deferred_reweighting.DeferredReweighting
          init_args: {switch_epoch: 160, weighting: effective_number, beta: 0.9999}

    Args:
        switch_epoch: ``E``, the 0-based epoch from which the weights are on (160 in the 200-epoch CIFAR recipe), or
            a fraction of ``trainer.max_epochs`` in ``(0, 1)`` (``0.8``: epoch 160 of 200, 32 of a 40-epoch budget).
        weighting: ``"effective_number"`` (``(1 - beta) / (1 - beta^{n_c})``), ``"inverse_power"``
            (``n_c^{-power}``), or a callable ``class_counts [C] -> weights [C]``; the named ones sum to ``C``.
        beta: ``beta`` of ``"effective_number"``, in ``[0, 1)``.
        power: exponent of ``"inverse_power"``, ``>= 0`` (1 inverse frequency, 1/2 inverse square root).

    Attributes:
        active: whether the weights were on at the last :meth:`apply`.
        epoch: the epoch :meth:`apply` was last called with.
    """

    log_key = "drw/active"

    def __init__(
        self,
        switch_epoch: int | float = 160,
        weighting: Weighting | Callable[[Tensor], Tensor] = "effective_number",
        beta: float = 0.9999,
        power: float = 1.0,
    ) -> None:
        super().__init__()
        switch_epoch = validate_epoch_value(switch_epoch, "switch_epoch")
        if isinstance(weighting, str):
            if weighting not in ("effective_number", "inverse_power"):
                raise ValueError(
                    f"weighting must be 'effective_number', 'inverse_power' or a callable, got {weighting!r}"
                )
        elif not callable(weighting):
            raise ValueError(f"weighting must be 'effective_number', 'inverse_power' or a callable, got {weighting!r}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if not power >= 0.0:
            raise ValueError(f"power must be >= 0, got {power}")
        self.switch_epoch = switch_epoch
        #: the 0-based switch epoch (a fraction is resolved against ``trainer.max_epochs`` at setup)
        self.resolved_switch_epoch: int | None = switch_epoch if isinstance(switch_epoch, int) else None
        self.weighting = weighting
        self.beta = float(beta)
        self.power = float(power)
        self.active: bool | None = None
        self.epoch: int | None = None

    # ------------------------------------------------------------------ identity and state
    def _weighting_name(self) -> str:
        if isinstance(self.weighting, str):
            return self.weighting
        return f"{getattr(self.weighting, '__module__', '?')}.{getattr(self.weighting, '__qualname__', self.weighting)}"

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            switch_epoch=self.switch_epoch, weighting=self._weighting_name(), beta=self.beta, power=self.power
        )

    def _config(self) -> dict[str, Any]:
        name = self._weighting_name()
        return {"switch_epoch": self.switch_epoch, "weighting": name, "beta": self.beta, "power": self.power}

    # ------------------------------------------------------------------ weights
    def class_weights(self, class_counts: Tensor) -> Tensor:
        """The deferred weights ``[C]`` for ``class_counts`` (on the counts' device, float32)."""
        counts = torch.as_tensor(class_counts)
        if self.weighting == "effective_number":
            weights = effective_number_weights(counts, self.beta)
        elif self.weighting == "inverse_power":
            weights = inverse_power_weights(counts, self.power)
        else:
            weights = torch.as_tensor(self.weighting(counts))  # type: ignore[operator]
        if weights.shape != counts.shape:
            raise ValueError(
                f"weighting {self._weighting_name()} returned shape {tuple(weights.shape)} for class_counts of shape "
                f"{tuple(counts.shape)}"
            )
        if not torch.isfinite(weights).all():
            raise ValueError(f"weighting {self._weighting_name()} returned non-finite weights {weights.tolist()}")
        return weights.to(device=counts.device, dtype=torch.float32)

    @staticmethod
    def _criterion(pl_module: pl.LightningModule) -> Any:
        criterion = getattr(pl_module, "criterion", None)
        if criterion is None:
            raise ValueError(
                f"DeferredReweighting needs `{type(pl_module).__name__}.criterion` (a loss with set_class_weights); "
                "the module has none"
            )
        if not callable(getattr(criterion, "set_class_weights", None)):
            raise ValueError(
                f"DeferredReweighting: criterion {type(criterion).__name__} has no set_class_weights(weights): use a "
                "loss that accepts per-class weights (weighted CE, focal, class-balanced, LDAM, ...)"
            )
        return criterion

    @staticmethod
    def _class_counts(pl_module: pl.LightningModule) -> Tensor:
        counts = getattr(pl_module, "class_counts", None)
        if not isinstance(counts, Tensor):
            raise ValueError(
                f"DeferredReweighting needs `{type(pl_module).__name__}.class_counts` (a [C] tensor of training "
                f"counts, as LongTailModule has), got {type(counts).__name__}"
            )
        return counts

    # ------------------------------------------------------------------ hooks
    def apply(self, pl_module: pl.LightningModule, epoch: int) -> bool:
        """Set the criterion's weights for ``epoch`` (idempotent): ``None`` before ``E``, the weights from ``E``."""
        criterion = self._criterion(pl_module)
        self.epoch = int(epoch)
        if self.resolved_switch_epoch is None:
            raise RuntimeError(f"DeferredReweighting: switch_epoch={self.switch_epoch} is resolved at setup (fit)")
        self.active = self.epoch >= self.resolved_switch_epoch
        criterion.set_class_weights(self.class_weights(self._class_counts(pl_module)) if self.active else None)
        return self.active

    def _setup_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # fail at start-up, not at epoch E
        self._criterion(pl_module)
        self.class_weights(self._class_counts(pl_module))
        self.resolved_switch_epoch = self.resolve_point(self.switch_epoch, trainer, "switch_epoch")

    def _apply_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> bool:
        return self.apply(pl_module, epoch)
