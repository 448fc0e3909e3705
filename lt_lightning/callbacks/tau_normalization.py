"""τ-normalisation of a trained linear classifier at test time, with ``τ`` chosen by a sweep on the validation set.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020, Sec. 4: rescale the
class vectors of a jointly trained classifier to ``w_c / ||w_c||^τ`` (:func:`~lt_lightning.heads.tau_norm.
tau_normalized_weight`). Before testing (or predicting), this callback runs the backbone once over the
**validation** loader, evaluates every ``τ`` of the grid on those features (per-class correct counts per ``τ``,
summed over processes, so the sweep is exact under DDP), picks the ``τ`` with the best class-balanced validation
accuracy (ties: the smallest ``τ``) and sets the module's :attr:`~lt_lightning.module.LongTailModule.test_head` to
:meth:`TauNormHead.from_linear(classifier, τ) <lt_lightning.heads.tau_norm.TauNormHead.from_linear>`; the head is
removed after the test. The test set is never looked at to choose ``τ``. The curve is written to
``<log_dir>/<filename>.json`` and ``test/tau_norm_tau`` is logged. With ``tau`` given, no sweep runs. The
authors' script (facebookresearch/classifier-balancing ``tau_norm.py``) scores the same grid ``np.linspace(0, 2,
21)`` without the classifier's bias (``keep_bias=False``) and prints every ``τ`` on the test split.

The classifier must be linear (``logits = W f + b`` with its ``weight`` ``[C, D]``), e.g. a
:class:`~lt_lightning.heads.linear.LinearHead`; this is checked on a probe batch, so a cosine or otherwise
normalised head is refused with a clear message.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.nn import functional as F

from lt_lightning.callbacks._sweep import check_sweep_arguments, write_sweep_curve
from lt_lightning.callbacks.nearest_class_mean import check_test_head_module, eval_features
from lt_lightning.heads.base import ClassifierHead, head_linear_parameters
from lt_lightning.heads.tau_norm import TauNormHead, tau_normalized_weight
from lt_lightning.metrics.long_tail_accuracy import (
    long_tail_accuracy_compute,
    long_tail_accuracy_update,
    shot_group_masks,
)
from lt_lightning.output import ModelOutput

CURVE_KEYS: tuple[str, ...] = ("acc", "acc_balanced", "acc_many", "acc_medium", "acc_few")


def linear_classifier_parameters(classifier: nn.Module) -> tuple[Tensor, Tensor | None]:
    """``(weight [C, D], bias [C] or None)`` of a linear classifier; ``ValueError`` for any other head.

    The parameters are :func:`~lt_lightning.heads.base.head_linear_parameters`' (a head's
    :meth:`~lt_lightning.heads.base.ClassifierHead.linear_parameters`; a plain module's ``weight`` and ``bias``), and
    linearity is checked on a random probe: ``classifier(f)`` must equal ``F.linear(f, weight, bias)``.
    """
    params = head_linear_parameters(classifier)
    if params is None and not isinstance(classifier, ClassifierHead):
        raise ValueError(
            f"τ-norm applies to a linear classifier with a `weight` [C, D]; {type(classifier).__name__} has none"
        )
    if params is None:  # a head of lt_lightning that declares itself not linear
        raise _not_linear(classifier)
    weight, bias = params
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(4, weight.shape[1], generator=generator).to(weight)
    with torch.no_grad():
        out = classifier(probe)
        expected = F.linear(probe, weight, bias)
    if isinstance(out, ModelOutput):
        out = out.logits
    tolerance = 1e-3 * float(expected.abs().max().clamp(min=1.0))
    if (
        not isinstance(out, Tensor)
        or out.shape != expected.shape
        or not torch.allclose(out.float(), expected.float(), rtol=1e-3, atol=tolerance)
    ):
        raise _not_linear(classifier)
    return weight, bias


def _not_linear(classifier: nn.Module) -> ValueError:
    return ValueError(
        f"τ-norm applies to a linear classifier (logits = W f + b), but {type(classifier).__name__}'s logits are "
        "not `F.linear(features, weight, bias)` (a cosine / normalised / multi-expert head has nothing to "
        "τ-normalise)"
    )


class TauNormalization(Callback):
    """Test (and predict) with the τ-normalised classifier; ``τ`` from a validation sweep unless given.

    Args:
        taus: the grid of the sweep (default ``0, 0.1, ..., 2``), each ``>= 0``.
        tau: a fixed ``τ >= 0`` (no sweep).
        filename: name (without ``.json``) of the sweep curve written into the run's log dir.
        keep_bias: keep the classifier's bias (the default; the paper's rule rescales the weights only and says
            nothing of the bias). ``False``: score with the normalised weights only, as the authors' code does
            (facebookresearch/classifier-balancing ``tau_norm.py``: ``pnorm(weights, p)`` then
            ``dotproduct_similarity(feat, ws)``, no bias); the reference configs set it.
    """

    def __init__(
        self,
        taus: Sequence[float] | None = None,
        tau: float | None = None,
        filename: str = "tau_norm_sweep",
        keep_bias: bool = True,
    ) -> None:
        self.taus, self.tau, self.filename = check_sweep_arguments(taus, tau, filename)
        self.keep_bias = bool(keep_bias)
        self.chosen_tau: float | None = None
        self.curve: dict[str, list[float]] = {}

    def _validation_counts(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, weight: Tensor, bias: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``correct[T, C]`` and ``total[C]`` of the τ-normalised validation predictions, summed over processes."""
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            raise ValueError("TauNormalization needs a datamodule with a validation set to choose tau (or give `tau`)")
        if getattr(datamodule, "val_dataset", None) is None:
            datamodule.setup("validate")
        c = pl_module.num_classes
        weights = [tau_normalized_weight(weight.detach(), tau) for tau in self.taus]
        correct = torch.zeros(len(self.taus), c, dtype=torch.long, device=pl_module.device)
        total = torch.zeros(c, dtype=torch.long, device=pl_module.device)
        for features, y in eval_features(trainer, pl_module, datamodule.val_dataloader()):
            features = features.to(weight)
            for i, w in enumerate(weights):
                correct[i] += long_tail_accuracy_update(F.linear(features, w, bias), y, c)[0]
            total.index_add_(0, y.long(), torch.ones_like(y, dtype=torch.long))
        correct = trainer.strategy.reduce(correct, reduce_op="sum")
        total = trainer.strategy.reduce(total, reduce_op="sum")
        if int(total.sum()) == 0:
            raise ValueError("the validation set is empty: TauNormalization cannot choose tau (give `tau`)")
        return correct, total

    def _install(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_test_head_module(pl_module, self)
        classifier = getattr(pl_module, "classifier", None)
        if not isinstance(classifier, nn.Module):
            raise ValueError("TauNormalization needs the module's trained `classifier` (a linear head)")
        weight, bias = linear_classifier_parameters(classifier)
        if not self.keep_bias:
            bias = None
        if weight.shape[0] != pl_module.num_classes:
            raise ValueError(f"classifier weight has {weight.shape[0]} rows but num_classes={pl_module.num_classes}")
        if self.tau is not None:
            self.chosen_tau = self.tau
        else:
            correct, total = self._validation_counts(
                trainer, pl_module, weight, None if bias is None else bias.detach()
            )
            counts = getattr(pl_module, "class_counts", None)
            groups = None
            if counts is not None:
                hparams = getattr(pl_module, "hparams", {})
                groups = shot_group_masks(
                    counts.long(), hparams.get("many_threshold", 100), hparams.get("few_threshold", 20)
                )
            results = [long_tail_accuracy_compute(correct[i], total, groups) for i in range(len(self.taus))]
            self.curve = {"tau": list(self.taus)} | {k: [float(r[k]) for r in results] for k in CURVE_KEYS}
            balanced = torch.tensor(self.curve["acc_balanced"], dtype=torch.float64)
            best = balanced == balanced.max()
            self.chosen_tau = min(t for t, is_best in zip(self.taus, best.tolist(), strict=True) if is_best)
            write_sweep_curve(
                trainer,
                self.filename,
                {"chosen_tau": self.chosen_tau, "criterion": "acc_balanced (validation)", **self.curve},
            )
        head = TauNormHead.from_linear(classifier, self.chosen_tau, keep_bias=bias is not None)
        pl_module.install_test_head(head, owner=self)
        rank_zero_info(
            f"TauNormalization: tau = {self.chosen_tau}"
            + (" (given)" if self.tau is not None else " (chosen on the validation set)")
        )

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer, pl_module)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.chosen_tau is not None:
            pl_module.log("test/tau_norm_tau", float(self.chosen_tau))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.clear_test_head(owner=self)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.clear_test_head(owner=self)
