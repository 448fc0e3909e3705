"""``BilateralHead``: BBN's linear classifier and its per-branch logits."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch

from lt_lightning.backbones.bbn import BBNResNetCifar
from lt_lightning.callbacks.bbn_schedule import CumulativeLearning
from lt_lightning.data.bilateral_sampler import BilateralSampler
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.heads.bbn import BilateralHead
from lt_lightning.losses.bbn import BilateralLoss
from lt_lightning.module import LongTailModule

pytestmark = pytest.mark.usefixtures("one_thread")


def test_branch_logits_by_hand_and_their_mean_is_the_prediction() -> None:
    head = BilateralHead(4, 2).eval()
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, -1.0, 0.0]]))
        head.fc.bias.copy_(torch.tensor([0.5, -0.5]))
    f = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # f_c = [1, 2], f_r = [3, 4]
    out = head(f)
    # l_c = 2 W_c f_c + b = 2 [1, 2] + b = [2.5, 3.5];  l_r = 2 W_r f_r + b = 2 [8, -3] + b = [16.5, -6.5]
    assert torch.allclose(out.expert_logits, torch.tensor([[[2.5, 3.5]], [[16.5, -6.5]]]))
    assert torch.allclose(out.logits, torch.tensor([[9.5, -1.5]]))  # W f + b
    assert torch.allclose(out.logits, out.expert_logits.mean(0))
    assert torch.equal(out.features, f)
    without_bias = BilateralHead(4, 2, bias=False).eval()
    assert torch.allclose(without_bias(f).logits, without_bias(f).expert_logits.mean(0))


def test_training_returns_plain_logits() -> None:
    head = BilateralHead(6, 3).train()
    f = torch.randn(2, 6)
    out = head(f)
    assert isinstance(out, torch.Tensor) and torch.equal(out, head.fc(f))


def test_odd_in_features_is_an_error() -> None:
    with pytest.raises(ValueError, match="in_features must be even"):
        BilateralHead(5, 3)


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
def test_module_logs_each_branch_accuracy(tmp_path) -> None:
    dm = SyntheticLTDataModule(
        num_classes=3,
        n_max=16,
        imbalance_ratio=4,
        val_per_class=2,
        batch_size=8,
        augment=False,
        sampler=functools.partial(BilateralSampler, branch_batch_size=4),
    )
    model = LongTailModule(
        BBNResNetCifar(depth=8, widths=(4, 8, 8)),
        num_classes=3,
        class_counts=dm.class_counts,
        classifier=BilateralHead,
        criterion=BilateralLoss(),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[CumulativeLearning()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert {"val/acc", "val/expert0_acc", "val/expert1_acc", "val/expert1_acc_few"} <= set(metrics)
