"""The declared contract between :class:`~lt_lightning.module.LongTailModule` and the callbacks that steer it.

A callback changes a method over time or at test time (a test-time head, a post-hoc logit offset, a batch transform,
a stage's optimizer...). It does so only through the *slots* declared here, each with an owner:

==========================  ================================================================  ========================
slot                        what it holds                                                      set by (today)
==========================  ================================================================  ========================
``test_head``               head replacing ``classifier`` in test / predict                    NearestClassMean,
                                                                                                TauNormalization
``test_logit_offset``       ``[C]`` subtracted from the test / predict logits                  PostHocLogitAdjustment
``test_expert_weights``     ``[E]`` weights of the experts' logits at test / predict           TestTimeAggregation
``train_batch_transform``   ``(x, y) -> (x, y)`` before each training forward pass             BatchMixing
``train_extras``            ``name -> fn(x, output)`` stored in ``output.extras[name]``         KnowledgeDistillation,
                            (keyed: one owner per name)                                        MomentumEncoder
``criterion_override``      the loss ``training_step`` uses instead of ``criterion``           FrozenStage subclasses
``optimization``            ``optimizer_factory``, ``lr_scheduler_factory``,                   FrozenStage subclasses
                            ``lr_scheduler_interval`` of a later stage
``train_sampler``           the datamodule's training sampler factory (:data:`SAMPLER_SLOTS`:  ResamplingSchedule
                            ``base`` draws the run, ``stage`` wraps it for a second stage)     (base), FrozenStage
                                                                                                (stage)
==========================  ================================================================  ========================

The module's setters (``install_test_head(head, owner=self)`` / ``clear_test_head(owner=self)``, ...) record who
holds a slot and **refuse a conflict**: a second owner installing into a slot held by another raises a
``ValueError`` naming both (e.g. ``NearestClassMean`` and ``TauNormalization`` both replacing the test head). A value
assigned directly (``module.test_head = head``, user code) is held by "user code": a callback refuses to replace it
too. Clearing a slot held by someone else is a no-op (a callback leaves others' values alone). The old attributes
(``module.test_head``, ``module.train_extras``, ...) stay readable and assignable, so user code and checkpoints keep
working; what they store is unchanged.

The training sampler is a datamodule's (``data.sampler``), not the module's, so its slot is kept beside the
datamodule (:func:`install_train_sampler`, :func:`clear_train_sampler`): a callback's ``base`` sampler refuses a
``data.sampler`` given by the user or another callback's; a ``stage`` (decoupled training's second stage) wraps
whatever ``base`` sampler there is, installed before or after it -- so the order of the callbacks does not matter.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MODULE_SLOTS",
    "SAMPLER_SLOTS",
    "SlotConflictError",
    "SlotHolder",
    "SlotOwners",
    "clear_train_sampler",
    "install_train_sampler",
    "owner_name",
    "require_long_tail_module",
    "train_sampler_owner",
]

#: the slots of :class:`~lt_lightning.module.LongTailModule` a callback may set (attribute names on the module;
#: ``optimization`` covers ``optimizer_factory``, ``lr_scheduler_factory`` and ``lr_scheduler_interval``)
MODULE_SLOTS: tuple[str, ...] = (
    "test_head",
    "test_logit_offset",
    "test_expert_weights",
    "train_batch_transform",
    "train_extras",
    "criterion_override",
    "optimization",
)
#: the roles of the datamodule's training-sampler slot: ``base`` (the run's sampler), ``stage`` (a wrapper of it)
SAMPLER_SLOTS: tuple[str, ...] = ("base", "stage")

#: the holder of a value assigned directly on the module, not through a setter
USER = "user code (assigned directly)"
#: the owner of a value a callback installed and then gave back without removing it (a stage's loss, kept after the
#: fit): the slot is free
RELEASED = "released"


class SlotConflictError(ValueError):
    """A slot is held by another owner (a ``ValueError``: a configuration that combines two incompatible parts)."""


def owner_name(owner: Any) -> str:
    """How ``owner`` is named in messages: a string as it is, ``None`` as user code, else its class name."""
    if owner is None:
        return USER
    if isinstance(owner, str):
        return owner
    return type(owner).__name__


class SlotHolder:
    """Base of the modules that declare the callback slots and their setters (:class:`~lt_lightning.module.
    LongTailModule`); lets this file check for one without importing the module (no import cycle)."""


def require_long_tail_module(pl_module: Any, owner: Any) -> Any:
    """``pl_module`` if it is a :class:`~lt_lightning.module.LongTailModule`, else one clear ``ValueError``.

    The one check of the callbacks that steer the module through its slots (instead of a ``hasattr`` per callback).
    """
    if not isinstance(pl_module, SlotHolder):
        raise ValueError(
            f"{owner_name(owner)} needs a LongTailModule (lt_lightning.module.LongTailModule, or a subclass), got "
            f"{type(pl_module).__name__}"
        )
    return pl_module


@dataclass
class _Holding:
    owner: Any
    value: Any


class SlotOwners:
    """Who holds each slot of one module (a plain object, not a sub-module: nothing of it is checkpointed).

    A holding is valid while the slot still holds the value its owner installed (``is``); a value replaced behind
    the setters' back (direct assignment) is held by user code.
    """

    def __init__(self) -> None:
        self._held: dict[str, _Holding] = {}

    def holder(self, slot: str, current: Any) -> Any:
        """The owner of ``slot`` whose value is ``current`` (``None`` when free); :data:`USER` when set directly."""
        if current is None:
            return None
        held = self._held.get(slot)
        if held is not None and held.value is current:
            return None if held.owner is RELEASED else held.owner
        return USER

    def recorded(self, slot: str) -> Any:
        """The owner recorded for ``slot`` whatever its value (``None``: none, or released)."""
        held = self._held.get(slot)
        return None if held is None or held.owner is RELEASED else held.owner

    def claim(self, slot: str, current: Any, owner: Any, what: str, holder: Any = RELEASED) -> None:
        """Refuse unless ``slot`` (now ``current``) is free or already ``owner``'s (``holder``: given instead of
        derived from ``current``)."""
        if holder is RELEASED:
            holder = self.holder(slot, current)
        if holder is None or holder is owner:
            return
        raise SlotConflictError(
            f"{owner_name(owner)} would replace another {what} held by {owner_name(holder)}: two parts of this "
            f"configuration set the module's {slot} slot; keep one of {owner_name(holder)} and {owner_name(owner)}"
        )

    def record(self, slot: str, owner: Any, value: Any) -> None:
        """``owner`` holds ``slot``, whose value is now ``value`` (``None``: the slot is empty)."""
        if value is None:
            self._held.pop(slot, None)
        else:
            self._held[slot] = _Holding(owner, value)

    def release(self, slot: str, owner: Any) -> None:
        """``owner`` gives ``slot`` back and leaves its value in place (the slot is free for another owner)."""
        held = self._held.get(slot)
        if held is not None and held.owner is owner:
            held.owner = RELEASED

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a copy of the module (deepcopy, pickle) holds copies of the values: nobody owns them

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._held = {}

    def owns(self, slot: str, current: Any, owner: Any) -> bool:
        """Whether ``owner`` holds ``slot`` (whose value is ``current``)."""
        return current is not None and self.holder(slot, current) is owner


# ---------------------------------------------------------------------------------------------- training sampler
@dataclass
class _SamplerSlots:
    given: Any  # the datamodule's own ``sampler`` when the first slot was taken (``data.sampler``; None: default)
    base: _Holding | None = None
    stage: _Holding | None = None  # value: ``first_factory -> factory``
    installed: Any = None  # what the slots last set in ``datamodule.sampler``

    def composed(self) -> Any:
        base = self.base.value if self.base is not None else self.given
        return self.stage.value(base) if self.stage is not None else base


_SAMPLERS: weakref.WeakKeyDictionary[Any, _SamplerSlots] = weakref.WeakKeyDictionary()


def install_train_sampler(datamodule: Any, role: str, factory: Callable[..., Any], owner: Any) -> Any:
    """Take the ``role`` slot of ``datamodule``'s training sampler for ``owner`` and set ``datamodule.sampler``.

    Args:
        datamodule: a :class:`~lt_lightning.data.base.LongTailDataModule` (its ``sampler`` hook is set).
        role: ``"base"``: ``factory`` is the run's sampler factory ``(labels, num_replicas, rank, seed) ->
            EpochSampler`` (refused when ``data.sampler`` is given or another owner holds it); ``"stage"``:
            ``factory`` maps the base factory (``None``: the datamodule's default) to the stage's factory.
        factory: see ``role``.
        owner: the callback that takes the slot.

    Returns:
        The factory now installed in ``datamodule.sampler`` (the composition of both roles).
    """
    if role not in SAMPLER_SLOTS:
        raise ValueError(f"role must be one of {SAMPLER_SLOTS}, got {role!r}")
    slots = _SAMPLERS.get(datamodule)
    if slots is None:
        slots = _SamplerSlots(given=datamodule.sampler)
    elif datamodule.sampler is not slots.installed:  # changed behind the slots' back: that is the user's now
        slots = _SamplerSlots(given=datamodule.sampler)
    held = getattr(slots, role)
    if held is not None and held.owner is not owner:
        raise SlotConflictError(
            f"{owner_name(owner)} would replace another training sampler ({role}) held by {owner_name(held.owner)}: "
            f"keep one of {owner_name(held.owner)} and {owner_name(owner)}"
        )
    if role == "base" and slots.given is not None:
        raise SlotConflictError(
            f"the datamodule already has a training sampler ({slots.given!r}); {owner_name(owner)} installs its own: "
            f"configure one of data.sampler or the {owner_name(owner)} callback, not both"
        )
    setattr(slots, role, _Holding(owner, factory))
    _SAMPLERS[datamodule] = slots
    datamodule.sampler = slots.installed = slots.composed()
    return slots.installed


def clear_train_sampler(datamodule: Any, role: str, owner: Any) -> None:
    """Give back ``owner``'s ``role`` slot (a no-op if it does not hold it); the datamodule's ``sampler`` becomes the
    composition of what is left, and the one it was given once no slot is held."""
    slots = _SAMPLERS.get(datamodule)
    if slots is None:
        return
    held = getattr(slots, role)
    if held is None or held.owner is not owner:
        return
    if datamodule.sampler is not slots.installed:  # replaced behind the slots' back: leave the user's sampler
        _SAMPLERS.pop(datamodule, None)
        return
    setattr(slots, role, None)
    if slots.base is None and slots.stage is None:
        _SAMPLERS.pop(datamodule, None)
        datamodule.sampler = slots.given  # leave the datamodule as it was given
    else:
        datamodule.sampler = slots.installed = slots.composed()


def train_sampler_owner(datamodule: Any, role: str) -> Any:
    """The owner of ``datamodule``'s ``role`` sampler slot (``None``: free)."""
    slots = _SAMPLERS.get(datamodule)
    held = None if slots is None else getattr(slots, role)
    return None if held is None else held.owner
