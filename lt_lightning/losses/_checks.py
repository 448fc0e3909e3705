"""Input checks shared by the losses: logits/target shapes, soft-target expansion, and the NaN/inf guard."""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: how many class ids :func:`check_finite_loss` lists before it abbreviates
_MAX_LISTED_CLASSES = 100


def check_logits_target(logits: Tensor, target: Tensor) -> bool:
    """Validate ``logits`` ``[B, C]`` against ``target``; return ``True`` for soft targets.

    ``target`` is either ``[B]`` integer class indices (hard) or ``[B, C]`` floating-point soft targets (rows are
    distributions over classes: mixup, label smoothing). Index range is left to the loss kernels (checking it here
    would force a host-device sync every step).
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, C], got shape {tuple(logits.shape)}")
    batch, num_classes = logits.shape
    if target.ndim == 1:
        if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
            raise ValueError(f"hard targets must be integer class indices, got dtype {target.dtype}")
        if target.shape[0] != batch:
            raise ValueError(f"target has {target.shape[0]} entries but logits has batch size {batch}")
        return False
    if target.ndim == 2:
        if not target.dtype.is_floating_point:
            raise ValueError(f"soft targets [B, C] must be floating point, got dtype {target.dtype}")
        if tuple(target.shape) != (batch, num_classes):
            raise ValueError(f"soft target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
        return True
    raise ValueError(f"target must be [B] class indices or [B, C] soft targets, got shape {tuple(target.shape)}")


def target_distribution(target: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Targets as a ``[B, C]`` distribution: one-hot rows for class indices ``[B]``, soft targets as given.

    Uses ``scatter`` (no host sync), so class indices are not range-checked on accelerators.
    """
    if target.ndim == 1 and not target.dtype.is_floating_point:
        out = torch.zeros(target.shape[0], num_classes, dtype=dtype, device=target.device)
        return out.scatter_(1, target.long().unsqueeze(1), 1.0)
    if target.ndim == 2 and target.dtype.is_floating_point:
        if target.shape[1] != num_classes:
            raise ValueError(f"soft target must be [B, {num_classes}], got shape {tuple(target.shape)}")
        return target.to(dtype)
    raise ValueError(
        f"target must be [B] class indices (integer) or [B, C] soft targets (float), "
        f"got shape {tuple(target.shape)} and dtype {target.dtype}"
    )


def _batch_classes(target: Tensor | None) -> list[int]:
    """Sorted class ids present in a batch: the labels of hard targets, classes with mass for soft targets."""
    if target is None:
        return []
    target = target.detach()
    if target.ndim == 2:
        present = (target != 0).any(dim=0).nonzero().flatten()
    else:
        present = torch.unique(target.flatten())
    return [int(c) for c in present.cpu().tolist()]


def check_finite_loss(loss: Tensor, step: int | None = None, target: Tensor | None = None) -> Tensor:
    """Raise :class:`FloatingPointError` if ``loss`` holds NaN or ±inf; return ``loss`` unchanged otherwise.

    The message names the step and the classes of the batch, e.g.
    ``"loss is nan at step 12; batch classes: [0, 3, 7]"``, so a diverging run can be traced to the classes
    (often a tail class with an extreme weight or margin) that produced it.

    Checking costs one host-device synchronisation (``bool`` of a device tensor); call it every step only when that
    is acceptable, or every ``N`` steps.

    Args:
        loss: the loss tensor (scalar, or per-sample values).
        step: the global step, named in the message (``None``: unknown).
        target: the batch's targets, ``[B]`` indices or ``[B, C]`` soft targets (``None``: not listed).
    """
    if not isinstance(loss, Tensor):
        raise TypeError(f"loss must be a Tensor, got {type(loss).__name__}")
    if bool(torch.isfinite(loss.detach()).all()):
        return loss
    values = loss.detach().float().flatten().cpu()
    if torch.isnan(values).any():
        kind = "nan"
    elif (values == math.inf).any():
        kind = "inf"
    else:
        kind = "-inf"
    raise _nonfinite_error(kind, step, _batch_classes(target) if target is not None else None)


def _nonfinite_error(kind: str, step: int | None, classes: list[int] | None) -> FloatingPointError:
    """``"loss is nan at step 12; batch classes: [0, 3, 7]"`` (long class lists abbreviated; ``None``: unknown)."""
    where = f"at step {step}" if step is not None else "at an unknown step"
    if classes is None:
        listed = "unknown"
    elif len(classes) > _MAX_LISTED_CLASSES:
        shown = ", ".join(str(c) for c in classes[:_MAX_LISTED_CLASSES])
        listed = f"[{shown}, ...] ({len(classes) - _MAX_LISTED_CLASSES} more)"
    else:
        listed = str(classes)
    return FloatingPointError(f"loss is {kind} {where}; batch classes: {listed}")


class NonFiniteLossWatch:
    """Record, without a host-device synchronisation, the first training step whose loss is NaN or ±inf.

    :meth:`record` keeps on the loss's device the first bad step, its kind and the classes of its batch
    (``torch.where`` updates, no ``.item()``); :meth:`raise_if_seen` -- the one synchronisation -- raises the
    :class:`FloatingPointError` of :func:`check_finite_loss` for that step (``"loss is nan at step 12; batch classes:
    [0, 3, 7]"``). Checking every ``N`` steps stops a diverged run at most ``N - 1`` steps late and still names the
    step where it diverged.
    """

    def __init__(self) -> None:
        self.step: Tensor | None = None  # -1: nothing seen
        self.kind: Tensor | None = None  # 0 nan, 1 inf, 2 -inf
        self.classes: Tensor | None = None  # [C] bool, classes of the first bad batch

    def record(self, loss: Tensor, step: int, target: Tensor, num_classes: int) -> None:
        loss = loss.detach()
        device = loss.device
        if self.step is None or self.step.device != device:
            self.step = torch.full((), -1, dtype=torch.long, device=device)
            self.kind = torch.zeros((), dtype=torch.long, device=device)
            self.classes = torch.zeros(num_classes, dtype=torch.bool, device=device)
        first = ~torch.isfinite(loss).all() & (self.step < 0)
        kind = torch.where(torch.isnan(loss).any(), 0, torch.where((loss == math.inf).any(), 1, 2)).to(self.kind.dtype)
        target = target.detach().to(device)
        if target.ndim == 2:
            present = (target != 0).any(dim=0)
        else:
            present = torch.zeros(num_classes, dtype=torch.bool, device=device).index_fill_(0, target.long(), True)
        self.step = torch.where(first, torch.full_like(self.step, int(step)), self.step)
        self.kind = torch.where(first, kind, self.kind)
        self.classes = torch.where(first, present, self.classes)

    def raise_if_seen(self) -> None:
        if self.step is None or int(self.step) < 0:  # the synchronisation
            return
        kind = ("nan", "inf", "-inf")[int(self.kind)]
        raise _nonfinite_error(kind, int(self.step), self.classes.nonzero().flatten().cpu().tolist())

    def reset(self) -> None:
        self.step = self.kind = self.classes = None
