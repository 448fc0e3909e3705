"""PostHocLogitAdjustment: tau chosen on the validation set only, then z - tau log(pi) on the test set."""

from __future__ import annotations

import json
from functools import partial

import lightning as L
import pytest
import torch
from torch import Tensor

from lt_lightning.callbacks.posthoc_logit_adjustment import PostHocLogitAdjustment
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.metrics import LongTailAccuracy
from lt_lightning.module import LongTailModule
from lt_lightning.posthoc import adjust_logits, tau_sweep
from tests.helpers import TinyBackbone


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CE model trained briefly on long-tailed noisy blobs (head-biased, so the adjustment matters)."""
    L.seed_everything(0)
    dm = SyntheticLTDataModule(
        num_classes=5, n_max=60, imbalance_ratio=20, noise_std=90.0, val_per_class=30, test_per_class=30, batch_size=32
    )
    module = LongTailModule(
        TinyBackbone(3 * 8 * 8, 16, relu=True),
        dm.num_classes,
        dm.class_counts,
        optimizer=partial(torch.optim.SGD, lr=0.05),
    )
    trainer = L.Trainer(
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path_factory.mktemp("posthoc"),
    )
    trainer.fit(module, dm)
    return module, dm


def _logits(module, dataset) -> tuple[Tensor, Tensor]:
    module.eval()
    with torch.no_grad():
        return module(dataset_images(dataset, module)).logits, dataset.labels


def dataset_images(dataset, module) -> Tensor:
    return module.trainer.datamodule.augmentation(dataset.images)


def _test(module, dm, tmp_path, callbacks):
    trainer = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )
    return trainer.test(module, dm, verbose=False)[0]


def test_tau_zero_is_the_plain_test(trained, tmp_path) -> None:
    module, dm = trained
    plain = _test(module, dm, tmp_path, [])
    adjusted = _test(module, dm, tmp_path, [PostHocLogitAdjustment(tau=0.0)])
    assert adjusted.pop("test/posthoc_tau") == 0.0
    assert adjusted == pytest.approx(plain, nan_ok=True)
    assert module.test_logit_offset is None  # removed after the test


def test_sweep_picks_tau_on_validation_and_adjusts_the_test_logits(trained, tmp_path) -> None:
    module, dm = trained
    taus = [0.0, 0.5, 1.0, 1.5, 2.0]
    callback = PostHocLogitAdjustment(taus=taus)
    results = _test(module, dm, tmp_path, [callback])
    dm.setup()
    val_logits, val_y = _logits(module, dm.val_dataset)
    expected = tau_sweep(val_logits, val_y, module.class_counts, taus)
    assert callback.chosen_tau == expected.best_tau == results["test/posthoc_tau"]
    assert callback.curve["acc_balanced"] == pytest.approx(expected.acc_balanced.tolist(), abs=1e-6)
    curve = json.loads((tmp_path / "posthoc_tau_sweep.json").read_text())
    assert curve["chosen_tau"] == expected.best_tau and curve["tau"] == taus
    # the test metric is the metric of the adjusted test logits with that tau
    test_logits, test_y = _logits(module, dm.test_dataset)
    metric = LongTailAccuracy(5, module.class_counts.long())
    metric.update(adjust_logits(test_logits, module.class_counts, expected.best_tau), test_y)
    assert results["test/acc"] == pytest.approx(float(metric.compute()["acc"]), abs=1e-6)


@pytest.mark.parametrize("kwargs", [{"tau": -0.5}, {"taus": []}, {"taus": [0.0, -1.0]}, {"filename": "a/b"}])
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        PostHocLogitAdjustment(**kwargs)
