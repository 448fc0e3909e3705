"""``ClassifierRetraining``: the second stage of decoupled training, classifier re-training (cRT) or learnable
weight scaling (LWS).

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020, Sec. 4: stage 1
learns the representation jointly with the classifier (any loss, instance-balanced sampling); stage 2 keeps the
representation fixed and re-balances the classifier with class-balanced sampling for a few epochs (10 in the paper):

* **cRT** re-initialises the classifier and re-trains it, ``z = W f(x) + b`` with ``f`` frozen;
* **LWS** freezes the classifier too and learns one scale per class, ``z_c = s_c (w_c^T f(x) + b_c)``
  (:class:`~lt_lightning.heads.lws.LWSHead`).

MiSLAS's stage 2 (Zhong et al., "Improving Calibration for Long-Tailed Recognition", CVPR 2021; dvlab-research/MiSLAS
``train_stage2.py``) is this stage with three options: ``method: lws_finetune`` (the stage-1 classifier is kept,
not re-initialised, and fine-tuned together with LWS's per-class scales), ``classifier_lr_factor`` (the classifier's
learning rate is the stage's times this factor, the scales' is the stage's: the reference's ``lr_factor``, 0.5 on
CIFAR-10-LT and 0.2 on CIFAR-100-LT) and ``shift_bn`` (the backbone's weights stay frozen but its BatchNorm layers run
in train mode, so their running statistics move to the stage's class-balanced batches); its loss is label-aware
smoothing (``criterion``: :class:`~lt_lightning.losses.label_aware_smoothing.LabelAwareSmoothingLoss`), and it trains
without mixup (end :class:`~lt_lightning.callbacks.batch_mixing.BatchMixing` at the stage with ``stop_epoch``).

At the stage switch this callback freezes the backbone's weights (``requires_grad=False``) and puts it in
``eval()`` mode (``backbone_mode="eval"``, the default: weights and BatchNorm statistics stay bit-identical) or keeps
its BatchNorm layers in ``train()`` mode (``backbone_mode="train"``: the running statistics move to the stage's
class-balanced batches while every weight stays fixed; facebookresearch/classifier-balancing ``run_networks.py``
calls ``model.train()`` on every network each epoch and freezes the backbone's parameters only, so ``"train"`` is
the reference cRT / LWS; MiSLAS's ``shift_bn`` is the same thing), re-initialises the classifier (cRT, seeded:
every DDP rank and every resume draws the same weights) or activates the scales (LWS), switches the loss to
cross-entropy (``criterion``), sampling to class-balanced (``sampler``; :class:`~lt_lightning.data.staged.
StagedSampler` keeps the dataloader fixed for the fit), and builds a fresh optimizer and LR schedule over the
parameters left trainable (cosine over the stage by default).

Two ways to run it:

* **one fit** (``init_from`` unset): the stage is the last ``epochs`` epochs of the fit, or starts at ``start_epoch``
  (an epoch, or a fraction of ``trainer.max_epochs``). Freezing mid-run under DDP needs
  ``strategy: ddp_find_unused_parameters_true`` (checked at setup).
* **a second fit** from a stage-1 checkpoint (``init_from``): the whole fit is the stage; the backbone and classifier
  weights are loaded and frozen in ``setup``, before DDP wraps the model, so plain ``ddp`` works. The checkpoint must
  come from the same training set (its ``class_counts`` are compared).

Resume: the stage is derived from the epoch and from the callback's checkpointed ``active`` flag, which is read in
``on_load_checkpoint`` -- before Lightning builds the optimizers -- so a run resumed before, at or after the switch
gives the run that never stopped (same weights, same sampled order, same optimizer state).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lt_lightning.callbacks._stage import FrozenStage, seeded_reset, shift_batchnorm
from lt_lightning.data.base import SamplerFactory
from lt_lightning.heads.base import head_resets_parameters
from lt_lightning.heads.lws import LWSHead
from lt_lightning.losses.cross_entropy import CrossEntropyLoss
from lt_lightning.schedule import EpochValue

__all__ = ["ClassifierRetraining", "ClassifierVariant", "LearnableWeightScaling", "LWSFinetune", "ReTrain", "VARIANTS"]

Method = Literal["crt", "lws", "lws_finetune"]
METHODS = ("crt", "lws", "lws_finetune")


class ClassifierVariant:
    """What stage 2 does to the classifier: a small strategy of :class:`ClassifierRetraining`.

    A new stage-2 variant (e.g. weight balancing's MaxNorm) subclasses this and is given as ``method`` (a
    ``class_path`` in YAML) without editing :class:`ClassifierRetraining`, which does the rest (freezing the
    backbone, sampler, loss, optimizer, schedule, resume).

    Attributes:
        name: the variant's name, in the callback's ``state_key`` and checkpointed state.
        trains_classifier: whether the classifier's own weights train (``classifier_lr_factor`` applies to them).
    """

    name: str = "variant"
    trains_classifier: bool = True

    def prepare(self, pl_module: pl.LightningModule) -> None:
        """Check (and adapt) the classifier's structure before anything is loaded (at setup)."""

    def freeze(self, classifier: nn.Module) -> None:
        """Set what of the classifier trains (``requires_grad``, train / eval mode); idempotent."""
        classifier.requires_grad_(True)
        classifier.train()

    def reinitialise(self, pl_module: pl.LightningModule, seed: int) -> None:  # pragma: no cover - interface
        """Give the classifier its stage-start weights (seeded with ``seed``)."""
        raise NotImplementedError

    def after_epoch(self, classifier: nn.Module) -> None:
        """Called at the end of each training epoch of the stage (``on_train_epoch_end``: after the epoch's
        validation, before its checkpoint), e.g. a projection of the classifier's weights."""

    def state_dict(self) -> dict[str, Any]:
        """What the variant carries through the stage (checkpointed with the callback, restored on resume)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a resumed stage does not call :meth:`reinitialise` again)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReTrain(ClassifierVariant):
    """cRT (Kang et al., ICLR 2020): re-initialise the classifier (seeded) and re-train it, ``z = W f(x) + b``."""

    name = "crt"

    def prepare(self, pl_module: pl.LightningModule) -> None:
        if not head_resets_parameters(pl_module.classifier):
            raise ValueError(
                f"cRT re-initialises the classifier, but {type(pl_module.classifier).__name__} has no "
                "reset_parameters()"
            )

    def reinitialise(self, pl_module: pl.LightningModule, seed: int) -> None:
        seeded_reset(pl_module.classifier, seed)


class LearnableWeightScaling(ClassifierVariant):
    """LWS (Kang et al., ICLR 2020): the classifier frozen, one learned scale per class,
    ``z_c = s_c (w_c^T f(x) + b_c)`` (:class:`~lt_lightning.heads.lws.LWSHead`, scales start at 1)."""

    name = "lws"
    trains_classifier = False

    def prepare(self, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module.classifier, LWSHead):
            pl_module.classifier = LWSHead.wrap(pl_module.classifier, pl_module.num_classes)

    def freeze(self, classifier: nn.Module) -> None:
        classifier.base.requires_grad_(False)
        classifier.base.eval()
        classifier.scales.requires_grad_(True)

    def reinitialise(self, pl_module: pl.LightningModule, seed: int) -> None:
        pl_module.classifier.scales.data.fill_(1.0)  # LWS starts from the stage-1 classifier with every scale 1


class LWSFinetune(LearnableWeightScaling):
    """MiSLAS's stage 2 (Zhong et al., CVPR 2021): LWS's scales and the stage-1 classifier (not re-initialised)
    fine-tuned together."""

    name = "lws_finetune"
    trains_classifier = True

    def freeze(self, classifier: nn.Module) -> None:
        ClassifierVariant.freeze(self, classifier)


#: the variants named by the ``method`` strings
VARIANTS: dict[str, type[ClassifierVariant]] = {
    "crt": ReTrain,
    "lws": LearnableWeightScaling,
    "lws_finetune": LWSFinetune,
}
BackboneMode = Literal["eval", "train"]
BACKBONE_MODES = ("eval", "train")


class ScaledClassifierLR:
    """Optimizer factory wrapper: the classifier's parameters (LWS scales excepted) get ``factor`` x the lr.

    Called with the trainable parameters, it builds ``factory([{classifier params}, {the rest}])`` and multiplies
    the first group's ``lr`` by ``factor`` before any LR scheduler reads it (MiSLAS's ``lr_factor``).
    """

    def __init__(self, factory: Any, module: nn.Module, factor: float) -> None:
        self.factory = factory
        self.module = module
        self.factor = float(factor)

    def __call__(self, params: Any) -> torch.optim.Optimizer:
        params = list(params)
        classifier = self.module.classifier
        scaled_ids = {id(p) for name, p in classifier.named_parameters() if name != "scales"}
        scaled = [p for p in params if id(p) in scaled_ids]
        rest = [p for p in params if id(p) not in scaled_ids]
        groups = [g for g in ({"params": scaled}, {"params": rest}) if g["params"]]
        optimizer = self.factory(groups)
        if scaled:
            optimizer.param_groups[0]["lr"] *= self.factor
        return optimizer


class ClassifierRetraining(FrozenStage):
    """Decoupled training's stage 2: frozen representation, re-balanced classifier (cRT or LWS).

    YAML (``trainer.callbacks``)::

        - class_path: lt_lightning.callbacks.classifier_retraining.ClassifierRetraining
          init_args: {method: crt, epochs: 10}

    Args:
        method: ``"crt"`` (re-initialise and re-train the classifier, :class:`ReTrain`), ``"lws"`` (learn per-class
            scales, :class:`LearnableWeightScaling`) or ``"lws_finetune"`` (learn per-class scales and fine-tune the
            stage-1 classifier, not re-initialised: MiSLAS's stage 2, :class:`LWSFinetune`); or any
            :class:`ClassifierVariant` (a new stage-2 variant, given by ``class_path``).
        start_epoch: first epoch (0-based) of the stage in a single fit, or a fraction of ``trainer.max_epochs`` in
            ``(0, 1)``; ``None``: the last ``epochs`` epochs. Not allowed with ``init_from``.
        epochs: length of the stage when ``start_epoch`` is ``None`` (10 in Kang et al.): epochs, or a fraction of
            the run in ``(0, 1)`` that scales with the budget.
        init_from: a stage-1 checkpoint; the whole fit is then the stage (set ``trainer.max_epochs`` to its length).
        optimizer: optimizer factory of the stage over the trainable parameters; ``None``: the module's own.
        lr_scheduler: scheduler factory of the stage (stepped per epoch, counted from the stage's first epoch);
            ``None``: cosine annealing to 0 over the stage (Kang et al.).
        criterion: loss of the stage; ``None``: softmax cross-entropy (the paper's stage 2).
        sampler: sampler factory of the stage; ``None``: class-balanced (``p_c = 1/C``; the reference code's
            ``ClassAwareSampler`` is :class:`~lt_lightning.data.resampling.ClassAwareSampler`). It must draw as many
            indices per epoch as the stage-1 sampler.
        seed: seed of cRT's classifier re-initialisation.
        shift_bn: keep the backbone's BatchNorm layers in train mode during the stage (weights frozen, running
            statistics updated on the stage's batches: MiSLAS's shift learning on BatchNorm); ``False``: the whole
            backbone is in eval mode and bit-identical. The same as ``backbone_mode="train"``.
        backbone_mode: the frozen backbone's mode during the stage: ``"eval"`` (bit-identical, BatchNorm normalises
            with the stage-1 running statistics) or ``"train"`` (BatchNorm layers in train mode, the rest in eval
            mode: :func:`~lt_lightning.callbacks._stage.shift_batchnorm`; no weight changes, the running statistics
            follow the stage's sampling). The reference cRT / LWS (Kang et al., classifier-balancing
            ``run_networks.py``) train in ``"train"`` mode; KCL's classifier stage (bingykang/BalFeat
            ``main_lincls.py``) in ``"eval"``. ``None``: ``"train"`` if ``shift_bn`` else ``"eval"``. The mode is
            not checkpointed; it is re-applied at every epoch start, so a resumed run is the run that never stopped
            (the running statistics are in the state dict).
        classifier_lr_factor: the classifier's learning rate is the stage optimizer's times this factor (``> 0``;
            LWS scales keep the stage's; MiSLAS: 0.5 on CIFAR-10-LT, 0.2 on CIFAR-100-LT at rho = 100).

    Attributes:
        active: whether the stage is on (the backbone frozen).
        resolved_start_epoch: the stage's first epoch (resolved at setup).
    """

    trains = "the classifier"
    log_key = "classifier_retraining/stage"

    def __init__(
        self,
        method: Method | ClassifierVariant = "crt",
        start_epoch: int | float | None = None,
        epochs: EpochValue = 10,
        init_from: str | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        criterion: nn.Module | None = None,
        sampler: SamplerFactory | None = None,
        seed: int = 0,
        shift_bn: bool = False,
        classifier_lr_factor: float = 1.0,
        backbone_mode: BackboneMode | None = None,
    ) -> None:
        if isinstance(method, ClassifierVariant):
            variant = method
        elif isinstance(method, str) and method in VARIANTS:
            variant = VARIANTS[method]()
        else:
            raise ValueError(f"method must be one of {METHODS} or a ClassifierVariant, got {method!r}")
        if not isinstance(shift_bn, bool):
            raise ValueError(f"shift_bn must be a bool, got {shift_bn!r}")
        if backbone_mode is not None and backbone_mode not in BACKBONE_MODES:
            raise ValueError(f"backbone_mode must be one of {BACKBONE_MODES} or None, got {backbone_mode!r}")
        if shift_bn and backbone_mode == "eval":
            raise ValueError(
                "shift_bn=True keeps the backbone's BatchNorm layers in train mode, but backbone_mode='eval' asks for "
                "eval mode: give one of them (shift_bn=True is backbone_mode='train')"
            )
        if (
            isinstance(classifier_lr_factor, bool)
            or not isinstance(classifier_lr_factor, (int, float))
            or not (math.isfinite(classifier_lr_factor) and classifier_lr_factor > 0)
        ):
            raise ValueError(f"classifier_lr_factor must be a finite number > 0, got {classifier_lr_factor!r}")
        if not variant.trains_classifier and classifier_lr_factor != 1.0:
            raise ValueError(
                f"classifier_lr_factor={classifier_lr_factor} scales the classifier's learning rate, but "
                f"method={variant.name!r} keeps the classifier frozen: use method='lws_finetune'"
            )
        super().__init__(start_epoch, epochs, init_from, optimizer, lr_scheduler, criterion, sampler, seed)
        #: the stage-2 variant (a strategy object); ``method`` is its name
        self.variant = variant
        self.method = variant.name
        self.shift_bn = shift_bn
        self.backbone_mode: BackboneMode = backbone_mode or ("train" if shift_bn else "eval")
        self.classifier_lr_factor = float(classifier_lr_factor)

    def _identity(self) -> dict[str, Any]:
        return {"method": self.method, "start_epoch": self.start_epoch, "init_from": self.init_from}

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method, "variant": self.variant.state_dict(), **super().state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.variant.load_state_dict(state_dict.get("variant") or {})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # before the epoch's checkpoint (Lightning runs checkpoint callbacks last); the epoch's validation ran already
        if self.active:
            self.variant.after_epoch(pl_module.classifier)

    def _prepare(self, pl_module: pl.LightningModule) -> None:
        self.variant.prepare(pl_module)

    def _adapt_stage1_weights(self, weights: dict, pl_module: pl.LightningModule) -> dict:
        if isinstance(pl_module.classifier, LWSHead) and not any(k.startswith("classifier.base.") for k in weights):
            # a plain stage-1 classifier becomes the base of the LWS head
            return {k.replace("classifier.", "classifier.base.", 1): v for k, v in weights.items()}
        return weights

    def _is_stage1_weight(self, key: str) -> bool:
        # LWS scales start at 1 in every stage: a stage-1 checkpoint's own scales (if any) are not loaded
        return super()._is_stage1_weight(key) and key != "classifier.scales"

    def _set_active(self, pl_module: pl.LightningModule, active: bool) -> None:
        if isinstance(pl_module.classifier, LWSHead):
            pl_module.classifier.active = active

    def _freeze(self, pl_module: pl.LightningModule) -> None:
        pl_module.backbone.requires_grad_(False)
        if self.backbone_mode == "train":
            shift_batchnorm(pl_module.backbone)
        else:
            pl_module.backbone.eval()
        self.variant.freeze(pl_module.classifier)

    def _frozen_description(self) -> str:
        if self.backbone_mode == "train":
            return "the backbone is frozen with its BatchNorm layers in train mode (running statistics move)"
        return super()._frozen_description()

    def _reinitialise(self, pl_module: pl.LightningModule) -> None:
        self.variant.reinitialise(pl_module, self.seed)

    def _stage_optimizer(self, pl_module: pl.LightningModule) -> Any:
        factory = super()._stage_optimizer(pl_module)
        if self.classifier_lr_factor == 1.0:
            return factory
        return ScaledClassifierLR(factory, pl_module, self.classifier_lr_factor)

    def _default_criterion(self) -> nn.Module:
        return CrossEntropyLoss()
