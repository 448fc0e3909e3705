"""RIDE loss: distribution-aware (LDAM-DRW) loss per expert plus the diversity loss (Wang et al., ICLR 2021).

X. Wang, L. Lian, Z. Miao, Z. Liu, S. X. Yu, "Long-tailed Recognition by Routing Diverse Distribution-Aware Experts",
ICLR 2021 (Eq. 3-5; code: frank-xwang/RIDE-LongTailRecognition, ``model/loss.py`` ``RIDELoss``). For the ``E``
expert logits ``z_e`` ``[B, C]`` of a multi-expert head and their mean ``z̄ = (1/E) sum_e z_e`` (the ensemble):

    L = sum_e [ α · L_LDAM-DRW(z_e, y)  +  λ · T̄² · KL( softmax(z̄ / T) ‖ softmax(z_e / T) ) ]

* **individual loss** ``L_LDAM-DRW(z_e, y) = -w_y log softmax(z_e - s m_y e_y)_y`` (weighted mean over the batch): the
  LDAM margin ``m_c = max_m · n_c^{-1/4} / max_k n_k^{-1/4}`` (cosine units) times the logit scale ``s`` is subtracted
  from the true-class logit; ``w`` are the deferred re-weighting (DRW) weights -- ones before the switch epoch, the
  effective-number weights ``(1 - β)/(1 - β^{n_c})`` (normalised to sum ``C``) after it, set by
  :class:`~lt_lightning.callbacks.deferred_reweighting.DeferredReweighting`. ``α`` is ``base_loss_factor`` (1).
* **diversity loss** ``λ · T̄² · KL(p̄ ‖ q_e)`` with ``p̄ = softmax(z̄ / T)`` computed without gradient (the ensemble
  is a fixed target), ``q_e = softmax(z_e / T)``, the KL averaged over the batch (``F.kl_div(log q_e, p̄,
  reduction="batchmean")``). ``λ = diversity_factor`` is *negative*: minimising the loss pushes each expert
  *away* from the ensemble (diverse experts). The reference's CIFAR config
  ``configs/config_imbalance_cifar100_ride.json`` sets ``λ = -0.45`` (so since January 2021: the repository's
  issue #7; its first release had -0.2); ``-0.2`` is the default of its ``RIDELoss`` class and of this one.
  ``T̄²`` keeps the gradient scale independent of ``T`` (Hinton et al.).
* **distribution-aware temperature** (the reference's, active together with DRW): before the switch ``T = T_0``
  (``diversity_temperature``, 1); from the switch a per-class temperature ``T_c = T_0 · v_c`` with
  ``v_c = (C π_c r + 1 - r) / max_k (C π_k r + 1 - r)``, ``π_c = n_c / N`` and ``r = reweight_factor = 0.05``: head
  classes keep ``T_c ≈ T_0``, tail classes get a lower temperature (sharper distributions). ``T̄ = mean_c T_c``.

The reference has no separate ensemble-level loss term. Its one use of the ensemble logits in the individual loss --
when ``diversity_factor == 0`` its code applies the LDAM loss to ``z̄`` instead of ``z_e`` -- is not reproduced: here
``diversity_factor = 0`` gives the plain sum of the experts' individual losses.

Logit scale: RIDE's CIFAR network ends each expert in a normalised linear layer whose cosines are multiplied by
``s = 30`` *in the model* (``use_norm=True``), and its loss subtracts ``s · m_y``. Here the expert heads are
:class:`~lt_lightning.heads.cosine.CosineHead` with ``scale = 30`` (so the ensemble's logits are the reference's
``final_out``), and ``logit_scale`` must be set to that same scale: the loss uses the logits as they come and
subtracts ``logit_scale · m_y``. With unscaled heads (``scale = 1``) set ``logit_scale = 1`` and express ``max_m``
in logit units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.losses.ldam import ldam_loss, ldam_margins
from lt_lightning.losses.weighted import ClassWeightedLoss
from lt_lightning.output import ModelOutput
from lt_lightning.prior import validate_class_counts

__all__ = ["RIDELoss", "check_expert_logits", "ride_diversity_loss", "ride_diversity_temperature", "ride_loss"]

#: reductions of the individual (LDAM) term that combine with the batch-mean diversity term
_REDUCTIONS = ("weighted_mean", "mean")


def check_expert_logits(expert_logits: Tensor | None, who: str = "RIDELoss") -> Tensor:
    """Validate per-expert logits ``[E, B, C]`` (``E >= 1``); return them in float32 at least."""
    if expert_logits is None:
        raise ValueError(
            f"{who} needs per-expert logits (ModelOutput.expert_logits [E, B, C]) from a multi-expert head such as "
            "lt_lightning.heads.multi_expert.MultiExpertHead; the output has none"
        )
    if expert_logits.ndim != 3:
        raise ValueError(f"{who}: expert_logits must be [E, B, C], got shape {tuple(expert_logits.shape)}")
    if expert_logits.shape[0] < 1:
        raise ValueError(f"{who}: expert_logits has {expert_logits.shape[0]} experts; at least 1 is needed")
    if expert_logits.dtype in (torch.float16, torch.bfloat16):
        expert_logits = expert_logits.float()
    return expert_logits


def ride_diversity_temperature(
    class_counts: Sequence[int] | Tensor, base_temperature: float = 1.0, reweight_factor: float = 0.05
) -> Tensor:
    """RIDE's distribution-aware diversity temperature ``T_c = T_0 · v_c`` (float32 ``[C]``).

    ``v_c = (C π_c r + 1 - r) / max_k (C π_k r + 1 - r)`` with ``π_c = n_c / sum_k n_k`` and ``r = reweight_factor``
    (``model/loss.py``: ``per_cls_weights = C * cls_num_list * reweight_factor + 1 - reweight_factor``, divided by its
    maximum). ``r = 0`` gives ``T_c = T_0`` for every class.

    Args:
        class_counts: ``[C]`` training images per class.
        base_temperature: ``T_0 > 0``.
        reweight_factor: ``r`` in ``[0, 1]``; every ``v_c`` must stay positive.
    """
    if not math.isfinite(base_temperature) or base_temperature <= 0:
        raise ValueError(f"diversity temperature must be a finite number > 0, got {base_temperature}")
    if not math.isfinite(reweight_factor) or not 0.0 <= reweight_factor <= 1.0:
        raise ValueError(f"reweight_factor must be in [0, 1], got {reweight_factor}")
    counts = validate_class_counts(class_counts).to(torch.float64)
    if counts.sum() <= 0:
        raise ValueError(f"class_counts must have a positive total, got {counts.tolist()}")
    prior = counts / counts.sum()
    v = counts.numel() * prior * reweight_factor + 1.0 - reweight_factor
    v = v / v.max()
    if not (v > 0).all():
        zero = (v <= 0).nonzero().flatten().tolist()
        raise ValueError(
            f"reweight_factor={reweight_factor} gives a zero diversity temperature for class(es) {zero} (no training "
            "image): lower reweight_factor below 1"
        )
    return (base_temperature * v).to(torch.float32)


def ride_diversity_loss(expert_logits: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
    """``sum_e T̄² · KL( softmax(z̄ / T) ‖ softmax(z_e / T) )``, batch-mean KL, ensemble ``z̄`` without gradient.

    ``z̄ = mean_e z_e``; ``T`` is a scalar or a per-class ``[C]`` temperature (logit ``c`` divided by ``T_c``) and
    ``T̄`` its mean. Zero when all experts agree (``z_e = z̄``). Multiply by a negative factor to encourage diversity.

    Args:
        expert_logits: ``[E, B, C]`` per-expert logits.
        temperature: ``T > 0``, a float or a ``[C]`` tensor.

    Returns:
        A scalar: the sum over experts of the scaled batch-mean KL divergences.
    """
    z = check_expert_logits(expert_logits, "ride_diversity_loss")
    num_classes = z.shape[2]
    if isinstance(temperature, Tensor):
        t = temperature.to(device=z.device, dtype=z.dtype)
        if t.ndim == 0:
            t = t.reshape(1)
        elif t.ndim != 1 or t.shape[0] != num_classes:
            raise ValueError(f"temperature must be a scalar or [{num_classes}], got shape {tuple(t.shape)}")
        if not (torch.isfinite(t).all() and (t > 0).all()):
            raise ValueError(f"temperature must be finite and > 0, got {t.tolist()}")
        t_mean = t.mean()
    else:
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        t = torch.tensor([float(temperature)], device=z.device, dtype=z.dtype)
        t_mean = t[0]
    with torch.no_grad():
        log_p = F.log_softmax(z.mean(dim=0) / t, dim=-1)  # [B, C], the ensemble's distribution (a fixed target)
        p = log_p.exp()
    log_q = F.log_softmax(z / t, dim=-1)  # [E, B, C]
    batch = z.shape[1]
    kl = (p * (log_p - log_q)).sum(dim=(1, 2)) / max(batch, 1)  # [E]: batch-mean KL(p ‖ q_e)
    return t_mean.square() * kl.sum()


def ride_loss(
    expert_logits: Tensor,
    target: Tensor,
    margins: Tensor,
    weight: Tensor | None = None,
    diversity_factor: float = -0.2,
    temperature: float | Tensor = 1.0,
    base_loss_factor: float = 1.0,
    reduction: str = "weighted_mean",
) -> Tensor:
    """RIDE's loss ``sum_e α L_LDAM(z_e, y; m, w) + λ · ride_diversity_loss(z, T)`` (see the module docstring).

    Args:
        expert_logits: ``[E, B, C]`` per-expert logits, already scaled (``s · cos`` for cosine heads).
        target: ``[B]`` class indices or ``[B, C]`` soft targets.
        margins: ``[C]`` margins in logit units (``s · m_c``), subtracted from the true-class logit.
        weight: ``[C]`` DRW class weights of the individual loss, ``None`` for ones.
        diversity_factor: ``λ`` (negative: encourage diversity; 0: no diversity term).
        temperature: ``T``: a float or a ``[C]`` tensor.
        base_loss_factor: ``α``.
        reduction: of the individual loss, ``"weighted_mean"`` (the reference's ``F.cross_entropy(weight=w)``) or
            ``"mean"``.
    """
    z = check_expert_logits(expert_logits)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    for name, value in (("diversity_factor", diversity_factor), ("base_loss_factor", base_loss_factor)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    loss = z.new_zeros(())
    if base_loss_factor != 0:
        for logits in z:
            loss = loss + base_loss_factor * ldam_loss(
                logits, target, margins, s=1.0, weight=weight, reduction=reduction
            )
    if diversity_factor != 0:
        loss = loss + diversity_factor * ride_diversity_loss(z, temperature)
    return loss


class RIDELoss(ClassWeightedLoss):
    """RIDE's per-expert LDAM-DRW loss plus the distribution-aware diversity loss (Wang et al., ICLR 2021).

    Reads ``output.expert_logits`` ``[E, B, C]`` (a multi-expert head); see the module docstring for the formula.
    The margins and the distribution-aware temperatures come from the class counts (:meth:`set_class_counts`, called
    by ``LongTailModule``); :class:`~lt_lightning.callbacks.deferred_reweighting.DeferredReweighting` switches the
    DRW class weights on with :meth:`set_class_weights` -- and with them the distribution-aware temperature, as the
    reference's ``_hook_before_epoch`` does; ``set_class_weights(None)`` switches both off. Both live in buffers
    (``class_weights``, ``reweighted``), so checkpoints carry them.

    Defaults are the reference's ``RIDELoss`` defaults: ``max_m = 0.5``, ``s = 30``, ``base_loss_factor = 1``,
    ``additional_diversity_factor = -0.2``, ``base_diversity_temperature = 1``, ``reweight_factor = 0.05``. Its CIFAR
    config (``config_imbalance_cifar100_ride.json``) overrides the diversity factor to ``-0.45`` (set
    ``diversity_factor=-0.45``, as ``configs/method/ride*.yaml`` do), with DRW (effective number,
    ``β = 0.9999``) from epoch 160 of 200.

    Args:
        max_m: the largest LDAM margin (the rarest class's), in cosine units, ``>= 0``.
        logit_scale: ``s``, the scale the expert heads apply to their cosines (``CosineHead(scale=s)``); margins are
            subtracted as ``s · m_c``. 1 for heads whose logits are not scaled cosines.
        base_loss_factor: ``α``, weight of each expert's individual loss, ``>= 0``.
        diversity_factor: ``λ`` of the diversity loss (negative encourages diversity; 0 disables it).
        diversity_temperature: ``T_0 > 0``.
        reweight_factor: ``r`` of the distribution-aware temperature, in ``[0, 1]``.
        distribution_aware_temperature: use ``T_c = T_0 v_c`` once the DRW weights are on (the reference); ``False``
            keeps ``T_0`` throughout.
        reduction: of the individual loss, ``"weighted_mean"`` (default, the reference's) or ``"mean"``.
    """

    margins: Tensor
    diversity_temperatures: Tensor
    reweighted: Tensor

    def __init__(
        self,
        max_m: float = 0.5,
        logit_scale: float = 30.0,
        base_loss_factor: float = 1.0,
        diversity_factor: float = -0.2,
        diversity_temperature: float = 1.0,
        reweight_factor: float = 0.05,
        distribution_aware_temperature: bool = True,
        reduction: str = "weighted_mean",
    ) -> None:
        super().__init__()
        if not math.isfinite(max_m) or max_m < 0:
            raise ValueError(f"max_m must be a finite number >= 0, got {max_m}")
        if not math.isfinite(logit_scale) or logit_scale <= 0:
            raise ValueError(f"logit_scale must be a finite number > 0, got {logit_scale}")
        if not math.isfinite(base_loss_factor) or base_loss_factor < 0:
            raise ValueError(f"base_loss_factor must be a finite number >= 0, got {base_loss_factor}")
        if not math.isfinite(diversity_factor):
            raise ValueError(f"diversity_factor must be a finite number, got {diversity_factor}")
        if not math.isfinite(diversity_temperature) or diversity_temperature <= 0:
            raise ValueError(f"diversity_temperature must be a finite number > 0, got {diversity_temperature}")
        if not math.isfinite(reweight_factor) or not 0.0 <= reweight_factor <= 1.0:
            raise ValueError(f"reweight_factor must be in [0, 1], got {reweight_factor}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.max_m = float(max_m)
        self.logit_scale = float(logit_scale)
        self.base_loss_factor = float(base_loss_factor)
        self.diversity_factor = float(diversity_factor)
        self.diversity_temperature = float(diversity_temperature)
        self.reweight_factor = float(reweight_factor)
        self.distribution_aware_temperature = bool(distribution_aware_temperature)
        self.reduction = reduction
        self.register_buffer("margins", torch.empty(0))
        self.register_buffer("diversity_temperatures", torch.empty(0))
        self.register_buffer("reweighted", torch.tensor(False))
        #: host copy of ``reweighted`` (read every step without a device sync), refreshed after a state-dict load
        self._reweighted = False
        self.register_load_state_dict_post_hook(RIDELoss._sync_reweighted)

    @staticmethod
    def _sync_reweighted(module: RIDELoss, incompatible_keys: object) -> None:
        module._reweighted = bool(module.reweighted)

    # ------------------------------------------------------------------ class prior and DRW
    def _write(self, name: str, value: Tensor) -> None:
        current = getattr(self, name)
        value = value.to(current.device)
        if value.shape == current.shape:
            current.copy_(value)
        else:
            setattr(self, name, value)

    def on_class_counts(self, class_counts: Tensor) -> None:
        self._write("margins", ldam_margins(class_counts, self.max_m))
        temperatures = ride_diversity_temperature(class_counts, self.diversity_temperature, self.reweight_factor)
        self._write("diversity_temperatures", temperatures)

    def set_class_counts(self, class_counts: Tensor) -> None:
        """Receive the training counts: margins and temperatures from them, weights back to ones (DRW off)."""
        super().set_class_counts(class_counts)
        self.reweighted.fill_(False)
        self._reweighted = False

    def set_class_weights(self, weights: Tensor | None) -> None:
        """DRW switch: ``weights`` on (with the distribution-aware temperature), or ``None`` for both off."""
        super().set_class_weights(weights)
        self.reweighted.fill_(weights is not None)
        self._reweighted = weights is not None

    def temperature(self) -> float | Tensor:
        """The diversity temperature in use: ``T_c`` ``[C]`` once DRW is on (distribution-aware), else ``T_0``."""
        if self.distribution_aware_temperature and self._reweighted and self.diversity_temperatures.numel() > 0:
            return self.diversity_temperatures
        return self.diversity_temperature

    # ------------------------------------------------------------------ loss
    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        expert_logits = check_expert_logits(output.expert_logits)
        if self.margins.numel() == 0:
            raise ValueError(
                "RIDELoss needs the class counts for its margins: call set_class_counts (LongTailModule does it)"
            )
        if expert_logits.shape[2] != self.margins.numel():
            raise ValueError(
                f"RIDELoss: expert_logits have {expert_logits.shape[2]} classes but the class counts have "
                f"{self.margins.numel()}"
            )
        return ride_loss(
            expert_logits,
            target,
            self.logit_scale * self.margins,
            weight=self.weight,
            diversity_factor=self.diversity_factor,
            temperature=self.temperature(),
            base_loss_factor=self.base_loss_factor,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"max_m={self.max_m}, logit_scale={self.logit_scale}, base_loss_factor={self.base_loss_factor}, "
            f"diversity_factor={self.diversity_factor}, diversity_temperature={self.diversity_temperature}, "
            f"reweight_factor={self.reweight_factor}, distribution_aware_temperature="
            f"{self.distribution_aware_temperature}, reduction={self.reduction!r}, {super().extra_repr()}"
        )
