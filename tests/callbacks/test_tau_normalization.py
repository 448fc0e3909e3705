"""TauNormalization: tau chosen on the validation set only, then the tau-normalised head on the test set."""

from __future__ import annotations

import json
from functools import partial

import lightning as L
import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from lt_lightning.callbacks.tau_normalization import TauNormalization
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.tau_norm import TauNormHead, tau_normalized_weight
from lt_lightning.metrics import LongTailAccuracy
from lt_lightning.metrics.long_tail_accuracy import long_tail_accuracy_compute, long_tail_accuracy_update
from lt_lightning.module import LongTailModule
from tests.helpers import TinyBackbone
from tests.helpers import quiet_trainer as _trainer

TAUS = [0.0, 0.5, 1.0, 1.5, 2.0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CE model briefly trained on Digits-LT (rho = 10): its classifier norms follow the class sizes."""
    L.seed_everything(0)
    dm = DigitsLTDataModule(batch_size=32)
    module = LongTailModule(
        TinyBackbone(64, 16, relu=True),
        dm.num_classes,
        dm.class_counts,
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
    )
    _trainer(tmp_path_factory.mktemp("fit"), max_epochs=2, limit_train_batches=10, limit_val_batches=0).fit(module, dm)
    return module, dm


def _features(module, dataset) -> tuple[Tensor, Tensor]:
    module.eval()
    with torch.no_grad():
        return module(module.trainer.datamodule.augmentation(dataset.images)).features, dataset.labels


def test_tau_zero_is_the_plain_test(trained, tmp_path) -> None:
    module, dm = trained
    plain = _trainer(tmp_path).test(module, dm, verbose=False)[0]
    callback = TauNormalization(tau=0.0)
    normed = _trainer(tmp_path, [callback]).test(module, dm, verbose=False)[0]
    assert normed.pop("test/tau_norm_tau") == 0.0
    assert normed == plain
    assert module.test_head is None  # removed after the test
    assert not (tmp_path / "tau_norm_sweep.json").exists()  # no sweep with a given tau


def test_sweep_picks_tau_on_validation_and_normalises_the_test_head(trained, tmp_path) -> None:
    module, dm = trained
    callback = TauNormalization(taus=TAUS)
    results = _trainer(tmp_path, [callback]).test(module, dm, verbose=False)[0]
    assert results["test/tau_norm_tau"] in TAUS and results["test/tau_norm_tau"] == callback.chosen_tau
    assert module.test_head is None

    # the sweep by hand on the validation features
    w, b = module.classifier.fc.weight.detach(), module.classifier.fc.bias.detach()
    val_f, val_y = _features(module, dm.val_dataset)
    balanced = []
    for tau in TAUS:
        correct, total = long_tail_accuracy_update(F.linear(val_f, tau_normalized_weight(w, tau), b), val_y, 10)
        balanced.append(float(long_tail_accuracy_compute(correct, total, None)["acc_balanced"]))
    best = max(balanced)
    assert best > balanced[0]  # on this head-biased model, normalising the class vectors helps the tail
    assert callback.chosen_tau == min(t for t, a in zip(TAUS, balanced, strict=True) if a == best)
    assert callback.curve["acc_balanced"] == pytest.approx(balanced, abs=1e-6)
    curve = json.loads((tmp_path / "tau_norm_sweep.json").read_text())
    assert curve["chosen_tau"] == callback.chosen_tau and curve["tau"] == TAUS
    assert curve["acc_balanced"] == pytest.approx(balanced, abs=1e-6)

    # the test metric is that of the tau-normalised head on the test features
    test_f, test_y = _features(module, dm.test_dataset)
    metric = LongTailAccuracy(10, module.class_counts.long())
    metric.update(TauNormHead.from_linear(module.classifier, callback.chosen_tau)(test_f), test_y)
    expected = metric.compute()
    assert results["test/acc"] == pytest.approx(float(expected["acc"]), abs=1e-6)
    assert results["test/acc_few"] == pytest.approx(float(expected["acc_few"]), abs=1e-6)


def test_fixed_tau_changes_the_predictions_as_the_head_does(trained, tmp_path) -> None:
    module, dm = trained
    callback = TauNormalization(tau=1.0, keep_bias=False)
    predictions = torch.cat(_trainer(tmp_path, [callback]).predict(module, dm))
    assert module.test_head is None
    test_f, _ = _features(module, dm.test_dataset)
    head = TauNormHead.from_linear(module.classifier, 1.0, keep_bias=False)
    assert head.fc.bias is None
    assert torch.allclose(predictions, head(test_f).softmax(dim=-1), atol=1e-6)


def test_sweep_without_the_bias_is_the_reference_sweep(trained, tmp_path) -> None:
    """``keep_bias=False`` (classifier-balancing ``tau_norm.py``): every τ scores ``f · w_c / ||w_c||^τ``, no bias."""
    module, dm = trained
    callback = TauNormalization(taus=TAUS, keep_bias=False)
    results = _trainer(tmp_path, [callback]).test(module, dm, verbose=False)[0]
    w = module.classifier.fc.weight.detach()
    val_f, val_y = _features(module, dm.val_dataset)
    balanced = []
    for tau in TAUS:
        logits = val_f @ (w / w.norm(dim=1, keepdim=True) ** tau).T
        correct, total = long_tail_accuracy_update(logits, val_y, 10)
        balanced.append(float(long_tail_accuracy_compute(correct, total, None)["acc_balanced"]))
    assert callback.curve["acc_balanced"] == pytest.approx(balanced, abs=1e-6)
    assert callback.chosen_tau == min(t for t, a in zip(TAUS, balanced, strict=True) if a == max(balanced))
    test_f, test_y = _features(module, dm.test_dataset)
    logits = test_f @ (w / w.norm(dim=1, keepdim=True) ** callback.chosen_tau).T
    assert results["test/acc"] == pytest.approx(float((logits.argmax(1) == test_y).float().mean()), abs=1e-6)


def test_cosine_classifier_is_refused(tmp_path) -> None:
    dm = DigitsLTDataModule(batch_size=32)
    module = LongTailModule(TinyBackbone(64, 16, relu=True), dm.num_classes, dm.class_counts, classifier=CosineHead)
    with pytest.raises(ValueError, match="linear classifier"):
        _trainer(tmp_path, [TauNormalization(tau=1.0)]).test(module, dm, verbose=False)


@pytest.mark.parametrize("kwargs", [{"tau": -0.5}, {"taus": []}, {"taus": [0.0, -1.0]}, {"filename": "a/b"}])
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        TauNormalization(**kwargs)
