"""Multi-expert CIFAR ResNet and head (RIDE / SADE networks), and the module's per-expert metrics."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lt_lightning.backbones.multi_expert import MultiExpertResNetCifar
from lt_lightning.backbones.resnet_cifar import ResNet32
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.heads.multi_expert import MultiExpertHead
from lt_lightning.module import LongTailModule


def test_one_expert_is_the_plain_resnet32() -> None:
    torch.manual_seed(0)
    plain = ResNet32().eval()
    single = MultiExpertResNetCifar(num_experts=1, shared_stages=1).eval()
    assert sum(p.numel() for p in single.parameters()) == sum(p.numel() for p in plain.parameters())
    renamed = {}
    for key, value in plain.state_dict().items():
        key = key.replace("layer1.", "shared.0.", 1).replace("layer2.", "experts.0.0.", 1)
        renamed[key.replace("layer3.", "experts.0.1.", 1)] = value
    single.load_state_dict(renamed)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(single(x)[0], plain(x), atol=1e-6)


@pytest.mark.parametrize(("shared", "widths"), [(0, (16, 32, 64)), (1, (24, 48)), (2, (48,))])
def test_shapes_and_shared_trunk(shared: int, widths: tuple[int, ...]) -> None:
    net = MultiExpertResNetCifar(num_experts=3, shared_stages=shared, expert_widths=widths)
    out = net(torch.randn(4, 3, 16, 16))
    assert out.shape == (3, 4, widths[-1]) and net.num_features == widths[-1]
    assert len(net.shared) == shared and len(net.experts) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_experts": 0}, "num_experts must be"),
        ({"shared_stages": 3}, "shared_stages must be"),
        ({"expert_widths": (48,)}, "expert_widths must be 2"),
        ({"expert_widths": (8, 48)}, "non-decreasing"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MultiExpertResNetCifar(**kwargs)


def test_head_averages_the_experts_and_checks_shapes() -> None:
    head = MultiExpertHead(4, 3, num_experts=2)
    features = torch.randn(2, 5, 4)
    out = head(features)
    assert out.expert_logits.shape == (2, 5, 3)
    assert torch.allclose(out.logits, (head.heads[0](features[0]) + head.heads[1](features[1])) / 2)
    assert torch.equal(out.features, features.mean(0)) and out.num_experts == 2
    with pytest.raises(ValueError, match=r"per-expert features \[E=2"):
        head(torch.randn(5, 4))
    with pytest.raises(ValueError, match="num_experts must be"):
        MultiExpertHead(4, 3, num_experts=0)


def test_module_logs_each_expert_and_applies_test_expert_weights(tmp_path) -> None:
    dm = SyntheticLTDataModule(num_classes=3, n_max=16, imbalance_ratio=4, image_size=8, batch_size=8, seed=3)
    L.seed_everything(0, verbose=False)
    backbone = MultiExpertResNetCifar(depth=8, num_experts=2, shared_stages=1, widths=(4, 8, 8))
    model = LongTailModule(backbone, dm.num_classes, dm.class_counts, classifier=lambda d, c: MultiExpertHead(d, c, 2))
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert {"val/expert0_acc", "val/expert1_acc_many", "val/expert1_acc_few"} <= set(trainer.callback_metrics)
    expert1 = trainer.test(model, datamodule=dm, verbose=False)[0]["test/expert1_acc"]
    model.test_expert_weights = torch.tensor([0.0, 1.0])
    assert trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"] == pytest.approx(expert1)
