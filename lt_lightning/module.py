"""``LongTailModule``: the one LightningModule every long-tailed method plugs into.

A method is a combination of parts, never a subclass of this module:

* ``backbone`` (:class:`~lt_lightning.backbones.base.Backbone`): images → features ``[B, D]``;
* ``classifier`` (a head, built as ``classifier(D, C)``): features → logits, or a full
  :class:`~lt_lightning.output.ModelOutput` for multi-expert heads;
* ``criterion`` (:class:`~lt_lightning.losses.base.LongTailLoss`): ``(ModelOutput, target) → loss``;
* ``optimizer`` / ``lr_scheduler``: callables built over the parameters that require grad, so a later stage that
  freezes the backbone builds its optimizer over the head only. The scheduler is built inside
  :func:`lt_lightning.schedule.run_epochs` with ``trainer.max_epochs``, so epochs given as fractions of the run
  (``milestones: [0.8, 0.9]``) follow ``--trainer.max_epochs``.

``class_counts`` (the training counts, linked from the datamodule by the CLI) is a registered buffer and the single
path by which losses, heads, metrics and callbacks learn the class prior: every
:class:`~lt_lightning.prior.ClassPriorAware` part is told the counts when the module is built and whenever
:meth:`LongTailModule.set_class_counts` replaces them.

Callbacks steer the module only through the slots declared in :mod:`lt_lightning.slots` (test-time head, logit
offset, expert weights, batch transform, training extras, criterion override, a stage's optimizer and schedule), with
setters such as :meth:`LongTailModule.install_test_head` that refuse a slot another callback holds.

Fast paths (options of the module, off by default; see docs/performance.md):

* ``trainer.precision: bf16-mixed`` (or ``16-mixed``) needs no option: the forward pass runs under autocast, and the
  loss -- every criterion, whatever its formula -- and the test-time rules run in float32 on an upcast copy of the
  output (CPU autocast keeps ``log_softmax`` / ``logsumexp`` in bfloat16, so a loss left under it would be computed
  in bfloat16);
* ``channels_last``: the 4-D parameters in :meth:`LongTailModule.configure_model` and every 4-D input of
  :meth:`LongTailModule.forward` (training, validation, test and predict batches, multi-view batches included)
  in ``torch.channels_last`` memory format (NHWC convolution kernels);
* ``compile``: ``backbone.compile(**options)`` (:meth:`torch.nn.Module.compile`, in place) in
  :meth:`LongTailModule.configure_model`. Only the backbone, where the compute is, is compiled: the stage callbacks
  swap or wrap the classifier, freeze the backbone and put it in ``eval()`` (guards of the compiled graph trigger a
  recompilation), and the state-dict keys do not change (no ``_orig_mod.``), so checkpoints written with and
  without compilation load into each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lt_lightning.backbones.base import Backbone
from lt_lightning.heads.base import head_num_experts
from lt_lightning.heads.linear import LinearHead
from lt_lightning.heads.lws import LWSHead
from lt_lightning.losses._checks import NonFiniteLossWatch
from lt_lightning.losses.cross_entropy import CrossEntropyLoss
from lt_lightning.metrics import CalibrationMetric, LongTailAccuracy
from lt_lightning.output import ModelOutput, as_output
from lt_lightning.prior import ClassPriorAware, broadcast_class_counts, validate_class_counts
from lt_lightning.sam import (
    check_sam_trainer,
    frozen_batchnorm_statistics,
    in_perturbed_pass,
    tail_loss_threshold,
    tail_rows,
)
from lt_lightning.schedule import run_epochs
from lt_lightning.slots import SlotHolder, SlotOwners

HeadCallable = Callable[[int, int], nn.Module]

#: floating dtypes narrower than float32 that a loss or a test-time rule must not compute in
LOW_PRECISION = (torch.float16, torch.bfloat16)
#: prefix that ``torch.compile(module)`` (an ``OptimizedModule`` wrapper) adds to the state-dict keys of ``module``
COMPILED_PREFIX = "_orig_mod."
#: the metrics shown in the progress bar (besides the loss): the validation top-1 and class-balanced accuracy
PROGRESS_BAR_KEYS: tuple[str, ...] = ("val/acc", "val/acc_balanced")


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in LOW_PRECISION else x


def float32_output(output: ModelOutput) -> ModelOutput:
    """``output`` with its float16 / bfloat16 tensors cast to float32 (differentiably); others as they are."""
    return dataclasses.replace(
        output,
        logits=_upcast(output.logits),
        features=_upcast(output.features),
        expert_logits=None if output.expert_logits is None else _upcast(output.expert_logits),
        extras={k: _upcast(v) if isinstance(v, Tensor) else v for k, v in output.extras.items()},
    )


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """A region where autocast is off on ``device`` (a no-op context when it is not on)."""
    if _autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def is_compiled(module: nn.Module) -> bool:
    """Whether :meth:`torch.nn.Module.compile` was applied to ``module`` (a deep copy is not compiled)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def _validate_compile(compile: bool | dict[str, Any]) -> dict[str, Any] | None:
    """``compile`` option -> ``torch.compile`` keyword arguments (``None``: no compilation)."""
    if isinstance(compile, bool):
        return {} if compile else None
    if isinstance(compile, dict) and all(isinstance(k, str) for k in compile):
        return dict(compile)
    raise ValueError(
        f"compile must be a bool or a dict of torch.compile keyword arguments (e.g. {{'mode': 'max-autotune'}}), "
        f"got {compile!r}"
    )


def check_optimizer_hyperparameters(optimizer: torch.optim.Optimizer) -> None:
    """Refuse what torch's optimizers accept silently: a NaN or infinite hyper-parameter (``lr``, ``momentum``,
    ``weight_decay``, ...; ``betas`` entry by entry) and a momentum outside ``[0, 1]`` (a diverging run otherwise)."""
    name = type(optimizer).__name__
    for key, value in optimizer.defaults.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{name}: optimizer {key} must be finite, got {value!r}")
    momentum = optimizer.defaults.get("momentum")
    if isinstance(momentum, (int, float)) and not isinstance(momentum, bool) and not 0 <= momentum <= 1:
        raise ValueError(f"{name}: optimizer momentum must be in [0, 1], got {momentum!r}")


def weight_decay_groups(module: nn.Module, params: list[nn.Parameter]) -> list[nn.Parameter] | list[dict[str, Any]]:
    """``params`` as optimizer parameter groups, with the ones the model keeps out of weight decay in their own group.

    Every submodule with a ``no_weight_decay_names()`` method (e.g.
    :meth:`~lt_lightning.heads.linear.LinearHead.no_weight_decay_names`) names parameters relative to itself; those
    among ``params`` go to a group with ``weight_decay = 0``, the others to a group with the optimizer's defaults.
    Nothing named: ``params`` is returned unchanged (one group, as without this function).
    """
    excluded: set[int] = set()
    for prefix, submodule in module.named_modules():
        names = getattr(submodule, "no_weight_decay_names", None)
        if callable(names):
            excluded.update(id(module.get_parameter(f"{prefix}.{n}" if prefix else n)) for n in names())
    if not excluded:
        return params
    groups: list[dict[str, Any]] = [{"params": [p for p in params if id(p) not in excluded]}]
    groups.append({"params": [p for p in params if id(p) in excluded], "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def ldam_drw_sgd(params: Any) -> torch.optim.Optimizer:
    """SGD of the LDAM-DRW CIFAR recipe: lr 0.1, momentum 0.9, weight decay 2e-4."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=2e-4)


class LongTailModule(LightningModule, SlotHolder):
    """Backbone + classifier head + criterion, with long-tailed metrics.

    Args:
        backbone: feature extractor with ``num_features``.
        num_classes: number of classes ``C`` (linked from ``data.num_classes`` by the CLI).
        class_counts: training images per class, length ``C`` (linked from ``data.class_counts``).
        classifier: head factory called as ``classifier(backbone.num_features, num_classes)``; default linear.
        criterion: loss reading a :class:`ModelOutput`; default softmax cross-entropy.
        optimizer: optimizer factory over the trainable parameters; default :func:`ldam_drw_sgd`.
        lr_scheduler: optional scheduler factory (e.g. :class:`lt_lightning.optim.WarmupMultiStepLR`).
        lr_scheduler_interval: ``"epoch"`` or ``"step"``.
        many_threshold: classes with more than this many training images are "many-shot".
        few_threshold: classes with fewer than this many training images are "few-shot".
        finite_check_every_n_steps: stop with ``FloatingPointError`` naming the first step whose training loss was
            NaN or inf and the classes of its batch. Every step is recorded on the device without a host sync
            (:class:`~lt_lightning.losses._checks.NonFiniteLossWatch`); the check -- one sync -- runs every ``n``
            steps and at the end of each epoch (``0``: never), so a diverged run stops at most ``n - 1`` steps late.
        channels_last: keep the 4-D parameters and the 4-D inputs of :meth:`forward` in ``torch.channels_last``
            memory format (applied in :meth:`configure_model`; the loss and the weights are those of the default
            format up to rounding).
        compile: compile the backbone with :meth:`torch.nn.Module.compile` in :meth:`configure_model`: ``True``
            (default options) or a dict of ``torch.compile`` keyword arguments (``{"mode": "max-autotune"}``,
            ``{"backend": "aot_eager"}``, ...). The first steps (and the first evaluation, and a stage that freezes
            the backbone) pay the compilation.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        class_counts: Sequence[int],
        classifier: HeadCallable = LinearHead,
        criterion: nn.Module | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
        many_threshold: int = 100,
        few_threshold: int = 20,
        finite_check_every_n_steps: int = 50,
        channels_last: bool = False,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if isinstance(finite_check_every_n_steps, bool) or finite_check_every_n_steps < 0:
            raise ValueError(f"finite_check_every_n_steps must be an integer >= 0, got {finite_check_every_n_steps!r}")
        if lr_scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}")
        if not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be a bool, got {channels_last!r}")
        compile_options = _validate_compile(compile)
        num_features = getattr(backbone, "num_features", None)
        if not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(
                f"backbone {type(backbone).__name__} must declare a positive int `num_features`, got {num_features!r}"
            )
        with warnings.catch_warnings():
            # Modules given from Python are pickled into hparams on purpose: ``load_from_checkpoint(path,
            # weights_only=False)`` rebuilds them. Models built by the CLI save their YAML config instead, so their
            # checkpoints load with the default ``weights_only=True``.
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        self.num_classes = num_classes
        self.backbone = backbone
        self.classifier = classifier(num_features, num_classes)
        self.criterion = criterion if criterion is not None else CrossEntropyLoss()
        self.optimizer_factory = optimizer if optimizer is not None else ldam_drw_sgd
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.finite_check_every_n_steps = finite_check_every_n_steps
        self._loss_watch = NonFiniteLossWatch()
        self.channels_last = channels_last
        #: keyword arguments of ``backbone.compile`` (``None``: not compiled); not ``self.compile``, which is
        #: :meth:`torch.nn.Module.compile`
        self.compile_options = compile_options
        counts = validate_class_counts(class_counts, num_classes)
        self.register_buffer("class_counts", counts)
        # the epoch mean of the training loss, checkpointed: a run resumed mid-epoch logs the uninterrupted run's mean
        self.train_loss_mean = MeanMetric(nan_strategy="disable")  # "disable": no NaN check, no host sync per step
        self.train_loss_mean.persistent(True)
        self.val_metric = LongTailAccuracy(num_classes, counts, many_threshold, few_threshold)
        self.test_metric = LongTailAccuracy(num_classes, counts, many_threshold, few_threshold)
        # ECE / NLL overall and per shot group, reliability curve, confusion matrix (sums only: nothing checkpointed)
        self.test_calibration = CalibrationMetric(num_classes, counts, many_threshold, few_threshold)
        # per-expert accuracy of a multi-expert head (RIDE, SADE, ...), logged beside the ensemble's
        num_experts = head_num_experts(self.classifier)
        experts = num_experts if num_experts > 1 else 0
        self.val_expert_metrics = nn.ModuleList(
            LongTailAccuracy(num_classes, counts, many_threshold, few_threshold) for _ in range(experts)
        )
        self.test_expert_metrics = nn.ModuleList(
            LongTailAccuracy(num_classes, counts, many_threshold, few_threshold) for _ in range(experts)
        )
        self.last_val_results: dict[str, Tensor] = {}
        # who holds each callback slot (lt_lightning.slots); not a sub-module, nothing of it is checkpointed
        self._slot_owners = SlotOwners()
        #: ``[C]`` subtracted from the logits in ``test_step`` / ``predict_step`` (post-hoc adjustment, e.g.
        #: ``tau * log(pi)`` set by :class:`~lt_lightning.callbacks.posthoc_logit_adjustment.PostHocLogitAdjustment`).
        self.test_logit_offset: Tensor | None = None
        #: a head that replaces :attr:`classifier` in ``test_step`` / ``predict_step`` when set (a prediction rule
        #: applied at test time to a trained model: τ-normalisation, nearest class mean). Set and cleared by callbacks.
        self.test_head: nn.Module | None = None
        #: ``[E]`` weights of the experts' logits at test / predict time (test-time aggregation, e.g. SADE); the
        #: ensemble's logits are then ``sum_e w_e z_e`` instead of the head's own combination.
        self.test_expert_weights: Tensor | None = None
        #: ``(x, y) -> (x, y)`` applied to each training batch before the forward pass (batch mixing: mixup, CutMix,
        #: Remix, whose targets become soft ``[B, C]``). Set and cleared by callbacks; ``None``: the batch as it is.
        self.train_batch_transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
        #: ``name -> fn(x, output)``: tensors computed in ``training_step`` after the forward pass and stored in
        #: ``output.extras[name]`` for the loss (a distillation teacher's logits, a momentum encoder's keys). Set by
        #: callbacks; what the functions hold (a teacher, a momentum encoder) is not part of this module's state dict.
        self.train_extras: dict[str, Callable[[Tensor, ModelOutput], Tensor]] = {}
        object.__setattr__(self, "criterion_override", None)
        self.last_test_results: dict[str, Tensor] = {}
        broadcast_class_counts(self, self.class_counts)

    # ------------------------------------------------------------------ class prior
    def set_class_counts(self, class_counts: Sequence[int] | Tensor) -> None:
        """Replace the training counts and tell every class-prior-aware part (losses, heads, metrics)."""
        counts = validate_class_counts(class_counts, self.num_classes).to(self.class_counts.device)
        self.class_counts.copy_(counts)
        broadcast_class_counts(self, self.class_counts)

    def set_criterion_override(self, criterion: nn.Module | None) -> None:
        """Train with ``criterion`` instead of :attr:`criterion` (``None``: back to it), as user code.

        Callbacks use :meth:`install_criterion_override`, which refuses a loss another callback installed. The
        override is deliberately not a sub-module: the module's ``state_dict`` -- hence checkpoints written before and
        after the stage -- keeps the same keys, and **the override's own state is not checkpointed** (a stage that
        installs one installs it again on resume, see :class:`~lt_lightning.callbacks._stage.FrozenStage`). It is
        moved to the module's device and told the class counts here, and it follows the module's ``.to()`` /
        ``.cuda()`` / ``.double()`` (:meth:`_apply`).
        """
        if criterion is not None:
            criterion = criterion.to(self.class_counts.device)
            broadcast_class_counts(criterion, self.class_counts)
            if isinstance(criterion, ClassPriorAware):
                criterion.set_class_counts(self.class_counts)
        object.__setattr__(self, "criterion_override", criterion)

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> LongTailModule:
        """:meth:`torch.nn.Module._apply` (behind ``.to()``, ``.cuda()``, ``.float()``...), also applied to the
        criterion override, which is not a sub-module (its state stays out of the state dict)."""
        super()._apply(fn, *args, **kwargs)
        override = self.__dict__.get("criterion_override")
        if override is not None:
            override._apply(fn, *args, **kwargs)
        return self

    # ------------------------------------------------------------------ callback slots (lt_lightning.slots)
    def _install_slot(self, slot: str, value: Any, owner: Any, what: str) -> None:
        self._slot_owners.claim(slot, getattr(self, slot), owner, what)
        setattr(self, slot, value)
        self._slot_owners.record(slot, owner, value)

    def _clear_slot(self, slot: str, owner: Any) -> None:
        if self._slot_owners.owns(slot, getattr(self, slot), owner):
            setattr(self, slot, None)
            self._slot_owners.record(slot, owner, None)

    def slot_owner(self, slot: str) -> Any:
        """Who holds ``slot`` (one of :data:`lt_lightning.slots.MODULE_SLOTS`, or ``"train_extras[<name>]"``):
        ``None`` when free, the callback that installed its value, or ``lt_lightning.slots.USER`` (set directly)."""
        if slot == "optimization":
            return self._slot_owners.recorded(slot)
        if slot.startswith("train_extras[") and slot.endswith("]"):
            return self._slot_owners.holder(slot, self.train_extras.get(slot[len("train_extras[") : -1]))
        return self._slot_owners.holder(slot, getattr(self, slot))

    def install_test_head(self, head: nn.Module, owner: Any) -> None:
        """Test and predict with ``head`` (features -> logits) instead of :attr:`classifier`; refuses a head another
        owner installed (``ValueError`` naming both)."""
        self._install_slot("test_head", head, owner, "test-time head")

    def clear_test_head(self, owner: Any) -> None:
        """Remove ``owner``'s test head (a no-op when another owner's, or none, is installed)."""
        self._clear_slot("test_head", owner)

    def install_test_logit_offset(self, offset: Tensor, owner: Any) -> None:
        """Subtract ``offset`` ``[C]`` from the test / predict logits; refuses another owner's offset."""
        self._install_slot("test_logit_offset", offset, owner, "test-time logit offset")

    def clear_test_logit_offset(self, owner: Any) -> None:
        self._clear_slot("test_logit_offset", owner)

    def install_test_expert_weights(self, weights: Tensor, owner: Any) -> None:
        """Combine the experts' test / predict logits with ``weights`` ``[E]``; refuses another owner's weights."""
        self._install_slot("test_expert_weights", weights, owner, "set of test-time expert weights")

    def clear_test_expert_weights(self, owner: Any) -> None:
        self._clear_slot("test_expert_weights", owner)

    def install_train_batch_transform(self, transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], owner: Any):
        """Apply ``transform(x, y) -> (x, y)`` to each training batch; refuses another owner's transform."""
        self._install_slot("train_batch_transform", transform, owner, "train_batch_transform")

    def clear_train_batch_transform(self, owner: Any) -> None:
        self._clear_slot("train_batch_transform", owner)

    def install_train_extra(self, name: str, fn: Callable[[Tensor, ModelOutput], Tensor], owner: Any) -> None:
        """Store ``fn(x, output)`` in ``output.extras[name]`` at each training step; refuses a ``name`` another owner
        installed."""
        slot = f"train_extras[{name}]"
        self._slot_owners.claim(slot, self.train_extras.get(name), owner, f"training extra {name!r}")
        self.train_extras[name] = fn
        self._slot_owners.record(slot, owner, fn)

    def clear_train_extra(self, name: str, owner: Any) -> None:
        slot = f"train_extras[{name}]"
        if self._slot_owners.owns(slot, self.train_extras.get(name), owner):
            del self.train_extras[name]
            self._slot_owners.record(slot, owner, None)

    def install_criterion_override(self, criterion: nn.Module, owner: Any) -> None:
        """Train with ``criterion`` instead of :attr:`criterion` (see :meth:`set_criterion_override`); refuses a loss
        another owner installed."""
        self._slot_owners.claim("criterion_override", self.__dict__.get("criterion_override"), owner, "training loss")
        self.set_criterion_override(criterion)
        self._slot_owners.record("criterion_override", owner, self.__dict__.get("criterion_override"))

    def install_optimization(
        self,
        owner: Any,
        optimizer: Callable[..., Any],
        lr_scheduler: Callable[..., Any] | None,
        lr_scheduler_interval: str = "epoch",
    ) -> None:
        """Build the optimizer (and scheduler) of a later stage from these factories; refuses when another callback
        installed the current ones (the module's own, or factories set directly, are replaced)."""
        holder = self._slot_owners.recorded("optimization")
        self._slot_owners.claim("optimization", None, owner, "optimizer and LR schedule", holder=holder)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self._slot_owners.record("optimization", owner, optimizer)

    def release_slot(self, slot: str, owner: Any) -> None:
        """``owner`` gives ``slot`` back but leaves its value (a stage's loss and optimizer stay after the fit)."""
        self._slot_owners.release(slot, owner)

    @property
    def training_criterion(self) -> nn.Module:
        """The loss ``training_step`` uses: the override when one is set, else :attr:`criterion`."""
        override = self.__dict__.get("criterion_override")
        return self.criterion if override is None else override

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from lt_lightning.callbacks.data_fingerprint import check_resume  # local: the callbacks import this module

        check_resume(self._trainer, checkpoint)  # other data: name the difference before any size mismatch
        state = checkpoint.get("state_dict", {})
        for key, value in self.train_loss_mean.state_dict(prefix="train_loss_mean.").items():
            state.setdefault(key, value)  # a checkpoint written before the loss mean was checkpointed
        if any(COMPILED_PREFIX in k for k in state):
            # written from a module wrapped by torch.compile(...) (keys like backbone._orig_mod.conv1.weight)
            state = {k.replace(COMPILED_PREFIX, ""): v for k, v in state.items()}
            checkpoint["state_dict"] = state
        if "classifier.scales" in state and not isinstance(self.classifier, LWSHead):
            # written after (or during) a learnable-weight-scaling stage: give the classifier the same structure
            self.classifier = LWSHead.wrap(self.classifier, self.num_classes)
        counts = state.get("class_counts")
        if counts is not None:
            broadcast_class_counts(self, counts.to(self.class_counts.device, torch.float32))

    # ------------------------------------------------------------------ fast paths
    def configure_model(self) -> None:
        """Apply :attr:`channels_last` and :attr:`compile_options` (idempotent: Lightning calls this hook at the start
        of every fit, validate, test and predict, after the callbacks' ``setup``)."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # 4-D parameters and buffers only
        if self.compile_options is not None and not is_compiled(self.backbone):
            self.backbone.compile(**self.compile_options)

    def model_input(self, x: Tensor) -> Tensor:
        """``x`` in the memory format of the model: ``channels_last`` for a 4-D batch when :attr:`channels_last`.

        Done here rather than in ``on_after_batch_transfer``: Lightning calls only the datamodule's hook when both the
        datamodule and the module define one (every :class:`~lt_lightning.data.base.LongTailDataModule` does), and a
        batch transform (mixup, CutMix) may return a default-format tensor. A no-op (no copy, no host sync) on a batch
        already in that format.
        """
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> ModelOutput:
        features = self.backbone(self.model_input(x))
        return as_output(self.classifier(features), features)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.train_batch_transform is not None:
            x, y = self.train_batch_transform(x, y)
        with frozen_batchnorm_statistics(self) if in_perturbed_pass() else contextlib.nullcontext():
            output = self(x)
        for name, extra in self.train_extras.items():
            output.extras[name] = extra(x, output)
        with full_precision(output.logits.device):  # every loss in float32 under mixed precision
            threshold = tail_loss_threshold()  # ImbSAM's tail passes: the loss of the tail classes' rows only
            if threshold is None:
                loss = self.training_criterion(float32_output(output), _upcast(y))
            else:
                rows, y_rows, share = tail_rows(float32_output(output), _upcast(y), self.class_counts, threshold)
                loss = output.logits.sum() * 0.0 if rows is None else self.training_criterion(rows, y_rows) * share
        n = self.finite_check_every_n_steps
        if n:
            self._loss_watch.record(loss, self.global_step, y, self.num_classes)  # on the device, no sync
            if (self.global_step + 1) % n == 0:
                self._loss_watch.raise_if_seen()
        if not in_perturbed_pass():  # SAM's second pass (at w + e) is not the step's loss
            self.train_loss_mean(loss.detach(), x.shape[0])
            self.log("train/loss", self.train_loss_mean, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        output = self(x)
        self.val_metric.update(output.logits, y)
        self._update_experts(self.val_expert_metrics, output, y)

    def _update_experts(self, metrics: nn.ModuleList, output: ModelOutput, y: Tensor) -> None:
        if len(metrics) and output.expert_logits is not None:
            for metric, logits in zip(metrics, output.expert_logits, strict=True):
                metric.update(logits, y)

    def test_output(self, x: Tensor) -> ModelOutput:
        """The forward pass used for test and predict, with the test-time rules (:attr:`test_expert_weights`,
        :attr:`test_head`, :attr:`test_logit_offset`) applied to its ``logits``."""
        output = self(x)
        if self.test_expert_weights is None and self.test_head is None and self.test_logit_offset is None:
            return output
        with full_precision(output.logits.device):  # the test-time rules in float32 under mixed precision
            return self._apply_test_rules(float32_output(output))

    def _apply_test_rules(self, output: ModelOutput) -> ModelOutput:
        if self.test_expert_weights is not None:
            if output.expert_logits is None:
                raise ValueError("test_expert_weights is set but the classifier returns no expert_logits")
            weights = self.test_expert_weights.to(output.expert_logits)
            output = dataclasses.replace(output, logits=torch.einsum("e,ebc->bc", weights, output.expert_logits))
        if self.test_head is not None:
            output = dataclasses.replace(
                output, logits=as_output(self.test_head(output.features), output.features).logits
            )
        if self.test_logit_offset is not None:
            output = dataclasses.replace(output, logits=output.logits - self.test_logit_offset.to(output.logits))
        return output

    def test_logits(self, x: Tensor) -> Tensor:
        """Logits used for test and predict: :meth:`test_output`'s ``logits``."""
        return self.test_output(x).logits

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        output = self.test_output(x)
        self.test_metric.update(output.logits, y)
        self.test_calibration.update(output.logits, y)
        self._update_experts(self.test_expert_metrics, output, y)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return _upcast(self.test_logits(x)).softmax(dim=-1)

    # ------------------------------------------------------------------ metrics
    def _log_results(self, stage: str, results: dict[str, Tensor]) -> None:
        scalars = {f"{stage}/{k}": v for k, v in results.items() if v.ndim == 0}
        # Values come from a metric whose states are already summed over processes: identical on every rank.
        shown = {k: v for k, v in scalars.items() if k in PROGRESS_BAR_KEYS}
        self.log_dict({k: v for k, v in scalars.items() if k not in shown}, sync_dist=False, rank_zero_only=False)
        if shown:  # once per validation epoch: no per-step host sync
            self.log_dict(shown, prog_bar=True, sync_dist=False, rank_zero_only=False)

    def _log_experts(self, stage: str, metrics: nn.ModuleList) -> None:
        for i, metric in enumerate(metrics):
            results = metric.compute()
            metric.reset()
            self._log_results(stage, {f"expert{i}_{k}": v for k, v in results.items()})

    def on_fit_start(self) -> None:
        check_sam_trainer(self.trainer, self.trainer.optimizers)

    def on_train_epoch_end(self) -> None:
        if self.finite_check_every_n_steps:
            self._loss_watch.raise_if_seen()

    def on_train_end(self) -> None:
        if self.finite_check_every_n_steps:
            self._loss_watch.raise_if_seen()  # a fit that stopped mid-epoch (max_steps)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            # a new epoch's mean: a checkpoint written after an epoch's last batch holds that epoch's sums, and
            # Lightning resumes it into the next epoch without on_train_epoch_start; an epoch resumed in its middle
            # starts at batch_idx > 0 and its restored sums go on
            self.train_loss_mean.reset()
        set_epoch = getattr(self.training_criterion, "set_epoch", None)
        if callable(set_epoch):  # a loss with per-epoch state (ProCo's vMF estimates); idempotent, so resume-exact
            set_epoch(self.current_epoch)

    def on_validation_epoch_end(self) -> None:
        self.last_val_results = self.val_metric.compute()
        self.val_metric.reset()
        self._log_results("val", self.last_val_results)
        self._log_experts("val", self.val_expert_metrics)

    def on_test_epoch_end(self) -> None:
        self.last_test_results = {**self.test_metric.compute(), **self.test_calibration.compute()}
        self.test_metric.reset()
        self.test_calibration.reset()
        self._log_results("test", self.last_test_results)
        self._log_experts("test", self.test_expert_metrics)

    # ------------------------------------------------------------------ optimisation
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that require grad (a frozen backbone's are left out)."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        params = self.trainable_parameters()
        if not params:
            raise ValueError("no parameter requires grad: nothing to optimise")
        optimizer = self.optimizer_factory(weight_decay_groups(self, params))
        check_optimizer_hyperparameters(optimizer)
        if self.lr_scheduler_factory is None:
            return optimizer
        trainer = self._trainer
        if trainer is None:  # outside a fit: the caller's lt_lightning.schedule.run_epochs, if any
            context: contextlib.AbstractContextManager = contextlib.nullcontext()
        else:
            max_epochs = trainer.max_epochs
            known = max_epochs if max_epochs is not None and max_epochs >= 1 else None
            context = run_epochs(known, strict=not trainer.fast_dev_run)
        with context:
            scheduler = self.lr_scheduler_factory(optimizer)  # fractions of the run resolve against max_epochs
        scheduler_config = {"scheduler": scheduler, "interval": self.lr_scheduler_interval}
        return {"optimizer": optimizer, "lr_scheduler": scheduler_config}
