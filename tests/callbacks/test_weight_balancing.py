"""Weight balancing's stage 2 (Alshammari et al., CVPR 2022): the MaxNorm threshold and projection, by hand and
through the real CLI (``configs/method/digits_lt/weight_balancing.yaml``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lt_lightning.callbacks.classifier_retraining import ClassifierRetraining
from lt_lightning.callbacks.weight_balancing import MaxNormFinetune, max_norm_project, max_norm_threshold
from lt_lightning.cli import run
from lt_lightning.experiments import experiment_args
from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.linear import LinearHead
from lt_lightning.module import LongTailModule
from tests.helpers import BNBackbone

# class-weight rows of norms 5, 1 and 10
W = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])


def test_threshold_is_min_plus_thresh_times_the_norm_range() -> None:
    assert max_norm_threshold(W, 0.1) == pytest.approx(1 + 0.1 * (10 - 1))  # 1.9
    assert max_norm_threshold(W, 0.0) == pytest.approx(1.0)
    assert max_norm_threshold(W, 1.0) == pytest.approx(10.0)


def test_projection_scales_the_long_rows_onto_the_threshold_and_leaves_the_others() -> None:
    weight = W.clone()
    max_norm_project(weight, 1.9)
    expected = torch.tensor([[3 * 1.9 / 5, 4 * 1.9 / 5], [0.0, 1.0], [6 * 1.9 / 10, 8 * 1.9 / 10]])
    torch.testing.assert_close(weight, expected)
    again = weight.clone()
    max_norm_project(again, 1.9)  # a projection is idempotent
    torch.testing.assert_close(again, weight)
    untouched = W.clone()
    max_norm_project(untouched, 10.0)  # thresh = 1: the largest row is the threshold, nothing moves
    torch.testing.assert_close(untouched, W)


def test_variant_keeps_the_classifier_and_checkpoints_its_threshold() -> None:
    module = LongTailModule(num_classes=3, backbone=BNBackbone(), classifier=LinearHead, class_counts=[16, 8, 4])
    variant = MaxNormFinetune(thresh=0.1)
    variant.prepare(module)
    before = module.classifier.weight.detach().clone()
    variant.reinitialise(module, seed=0)
    torch.testing.assert_close(module.classifier.weight, before)  # fine-tuned, not re-initialised
    assert variant.threshold == pytest.approx(max_norm_threshold(before, 0.1))
    variant.after_epoch(module.classifier)
    norms = torch.linalg.vector_norm(module.classifier.weight.detach(), dim=1)
    assert float(norms.max()) == pytest.approx(variant.threshold, rel=1e-5)
    restored = MaxNormFinetune(thresh=0.1)
    restored.load_state_dict(variant.state_dict())
    assert restored.threshold == variant.threshold
    callback = ClassifierRetraining(method=variant)
    assert callback.state_dict()["variant"] == {"threshold": variant.threshold}


def test_bad_thresh_and_a_non_linear_head_are_refused() -> None:
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="thresh must be"):
            MaxNormFinetune(thresh=bad)
    module = LongTailModule(num_classes=3, backbone=BNBackbone(), classifier=CosineHead, class_counts=[16, 8, 4])
    with pytest.raises(ValueError, match="linear classifier"):
        MaxNormFinetune().prepare(module)
    with pytest.raises(RuntimeError, match="threshold is set when the stage starts"):
        MaxNormFinetune().after_epoch(module.classifier)


def test_digits_weight_balancing_caps_every_class_norm_through_the_cli(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    quick = ["--trainer.max_epochs", "4", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"]
    cli = run(
        ["fit", *experiment_args("digits_lt", "weight_balancing"), *quick, "--trainer.enable_progress_bar", "false"]
    )
    (stage,) = [c for c in cli.trainer.callbacks if isinstance(c, ClassifierRetraining)]
    assert stage.active and stage.resolved_start_epoch == 3  # the last 0.25 of 4 epochs
    threshold = stage.variant.threshold
    norms = torch.linalg.vector_norm(cli.model.classifier.weight.detach(), dim=1)
    assert float(norms.max()) <= threshold * (1 + 1e-5)
    saved = torch.load(cli.trainer.checkpoint_callback.last_model_path, map_location="cpu", weights_only=False)
    assert saved["callbacks"][stage.state_key]["variant"] == {"threshold": threshold}
    assert not any(p.requires_grad for p in cli.model.backbone.parameters())
