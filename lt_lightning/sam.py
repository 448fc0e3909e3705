"""Sharpness-aware minimisation (SAM) as an SGD optimizer usable with any method.

Foret, Kleiner, Mobahi, Neyshabur, "Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR 2021
(the reference PyTorch form: davda54/sam ``sam.py``, ``first_step`` / ``second_step``). One step of :class:`SAM`
from the weights ``w`` with the loss ``L``:

    g = grad L(w)                          (the closure at w)
    e = rho g / ||g||_2                    (||.||_2 over every parameter with a gradient; ASAM, ``adaptive``:
                                            e = rho |w|^2 g / || |w| g ||_2, Kwon et al., ICML 2021)
    g' = grad L(w + e)                     (the closure again, at the perturbed weights)
    w <- SGD step from w with the gradient g' (momentum, weight decay and Nesterov as torch.optim.SGD)

``rho = 0`` is plain SGD (``e = 0``, ``g' = g``). The strong recipe of later long-tailed work uses it (e.g. Rangwani
et al., NeurIPS 2022: SAM on CE / LDAM-DRW; DDC, NeurIPS 2023).

It runs inside Lightning's automatic optimisation: Lightning hands ``step`` a closure that runs ``training_step``,
zeroes the gradients and back-propagates; SAM calls it twice. Hence:

* **mixed precision**: ``bf16-mixed`` (and 32-bit) pass the closure to ``step``; ``16-mixed`` steps through a
  GradScaler, which calls ``step`` without the closure: SAM refuses it (a ``ValueError`` naming the precision);
* **DDP**: each closure's backward all-reduces the gradients, so ``g`` and ``g'`` are the global ones and every
  rank perturbs and steps identically;
* **gradient accumulation** would re-run only the last micro-batch at ``w + e``: refused
  (:func:`check_sam_trainer`, called by :class:`~lt_lightning.module.LongTailModule` at fit start);
* the step's logged ``train/loss`` is the loss at ``w`` and BatchNorm running statistics move once per step, with
  the batch at ``w`` (during the second pass, :func:`in_perturbed_pass`, the module skips its loss metric and runs
  under :func:`frozen_batchnorm_statistics`); the optimizer's state is SGD's (the momentum buffers), so resume is
  exact.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from lt_lightning._checks import check_bool, check_float

__all__ = ["SAM", "check_sam_trainer", "frozen_batchnorm_statistics", "in_perturbed_pass"]

_PERTURBED: contextvars.ContextVar[bool] = contextvars.ContextVar("lt_lightning_sam_perturbed", default=False)


def in_perturbed_pass() -> bool:
    """Whether the current ``training_step`` is SAM's second pass, at the perturbed weights ``w + e``."""
    return _PERTURBED.get()


@contextmanager
def _perturbed() -> Iterator[None]:
    token = _PERTURBED.set(True)
    try:
        yield
    finally:
        _PERTURBED.reset(token)


@contextmanager
def frozen_batchnorm_statistics(module: torch.nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``module`` normalise with the batch as usual but leave their running statistics as they
    are (``momentum = 0``), as davda54/sam's ``disable_running_stats`` does for SAM's second pass: the statistics
    move once per step, with the batch at ``w``."""
    layers = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, saved, strict=True):
            m.momentum = momentum


class SAM(torch.optim.SGD):
    """SGD with sharpness-aware minimisation: every step descends with the gradient at ``w + rho g / ||g||``.

    YAML (``model.init_args.optimizer``; ``configs/optimizer/sam.yaml`` swaps it into any config, keeping the
    recipe's ``lr``, ``momentum`` and ``weight_decay``)::

        optimizer:
          class_path: lt_lightning.sam.SAM
          init_args: {lr: 0.1, momentum: 0.9, weight_decay: 0.0002, rho: 0.05}

    Args:
        params: the parameters (or parameter groups).
        lr, momentum, dampening, weight_decay, nesterov: as :class:`torch.optim.SGD`.
        rho: the neighbourhood radius ``rho >= 0`` (0.05 in Foret et al.; 0 is plain SGD).
        adaptive: ASAM's scale-invariant perturbation (Kwon et al., ICML 2021), ``e = rho |w|^2 g / || |w| g ||``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.1,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        rho: float = 0.05,
        adaptive: bool = False,
    ) -> None:
        self.rho = check_float("rho", rho, minimum=0.0)
        self.adaptive = check_bool("adaptive", adaptive)
        super().__init__(
            params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov
        )

    def _parameters_with_grad(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def _perturbation(self) -> dict[torch.Tensor, torch.Tensor]:
        """``e`` per parameter with a gradient (an empty dict when every gradient is zero)."""
        params = self._parameters_with_grad()
        if not params:
            return {}
        scaled = [(p.abs() * p.grad) if self.adaptive else p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in scaled]))
        if not torch.isfinite(norm) or float(norm) == 0.0:
            return {}
        factor = self.rho / norm
        return {
            p: (g * p.abs() if self.adaptive else g) * factor.to(g.dtype) for p, g in zip(params, scaled, strict=True)
        }

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One SAM step: ``closure`` at ``w``, again at ``w + e``, then SGD from ``w`` with the second gradient.

        Raises:
            ValueError: no closure (under ``16-mixed`` Lightning's GradScaler steps without one).
        """
        if closure is None:
            raise ValueError(
                "SAM needs the closure (it evaluates the loss twice per step); Lightning passes it under precision "
                "32 and bf16-mixed, but 16-mixed's GradScaler steps without it: use bf16-mixed or 32"
            )
        with torch.enable_grad():
            loss = closure()
        perturbation = self._perturbation() if self.rho > 0 else {}
        if perturbation:
            with torch.no_grad():
                for p, e in perturbation.items():
                    p.add_(e)
            with torch.enable_grad(), _perturbed():
                closure()
            with torch.no_grad():
                for p, e in perturbation.items():
                    p.sub_(e)
        super().step()
        return loss


def check_sam_trainer(trainer: Any, optimizers: list[Any]) -> None:
    """Refuse what SAM cannot do: gradient accumulation (the second pass would redo only the last micro-batch)."""
    if any(isinstance(getattr(o, "optimizer", o), SAM) for o in optimizers) and trainer.accumulate_grad_batches > 1:
        raise ValueError(
            f"SAM re-evaluates the step's batch at the perturbed weights, which gradient accumulation "
            f"(accumulate_grad_batches={trainer.accumulate_grad_batches}) cannot do: set it to 1"
        )
