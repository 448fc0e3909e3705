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

:class:`ImbSAM` (Zhou, Qu, Xu, Wang, Wang, "ImbSAM: A Closer Look at Sharpness-Aware Minimization in
Class-Imbalanced Recognition", ICCV 2023; cool-xuan/Imbalanced_SAM ``imbsam.py`` and ``utils/trainval.py``
``forbackward``) restricts the sharpness term to the tail classes (fewer than ``tail_threshold`` training images):
with ``L = L_head + L_tail``, ``L_S = (1/B) sum_{i in S} l_i``, the step descends with
``grad L_head(w) + grad L_tail(w + rho g_t / ||g_t||)``, ``g_t = grad L_tail(w)``. The module computes ``L_tail``
when :func:`tail_loss_threshold` is set (:func:`tail_rows`: the criterion on the batch's tail rows times
``n_tail / B``).
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from lt_lightning._checks import check_bool, check_float, check_int

__all__ = [
    "SAM",
    "ImbSAM",
    "check_sam_trainer",
    "frozen_batchnorm_statistics",
    "in_perturbed_pass",
    "tail_loss_threshold",
    "tail_rows",
]

_PERTURBED: contextvars.ContextVar[bool] = contextvars.ContextVar("lt_lightning_sam_perturbed", default=False)
_TAIL: contextvars.ContextVar[int | None] = contextvars.ContextVar("lt_lightning_imbsam_tail", default=None)


def tail_loss_threshold() -> int | None:
    """During :class:`ImbSAM`'s tail passes, its ``tail_threshold``: ``training_step`` then returns the loss of the
    tail classes only (:func:`tail_rows`); ``None`` otherwise (the whole batch's loss)."""
    return _TAIL.get()


@contextmanager
def _tail_pass(threshold: int) -> Iterator[None]:
    token = _TAIL.set(threshold)
    try:
        yield
    finally:
        _TAIL.reset(token)


def tail_rows(output: Any, target: torch.Tensor, class_counts: torch.Tensor, threshold: int) -> tuple[Any, Any, float]:
    """The rows of a batch whose class has fewer than ``threshold`` training images, and ``n_tail / B``.

    ``criterion(rows) * n_tail / B`` is ImbSAM's tail loss ``(1/B) sum_{tail} l_i`` for a loss averaged over the batch
    (cool-xuan/Imbalanced_SAM ``utils/trainval.py``: ``loss[tail_mask].sum() / targets.size(0)``). A soft target
    ``[B, C]`` (mixing) counts as its most likely class. Every tensor of the :class:`~lt_lightning.output.ModelOutput`
    with ``B`` rows is restricted (``expert_logits`` along its second dimension). Returns ``(None, None, 0.0)`` when no
    row is a tail one (one host-device synchronisation).
    """
    classes = target.argmax(dim=1) if target.dim() == 2 else target
    mask = class_counts.to(classes.device)[classes] < threshold
    n = int(mask.sum())
    if n == 0:
        return None, None, 0.0
    b = mask.shape[0]

    def rows(t: Any) -> Any:
        return t[mask] if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == b else t

    fields = {f.name: getattr(output, f.name) for f in dataclasses.fields(output)}
    fields["logits"], fields["features"] = rows(output.logits), rows(output.features)
    if output.expert_logits is not None:
        fields["expert_logits"] = output.expert_logits[:, mask]
    fields["extras"] = {k: rows(v) for k, v in output.extras.items()}
    return type(output)(**fields), target[mask], n / b


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


class ImbSAM(SAM):
    """Imbalanced SAM: SGD whose step descends with ``grad L_head(w) + grad L_tail(w + e)``, ``e = rho g_t / ||g_t||``.

    Zhou et al., ICCV 2023 (cool-xuan/Imbalanced_SAM ``imbsam.py``: ``first_step`` keeps the head gradient,
    ``second_step`` perturbs along the tail gradient, ``third_step`` adds the tail gradient at ``w + e`` to the head
    one). The tail classes are those with fewer than ``tail_threshold`` training images (the reference's ``eta``, 20 on
    CIFAR-100-LT); ``L_S = (1/B) sum_{i in S} l_i``. Within Lightning's closure, one step runs three forward /
    backward passes (the reference two forwards and three backwards):

        g = grad L(w)               (the closure: the step's loss, logged; BatchNorm statistics move)
        g_t = grad L_tail(w)        (the closure with :func:`tail_loss_threshold` set; g_h = g - g_t)
        e = rho g_t / ||g_t||       (ASAM's with ``adaptive``; 0 when no tail sample is in the batch)
        g'_t = grad L_tail(w + e)   (the closure again)
        w <- SGD step from w with g_h + g'_t

    The two tail passes run as SAM's second pass (:func:`in_perturbed_pass`: no loss metric, frozen BatchNorm
    statistics). ``tail_threshold = 0`` (no tail class) is SGD; a threshold above every class count (every class
    tail) is :class:`SAM`. YAML: ``configs/optimizer/imbsam.yaml``.

    Args:
        params, lr, momentum, dampening, weight_decay, nesterov, rho, adaptive: as :class:`SAM`.
        tail_threshold: a class is a tail class when it has fewer training images (``>= 0``).
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
        tail_threshold: int = 20,
    ) -> None:
        self.tail_threshold = int(check_int("tail_threshold", tail_threshold, minimum=0))
        super().__init__(params, lr, momentum, dampening, weight_decay, nesterov, rho, adaptive)

    def _gradients(self) -> dict[torch.Tensor, torch.Tensor]:
        return {p: p.grad.detach().clone() for p in self._parameters_with_grad()}

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One ImbSAM step (see the class); the closure must honour :func:`tail_loss_threshold`.

        Raises:
            ValueError: no closure (as :meth:`SAM.step`).
        """
        if closure is None:
            raise ValueError(
                "ImbSAM needs the closure (it evaluates the loss three times per step); Lightning passes it under "
                "precision 32 and bf16-mixed, but 16-mixed's GradScaler steps without it: use bf16-mixed or 32"
            )
        with torch.enable_grad():
            loss = closure()
        full = self._gradients()
        with torch.enable_grad(), _perturbed(), _tail_pass(self.tail_threshold):
            closure()
        tail = self._gradients()
        perturbation = self._perturbation() if self.rho > 0 else {}
        if perturbation:
            with torch.no_grad():
                for p, e in perturbation.items():
                    p.add_(e)
            with torch.enable_grad(), _perturbed(), _tail_pass(self.tail_threshold):
                closure()
            with torch.no_grad():
                for p, e in perturbation.items():
                    p.sub_(e)
            perturbed_tail = self._gradients()
        else:
            perturbed_tail = tail
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p not in full and p not in perturbed_tail:
                        p.grad = None
                        continue
                    g = full[p] - tail[p] if p in tail else full.get(p, torch.zeros_like(p))
                    p.grad = g + perturbed_tail[p] if p in perturbed_tail else g
        torch.optim.SGD.step(self)
        return loss


def check_sam_trainer(trainer: Any, optimizers: list[Any]) -> None:
    """Refuse what SAM cannot do: gradient accumulation (the second pass would redo only the last micro-batch)."""
    if any(isinstance(getattr(o, "optimizer", o), SAM) for o in optimizers) and trainer.accumulate_grad_batches > 1:
        raise ValueError(
            f"SAM re-evaluates the step's batch at the perturbed weights, which gradient accumulation "
            f"(accumulate_grad_batches={trainer.accumulate_grad_batches}) cannot do: set it to 1"
        )
