"""``ComputePerImage``: FLOPs per image by hand, routed compute against a count of the dynamic evaluation, Trainer."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from lt_lightning.backbones.multi_expert import MultiExpertResNetCifar
from lt_lightning.callbacks.compute_per_image import (
    ComputePerImage,
    RoutedFlops,
    count_flops,
    model_flops_per_image,
    routed_flops,
)
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.multi_expert import MultiExpertHead
from lt_lightning.heads.routed_multi_expert import RoutedMultiExpertHead, routed_predict
from lt_lightning.losses.ride import RIDELoss
from lt_lightning.module import LongTailModule

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flops_by_hand() -> None:
    # linear 4 -> 3 on 2 images: 2 * (2 * 4 * 3) = 48 FLOPs (a multiply-add is 2), 24 per image
    linear = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    assert count_flops(linear, x) == 48
    assert model_flops_per_image(linear, x) == 24
    # 3x3 convolution 1 -> 2 channels on a 4x4 image, padding 1: 2 * (2 * 9 * 16) = 576
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    assert model_flops_per_image(conv, torch.randn(3, 1, 4, 4)) == 576


def _routed_model() -> tuple[MultiExpertResNetCifar, RoutedMultiExpertHead]:
    torch.manual_seed(0)
    backbone = MultiExpertResNetCifar(depth=8, num_experts=3, widths=(4, 8, 8), expert_widths=(6, 12), in_channels=1)
    head = RoutedMultiExpertHead(backbone.num_features, 5, 3, functools.partial(CosineHead, scale=30.0), top_k=3)
    with torch.no_grad():  # r = 2 - (top1 - top2): about half the images go on at each decision
        head.router.output[0].weight.zero_()
        head.router.output[0].weight[0, :2] = torch.tensor([-1.0, 1.0])
        head.router.output[0].bias.fill_(2.0)
    head.set_routing(True)
    return backbone.eval(), head.eval()


def test_routed_compute_equals_a_count_of_the_dynamic_evaluation() -> None:
    backbone, head = _routed_model()
    x = torch.randn(64, 1, 8, 8)
    parts = routed_flops(backbone, head, x[:1])
    _, counts = routed_predict(backbone, head, x)
    assert len(torch.unique(counts)) >= 2
    measured = count_flops(routed_predict, backbone, head, x) / x.shape[0]
    histogram = torch.bincount(counts, minlength=4)
    assert parts.mean(histogram) == pytest.approx(measured, rel=1e-9)
    # every expert used: the whole ensemble, as evaluated by the routed head on all experts
    assert parts.per_image(3) == model_flops_per_image(lambda z: head(backbone(z)), x[:4])
    assert parts.per_image(1) < parts.per_image(2) < parts.per_image(3)


def test_routed_flops_arithmetic() -> None:
    parts = RoutedFlops(shared=10.0, experts=(100.0, 120.0, 140.0), decisions=(1.0, 2.0))
    assert parts.per_image(1) == 10 + 100 + 1
    assert parts.per_image(2) == 10 + 220 + 3
    assert parts.per_image(3) == 10 + 360 + 3
    assert parts.mean(torch.tensor([0, 1, 0, 1])) == pytest.approx((111 + 373) / 2)
    with pytest.raises(ValueError, match="num_experts"):
        parts.per_image(0)
    with pytest.raises(ValueError, match="histogram"):
        parts.mean(torch.tensor([1, 0, 0, 0]))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="stages"):
        ComputePerImage(stages=("train",))
    with pytest.raises(ValueError, match="stages"):
        ComputePerImage(stages=())


def _data() -> SyntheticLTDataModule:
    return SyntheticLTDataModule(
        num_classes=5,
        n_max=16,
        imbalance_ratio=4,
        image_size=8,
        channels=1,
        batch_size=8,
        seed=3,
        augment=False,
        test_per_class=6,
    )


class RecordInputs(L.Callback):
    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.inputs.append(batch[0].clone())


def _test(model: LongTailModule, tmp: Path, recorder: RecordInputs | None = None) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[ComputePerImage(stages=("test",)), *([recorder] if recorder else [])],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
    )
    trainer.test(model, datamodule=_data(), verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_trainer_logs_compute_of_an_ensemble(tmp_path: Path) -> None:
    dm = _data()
    torch.manual_seed(0)
    backbone = MultiExpertResNetCifar(depth=8, num_experts=3, widths=(4, 8, 8), expert_widths=(6, 12), in_channels=1)
    head = functools.partial(MultiExpertHead, num_experts=3, expert_head=functools.partial(CosineHead, scale=30.0))
    model = LongTailModule(backbone, dm.num_classes, dm.class_counts, classifier=head, criterion=RIDELoss()).eval()
    metrics = _test(model, tmp_path)
    expected = model_flops_per_image(model, torch.randn(1, 1, 8, 8)) / 1e9
    assert metrics["test/gflops_per_image"] == pytest.approx(expected, rel=1e-6)
    assert metrics["test/experts_per_image"] == 3.0


def test_trainer_logs_compute_and_experts_of_a_routed_model(tmp_path: Path) -> None:
    dm = _data()
    backbone, routed = _routed_model()
    model = LongTailModule(backbone, dm.num_classes, dm.class_counts, classifier=lambda d, c: routed)
    recorder = RecordInputs()
    metrics = _test(model, tmp_path, recorder)
    _, counts = routed_predict(backbone, routed, torch.cat(recorder.inputs))
    assert len(torch.unique(counts)) >= 2
    parts = routed_flops(backbone, routed, recorder.inputs[0][:1])
    assert metrics["test/experts_per_image"] == pytest.approx(counts.double().mean().item())
    assert metrics["test/gflops_per_image"] == pytest.approx(parts.mean(torch.bincount(counts, minlength=4)) / 1e9)
