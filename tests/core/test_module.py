"""LongTailModule: the typed output, the class-prior path, optimizers over trainable parameters, checkpoints."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput
from lt_lightning.prior import ClassPriorAware


class TinyBackbone(Backbone):
    """Flatten + linear + ReLU: a fast backbone for module tests."""

    def __init__(self, in_features: int = 3 * 8 * 8, num_features: int = 16) -> None:
        super().__init__()
        self.num_features = num_features
        self.fc = nn.Linear(in_features, num_features)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.relu(self.fc(x.flatten(1)))


class PriorProbeLoss(LongTailLoss, ClassPriorAware):
    """Cross-entropy that remembers the class counts it was told (checks the single prior path)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen_counts", torch.zeros(0))

    def set_class_counts(self, class_counts: Tensor) -> None:
        self.seen_counts = class_counts.detach().clone()

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(output.logits, target)


def make_module(**kwargs) -> LongTailModule:
    kwargs.setdefault("class_counts", [64, 35, 20, 11, 6])
    return LongTailModule(TinyBackbone(), num_classes=5, **kwargs)


def test_forward_returns_typed_output_with_logits_and_features() -> None:
    module = make_module()
    out = module(torch.randn(4, 3, 8, 8))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (4, 5) and out.features.shape == (4, 16)
    assert out.expert_logits is None


def test_class_counts_is_a_saved_buffer_and_reaches_every_prior_aware_part() -> None:
    module = make_module(criterion=PriorProbeLoss())
    assert "class_counts" in module.state_dict()
    assert module.class_counts.tolist() == [64, 35, 20, 11, 6]
    assert module.criterion.seen_counts.tolist() == [64, 35, 20, 11, 6]
    assert module.val_metric.class_counts.tolist() == [64, 35, 20, 11, 6]
    module.set_class_counts([5, 4, 3, 2, 1])
    assert module.class_counts.tolist() == [5, 4, 3, 2, 1]
    assert module.criterion.seen_counts.tolist() == [5, 4, 3, 2, 1]
    assert module.test_metric.class_counts.tolist() == [5, 4, 3, 2, 1]


def test_optimizer_is_built_over_parameters_that_require_grad() -> None:
    module = make_module(optimizer=partial(torch.optim.SGD, lr=0.01))
    module.backbone.requires_grad_(False)
    optimizer = module.configure_optimizers()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in params} == {id(p) for p in module.classifier.parameters()}
    module.classifier.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter requires grad"):
        module.configure_optimizers()


def test_default_optimizer_is_the_ldam_drw_sgd_and_scheduler_is_attached() -> None:
    from lt_lightning.optim import WarmupMultiStepLR

    module = make_module(lr_scheduler=WarmupMultiStepLR)
    config = module.configure_optimizers()
    group = config["optimizer"].param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 2e-4)
    assert group["initial_lr"] == 0.1
    assert isinstance(config["lr_scheduler"]["scheduler"], WarmupMultiStepLR)
    assert config["lr_scheduler"]["interval"] == "epoch"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_counts": [1, 2, 3]}, "class_counts has 3 entries but num_classes=5"),
        ({"class_counts": [1, 2, 3, -1, 5]}, "non-negative"),
        ({"lr_scheduler_interval": "batch"}, "lr_scheduler_interval"),
        ({"many_threshold": 10, "few_threshold": 20}, "few_threshold must be <= many_threshold"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        make_module(**kwargs)


def test_backbone_without_num_features_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_features"):
        LongTailModule(nn.Flatten(), num_classes=2, class_counts=[2, 1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes"):
        LongTailModule(TinyBackbone(), num_classes=0, class_counts=[])


def test_fit_logs_long_tail_metrics_and_checkpoint_round_trip(tmp_path) -> None:
    L.seed_everything(0)
    dm = SyntheticLTDataModule(num_classes=5, n_max=40, imbalance_ratio=10, batch_size=16)
    module = make_module(class_counts=dm.class_counts, optimizer=partial(torch.optim.SGD, lr=0.05))
    trainer = L.Trainer(
        max_epochs=3, default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(module, dm)
    for key in ("val/acc", "val/acc_balanced", "val/acc_many", "val/acc_medium", "val/acc_few"):
        assert key in trainer.callback_metrics
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    # A module built in Python pickles its backbone object into hparams: loading it needs weights_only=False
    # (CLI-built checkpoints load with the default; tests/test_cli.py).
    loaded = LongTailModule.load_from_checkpoint(path, weights_only=False)
    assert torch.equal(loaded.class_counts, module.class_counts)
    dm.setup("test")
    x = dm.augmentation(dm.test_dataset.images)
    module.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(module(x).logits, loaded(x).logits)
    results = trainer.test(loaded, dm, verbose=False)[0]
    assert set(results) >= {"test/acc", "test/acc_many", "test/acc_medium", "test/acc_few"}
    assert results["test/acc"] > 0.5  # learnable blobs; chance is 0.2


class NaNLoss(LongTailLoss):
    """Cross-entropy times NaN: the loss of a diverged run."""

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(output.logits, target) * float("nan")


def test_nan_loss_stops_with_the_step_and_the_batch_classes(tmp_path) -> None:
    dm = SyntheticLTDataModule(num_classes=5, n_max=20, imbalance_ratio=4, batch_size=8)
    module = make_module(class_counts=dm.class_counts, criterion=NaNLoss())
    trainer = L.Trainer(max_steps=2, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 0; batch classes: \[[0-9, ]+\]"):
        trainer.fit(module, dm)
    with pytest.raises(ValueError, match="finite_check_every_n_steps"):
        make_module(finite_check_every_n_steps=-1)


class RecordingLoss(LongTailLoss):
    """Cross-entropy (soft targets too) that records the targets and extras it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Tensor, dict[str, Tensor]]] = []

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        self.seen.append((target.detach().clone(), {k: v.detach().clone() for k, v in output.extras.items()}))
        return nn.functional.cross_entropy(output.logits, target)


def test_train_batch_transform_and_extras_act_in_training_only(tmp_path) -> None:
    """``train_batch_transform`` replaces the batch before the forward pass, ``train_extras`` fill
    ``output.extras`` for the loss; validation sees neither, and neither enters the state dict."""
    dm = SyntheticLTDataModule(num_classes=5, n_max=20, imbalance_ratio=4, batch_size=8)
    criterion = RecordingLoss()
    module = make_module(class_counts=dm.class_counts, criterion=criterion)
    seen_x: list[Tensor] = []

    def soften(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return x * 0.5, nn.functional.one_hot(y, 5).float() * 0.9 + 0.02

    def probe(x: Tensor, output: ModelOutput) -> Tensor:
        seen_x.append(x.detach().clone())
        return output.logits.detach().sum(1)

    teacher = nn.Linear(3, 3)
    module.train_batch_transform = soften
    module.train_extras["probe"] = probe
    module.train_extras["teacher"] = lambda x, out: teacher(torch.zeros(1, 3))
    trainer = L.Trainer(
        max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(module, dm)
    assert criterion.seen
    assert all(t.ndim == 2 and torch.allclose(t.sum(1), torch.ones(len(t))) for t, _ in criterion.seen)
    assert all(set(extras) == {"probe", "teacher"} for _, extras in criterion.seen)
    assert len(seen_x) == len(criterion.seen)  # extras are computed in training steps only, on the transformed x
    assert not any(k.startswith(("train_extras", "teacher")) for k in module.state_dict())
    assert "val/acc" in trainer.callback_metrics  # validation ran with hard labels and no transform
