"""The contract of a classifier head: :class:`ClassifierHead`, and the helpers that read it from any head.

Every head of :mod:`lt_lightning.heads` subclasses :class:`ClassifierHead`, so the module and the callbacks ask a
head what it is (its number of experts, its linear parameters, its projection) instead of probing its attributes.
A user's own head may still be a plain ``nn.Module``: the ``head_*`` functions below answer for it by looking at the
attributes it happens to have (the only place where heads are probed).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = [
    "ClassifierHead",
    "head_linear_parameters",
    "head_num_experts",
    "head_projection_dim",
    "head_resets_parameters",
]


class ClassifierHead(nn.Module):
    """Base class of the classifier heads: what the module and the callbacks may rely on.

    Construction: the module builds a head as ``head(in_features, num_classes, **init_args)`` (from YAML: the
    ``class_path`` of the head and its other arguments in ``init_args``); ``in_features`` is the backbone's
    ``num_features`` ``D`` and ``num_classes`` is ``C``.

    Forward: ``head(features)`` with the backbone's features (``[B, D]``; ``[E, B, D]`` for a multi-expert head)
    returns the logits ``[B, C]``, either as a ``Tensor`` or as a :class:`~lt_lightning.output.ModelOutput` (whose
    ``logits`` are ``[B, C]``; a multi-expert head also sets ``expert_logits`` ``[E, B, C]``).

    Class attributes and methods, with their defaults (a subclass overrides what differs):

    * :attr:`num_experts` (``1``): the number of experts whose logits the head reports in ``expert_logits`` at
      evaluation (multi-expert heads; ``> 1`` turns on the module's per-expert metrics).
    * :attr:`projection_dim` (``None``): the dimension of the L2-normalised projection the head stores in
      ``ModelOutput.extras["projection"]`` (contrastive heads), ``None`` for a head without one.
    * :meth:`linear_parameters` (``None``): ``(W [C, D], b [C] or None)`` when the logits are exactly
      ``F.linear(features, W, b)`` (the parameters themselves, not copies: weight-based callbacks such as
      τ-normalisation read them and max-norm projects them in place), ``None`` otherwise.
    * :meth:`reset_parameters` (raises ``NotImplementedError``): re-draw the head's initialisation (cRT's
      re-initialisation of the classifier); implemented by every head that can.
    """

    #: experts whose logits the head reports (``expert_logits`` ``[E, B, C]``); 1 for a single-classifier head
    num_experts: int = 1
    #: dimension of the head's projection (``extras["projection"]``), ``None`` for a head without one
    projection_dim: int | None = None

    def linear_parameters(self) -> tuple[Tensor, Tensor | None] | None:
        """``(W [C, D], b [C] or None)`` if the logits are exactly ``F.linear(features, W, b)``, else ``None``."""
        return None

    def reset_parameters(self) -> None:
        """Re-draw the head's initialisation; a head that cannot be re-initialised does not override this."""
        raise NotImplementedError(f"{type(self).__name__} does not implement reset_parameters()")


def head_num_experts(head: nn.Module) -> int:
    """The head's :attr:`~ClassifierHead.num_experts`; for a plain ``nn.Module``, its ``num_experts`` attribute
    (converted with ``int``), 1 without one."""
    if isinstance(head, ClassifierHead):
        return int(head.num_experts)
    return int(getattr(head, "num_experts", 1))


def head_projection_dim(head: nn.Module) -> int | None:
    """The head's :attr:`~ClassifierHead.projection_dim`; for a plain ``nn.Module``, its ``projection_dim`` attribute
    when it is an ``int``, else ``None``."""
    dim = head.projection_dim if isinstance(head, ClassifierHead) else getattr(head, "projection_dim", None)
    return dim if isinstance(dim, int) else None


def head_resets_parameters(head: nn.Module) -> bool:
    """Whether ``head.reset_parameters()`` re-initialises the head: a :class:`ClassifierHead` that implements it, or a
    plain ``nn.Module`` with a callable ``reset_parameters`` (``nn.Linear``)."""
    if isinstance(head, ClassifierHead):
        return type(head).reset_parameters is not ClassifierHead.reset_parameters
    return callable(getattr(head, "reset_parameters", None))


def head_linear_parameters(head: nn.Module) -> tuple[Tensor, Tensor | None] | None:
    """``(W [C, D], b [C] or None)`` of a linear head, else ``None``.

    A :class:`ClassifierHead` answers with :meth:`~ClassifierHead.linear_parameters`. For a plain ``nn.Module`` (an
    ``nn.Linear``, a user's own head) these are candidates only: its ``weight`` when it is a ``[C, D]`` tensor, and
    its ``bias`` (or ``fc.bias``) when it is a tensor; the caller checks that the logits are ``F.linear`` of them.
    """
    if isinstance(head, ClassifierHead):
        return head.linear_parameters()
    weight = getattr(head, "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        return None
    bias = getattr(head, "bias", None)
    if not isinstance(bias, Tensor):
        fc = getattr(head, "fc", None)
        bias = getattr(fc, "bias", None) if fc is not None else None
    return weight, bias if isinstance(bias, Tensor) else None
