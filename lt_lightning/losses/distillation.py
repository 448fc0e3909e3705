"""Knowledge distillation from a frozen teacher, with DiVE's balanced (flattened) teacher.

* **KD** -- Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015: the student matches the
  teacher's softened distribution ``p_t^T = softmax(z_t / T)`` with its own ``p_s^T = softmax(z_s / T)``; the KL term is
  scaled by ``T^2`` so that its gradients keep their size when ``T`` changes (Hinton et al., Sec. 2).
* **DiVE** -- He, Wu, Wei, "Distilling Virtual Examples for Long-tailed Recognition", ICCV 2021: the teacher's
  predictions are "virtual examples"; distilling from a teacher whose virtual-example distribution is *flatter* than the
  long-tailed input helps the tail classes. DiVE uses a balanced-softmax teacher (its raw logits already estimate the
  balanced posterior, so no further prior adjustment is applied), the temperature, and a *power normalisation* of the
  teacher's softened distribution with power ``p`` (``p = 0.5`` on CIFAR-LT):

  ``p̃_t = (p_t^T)^p / Σ_c (p_t^T)_c^p``.

  Since ``(softmax(z/T))^p ∝ exp(p z / T)``, this equals ``softmax(p z_t / T)``: power ``p`` is the teacher at
  temperature ``T / p`` while the student stays at ``T`` (``p = 1`` is plain KD; ``p < 1`` flattens the teacher).

The loss (Hinton et al.'s weighting, as DiVE writes its objective and as the public DiVE codes compute it):

``L = (1 - α) · base(z_s, y) + α · T^2 · KL(p̃_t ‖ softmax(z_s / T))``,

with ``KL(p ‖ q) = 1/B Σ_i Σ_c p_ic (log p_ic - log q_ic)`` (mean over the batch, sum over classes). DiVE's base is
balanced softmax (``BalancedSoftmaxLoss``); the default here is cross-entropy. Soft targets ``[B, C]`` (mixup) go to
the base loss as they are; the KD term does not read ``y``. With a one-hot teacher distribution and ``T = 1`` the KL
term equals cross-entropy (the one-hot target has zero entropy).

The teacher's logits come from ``output.extras["teacher_logits"]``, filled by the
:class:`~lt_lightning.callbacks.knowledge_distillation.KnowledgeDistillation` callback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning._checks import check_float
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.losses.cross_entropy import CrossEntropyLoss
from lt_lightning.output import ModelOutput

__all__ = ["DistillationLoss", "distillation_loss", "kd_divergence", "teacher_distribution"]

#: the key of ``output.extras`` that holds the teacher's logits
TEACHER_KEY = "teacher_logits"


def _positive(value: float, name: str) -> float:
    return float(check_float(name, value, minimum=0, exclusive_minimum=True))


def _weight(alpha: float) -> float:
    what = "a finite number in [0, 1] (the weight of the distillation term)"
    return float(check_float("alpha", alpha, minimum=0, maximum=1, what=what))


def _check_pair(student_logits: Tensor, teacher: Tensor, what: str) -> None:
    if student_logits.ndim != 2:
        raise ValueError(f"student logits must be [B, C], got shape {tuple(student_logits.shape)}")
    if teacher.shape != student_logits.shape:
        raise ValueError(
            f"{what} shape {tuple(teacher.shape)} does not match the student's logits {tuple(student_logits.shape)}"
            " (a teacher of another number of classes?)"
        )


def teacher_distribution(teacher_logits: Tensor, temperature: float = 1.0, power: float = 1.0) -> Tensor:
    """DiVE's flattened teacher ``p̃ = (softmax(z_t/T))^p / Σ_c (softmax(z_t/T))_c^p = softmax(p z_t / T)``, detached.

    Args:
        teacher_logits: ``[B, C]`` teacher scores ``z_t``.
        temperature: ``T > 0``.
        power: ``p > 0`` of the power normalisation (1: none; DiVE uses 0.5).
    """
    if teacher_logits.ndim != 2:
        raise ValueError(f"teacher logits must be [B, C], got shape {tuple(teacher_logits.shape)}")
    temperature = _positive(temperature, "temperature")
    power = _positive(power, "teacher_power")
    return F.softmax(teacher_logits.detach().float() * (power / temperature), dim=1)


def kd_divergence(student_logits: Tensor, teacher_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 · 1/B Σ_i KL(p_i ‖ softmax(z_s,i / T))`` for a teacher distribution ``p`` ``[B, C]`` (rows sum to 1).

    ``0 · log 0`` is taken as 0, so an exactly one-hot ``p`` is allowed (then, at ``T = 1``, this is cross-entropy).
    """
    _check_pair(student_logits, teacher_probs, "teacher distribution")
    temperature = _positive(temperature, "temperature")
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    p = teacher_probs.detach().to(log_q.dtype)
    kl = (torch.xlogy(p, p) - p * log_q).sum(dim=1).mean()
    return kl * temperature**2


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    base_loss: Tensor | None,
    temperature: float = 1.0,
    alpha: float = 0.5,
    teacher_power: float = 1.0,
) -> Tensor:
    """``(1 - α) · base + α · T^2 · KL(p̃_t ‖ softmax(z_s / T))`` with ``p̃_t`` from :func:`teacher_distribution`.

    Args:
        student_logits: ``[B, C]`` student scores ``z_s``.
        teacher_logits: ``[B, C]`` teacher scores ``z_t`` (no gradient flows into them).
        base_loss: the base criterion's value on the labels (``None`` allowed only when ``alpha == 1``).
        temperature: ``T > 0`` of both distributions.
        alpha: weight ``α`` in ``[0, 1]`` of the distillation term.
        teacher_power: power ``p > 0`` of DiVE's power normalisation (1: plain KD).
    """
    alpha = _weight(alpha)
    _check_pair(student_logits, teacher_logits, "teacher logits")
    if base_loss is None and alpha < 1.0:
        raise ValueError(f"base_loss is needed when alpha={alpha} < 1")
    kd = kd_divergence(student_logits, teacher_distribution(teacher_logits, temperature, teacher_power), temperature)
    if alpha == 1.0:
        return kd
    if alpha == 0.0:
        return base_loss
    return (1.0 - alpha) * base_loss + alpha * kd


class DistillationLoss(LongTailLoss):
    """Knowledge distillation (Hinton et al. 2015) with DiVE's power-normalised teacher (He et al., ICCV 2021).

    ``L = (1 - α) · base(output, y) + α · T^2 · KL(p̃_t ‖ softmax(z_s / T))``, ``p̃_t ∝ softmax(z_t / T)^p``. Needs
    the :class:`~lt_lightning.callbacks.knowledge_distillation.KnowledgeDistillation` callback, which puts the frozen
    teacher's logits into ``output.extras["teacher_logits"]``.

    YAML (``model.init_args.criterion``)::

        class_path: lt_lightning.losses.distillation.DistillationLoss
        init_args:
          base: {class_path: lt_lightning.losses.logit_adjustment.BalancedSoftmaxLoss}   # DiVE's base
          temperature: 3.0
          alpha: 0.5
          teacher_power: 0.5

    Args:
        base: criterion on the labels (any :class:`LongTailLoss`; hard or soft targets pass through); default
            cross-entropy. It is a sub-module, so a class-prior-aware base (balanced softmax) is told the counts.
        temperature: ``T > 0`` of the teacher's and the student's softmax.
        alpha: weight ``α`` in ``[0, 1]`` of the distillation term (``1 - α`` weighs the base loss).
        teacher_power: DiVE's power ``p > 0`` (``1``: plain KD; ``0.5``: DiVE's CIFAR setting).
    """

    def __init__(
        self,
        base: nn.Module | None = None,
        temperature: float = 3.0,
        alpha: float = 0.5,
        teacher_power: float = 1.0,
    ) -> None:
        super().__init__()
        if base is not None and not isinstance(base, nn.Module):
            raise ValueError(f"base must be a criterion (an nn.Module taking (output, target)), got {base!r}")
        self.base = base if base is not None else CrossEntropyLoss()
        self.temperature = _positive(temperature, "temperature")
        self.alpha = _weight(alpha)
        self.teacher_power = _positive(teacher_power, "teacher_power")

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        teacher = output.extras.get(TEACHER_KEY)
        if teacher is None:
            raise ValueError(
                f"DistillationLoss needs the teacher's logits in output.extras[{TEACHER_KEY!r}]: add the "
                "KnowledgeDistillation callback (lt_lightning.callbacks.knowledge_distillation.KnowledgeDistillation, "
                "with teacher_checkpoint or teacher_config) to trainer.callbacks"
            )
        base = self.base(output, target) if self.alpha < 1.0 else None
        return distillation_loss(output.logits, teacher, base, self.temperature, self.alpha, self.teacher_power)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}, teacher_power={self.teacher_power}"
