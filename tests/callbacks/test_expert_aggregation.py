"""TestTimeAggregation (SADE): expert weights on the simplex, learned from images only, applied to the test logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.backbones.base import Backbone
from lt_lightning.backbones.multi_expert import MultiExpertResNetCifar
from lt_lightning.callbacks.expert_aggregation import (
    TestTimeAggregation,
    aggregate_expert_logits,
    batch_images,
    prediction_stability,
)
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.data.transforms import DeviceAugmentation
from lt_lightning.experiments import experiment_args
from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.multi_expert import MultiExpertHead
from lt_lightning.module import LongTailModule
from tests.helpers import TinyBackbone
from tests.helpers import quiet_trainer as _trainer

REPO = Path(__file__).resolve().parents[2]


def _datamodule() -> SyntheticLTDataModule:
    dm = SyntheticLTDataModule(num_classes=5, n_max=16, test_per_class=8, batch_size=8, image_size=8)
    dm.crop_padding, dm.horizontal_flip = 1, True  # the views: random crop (padding 1) and flip
    return dm


def _module(dm: SyntheticLTDataModule, backbone: Backbone | None = None, experts: int = 3) -> LongTailModule:
    L.seed_everything(0)
    backbone = backbone or MultiExpertResNetCifar(depth=8, num_experts=experts, widths=(4, 8, 8), in_channels=3)
    head = partial(MultiExpertHead, num_experts=experts, expert_head=partial(CosineHead, scale=30.0))
    return LongTailModule(backbone, dm.num_classes, dm.class_counts, classifier=head)


@pytest.fixture(scope="module")
def setup():
    dm = _datamodule()
    dm.setup("test")
    return dm, _module(dm)


class UnreadableLabels:
    """Stands where a batch's labels would be: any use of it fails the test."""

    def __getattribute__(self, name: str):
        raise AssertionError(f"TestTimeAggregation read the labels (attribute {name!r})")


def _images_only(dataset, batch_size: int) -> DataLoader:
    return DataLoader(TensorDataset(dataset.images), batch_size=batch_size)


def test_stability_objective_hand_computed() -> None:
    # two views, one image, two experts; w = (1/2, 1/2):
    # view 1: z = (0.5 * (2, 0) + 0.5 * (0, 0)) = (1, 0) -> p = (e, 1) / (e + 1)
    # view 2: z = (0.5 * (0, 2) + 0.5 * (0, 0)) = (0, 1) -> p = (1, e) / (e + 1)
    # cos = 2e / (e^2 + 1)
    z1 = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])
    z2 = torch.tensor([[[0.0, 2.0]], [[0.0, 0.0]]])
    e = torch.e
    cos = prediction_stability(z1, z2, torch.tensor([0.5, 0.5]))
    assert cos.item() == pytest.approx(2 * e / (e**2 + 1), rel=1e-5)
    assert aggregate_expert_logits(z1, torch.tensor([0.25, 0.75])).tolist() == [[0.5, 0.0]]
    # identical views are perfectly stable whatever the weights
    assert prediction_stability(z1, z1, torch.tensor([0.9, 0.1])).item() == pytest.approx(1.0, abs=1e-6)


def test_weights_on_the_simplex_logged_and_applied(setup, tmp_path) -> None:
    dm, module = setup
    callback = TestTimeAggregation(epochs=2, min_weight=0.0)
    metrics = _trainer(tmp_path, [callback]).test(module, dm, verbose=False)[0]
    weights = callback.weights
    assert weights is not None and weights.shape == (3,)
    assert bool((weights >= 0).all()) and float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
    assert [metrics[f"test/expert_weight_{i}"] for i in range(3)] == pytest.approx(weights.tolist(), abs=1e-7)
    assert not torch.allclose(weights, torch.full((3,), 1 / 3))  # it learned something
    assert len(callback.history) == 2 and all(0 < h <= 1 for h in callback.history)

    # the test logits were the weighted sum of the expert logits; the hook is gone after the test
    x = dm.augmentation(dm.test_dataset.images)
    module.eval()
    with torch.no_grad():
        output = module(x)
    assert torch.allclose(output.logits, output.expert_logits.mean(0))
    predicted = torch.cat(_trainer(tmp_path, [callback]).predict(module, dm))
    weights = callback.weights  # learned again on the predict loader (the same test images)
    assert torch.allclose(predicted, F.softmax(torch.einsum("e,ebc->bc", weights, output.expert_logits), 1), atol=1e-6)


def test_labels_are_never_read(setup) -> None:
    dm, module = setup

    def collate(samples):
        return [torch.stack([image for image, _ in samples]), UnreadableLabels()]

    class Labelled(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(dm.test_dataset)

        def __getitem__(self, i: int):
            return dm.test_dataset.images[i], UnreadableLabels()

    loader = DataLoader(Labelled(), batch_size=16, collate_fn=collate)
    weights = TestTimeAggregation(epochs=1).learn_weights(module, loader, dm.augmentation)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)


def test_image_only_loader_equals_labelled_test_and_predict_needs_no_labels(setup, tmp_path) -> None:
    # the same images in the same batches give the same weights with labels (trainer.test) or without any
    dm, module = setup
    with_labels = TestTimeAggregation(epochs=2, seed=3)
    _trainer(tmp_path, [with_labels]).test(module, dm, verbose=False)
    images_only = _images_only(dm.test_dataset, dm.eval_batch_size)
    without = TestTimeAggregation(epochs=2, seed=3).learn_weights(module, images_only, dm.augmentation)
    assert torch.equal(with_labels.weights, without)

    # predict on a loader without labels and without a datamodule: float images normalised beforehand, views that
    # crop and flip them
    floats = DataLoader(TensorDataset(dm.augmentation(dm.test_dataset.images)), batch_size=16)
    views = DeviceAugmentation((0.0,) * 3, (1.0,) * 3, padding=1, flip=True)
    callback = TestTimeAggregation(epochs=1, augmentation=views)
    predicted = _trainer(tmp_path, [callback]).predict(module, floats)
    assert sum(p.shape[0] for p in predicted) == 40
    assert float(callback.weights.sum()) == pytest.approx(1.0, abs=1e-6)


def test_the_test_loop_still_sees_every_image_with_persistent_workers(tmp_path) -> None:
    # the aggregation iterates its own loader: the test's iterator (persistent workers) is not consumed
    dm = _datamodule()
    dm.num_workers = 1
    module = _module(dm)
    _trainer(tmp_path, [TestTimeAggregation(epochs=1)]).test(module, dm, verbose=False)
    assert int(module.last_test_results["total"].sum()) == 40


def test_deterministic_given_the_seed(setup) -> None:
    dm, module = setup
    loader = _images_only(dm.test_dataset, 16)
    a = TestTimeAggregation(epochs=2, seed=0).learn_weights(module, loader, dm.augmentation)
    b = TestTimeAggregation(epochs=2, seed=0).learn_weights(module, loader, dm.augmentation)
    c = TestTimeAggregation(epochs=2, seed=1).learn_weights(module, loader, dm.augmentation)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


class OneStableExpert(Backbone):
    """Three experts: expert 0 sees a constant (its prediction ignores the view), experts 1 and 2 fixed random
    projections of the pixels (their predictions change with the crop)."""

    def __init__(self, in_features: int = 3 * 8 * 8, num_features: int = 6) -> None:
        super().__init__()
        self.num_features = num_features
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("proj", 3.0 * torch.randn(2, in_features, num_features, generator=generator))
        self.register_buffer("const", torch.randn(num_features, generator=generator))

    def forward_features(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        const = self.const.expand(flat.shape[0], -1)
        return torch.stack([const, flat @ self.proj[0], flat @ self.proj[1]])


def test_the_stable_expert_gains_weight(tmp_path) -> None:
    dm = _datamodule()
    module = _module(dm, OneStableExpert())
    callback = TestTimeAggregation(epochs=5, min_weight=0.0)
    _trainer(tmp_path, [callback]).test(module, dm, verbose=False)
    weights = callback.weights
    assert weights[0] > 0.5 and weights[0] == weights.max()
    assert callback.history[-1] > callback.history[0]  # the predictions became more stable


def test_identical_views_keep_uniform_weights(setup) -> None:
    dm, module = setup
    no_augmentation = partial(dm.augmentation, train=False)  # both views are the image itself

    def views(x, train=True, generator=None):
        return no_augmentation(x)

    with pytest.warns(UserWarning, match="identical"):
        weights = TestTimeAggregation(epochs=2).learn_weights(module, _images_only(dm.test_dataset, 16), views)
    assert weights.tolist() == pytest.approx([1 / 3] * 3, abs=1e-6)


def test_limit_test_batches_limits_the_aggregation(setup, tmp_path) -> None:
    dm, module = setup
    limited = TestTimeAggregation(epochs=1, seed=0)
    _trainer(tmp_path, [limited], limit_test_batches=1).test(module, dm, verbose=False)
    direct = TestTimeAggregation(epochs=1, seed=0).learn_weights(
        module, dm.test_dataloader(), dm.augmentation, max_batches=1
    )
    assert torch.equal(limited.weights, direct)


def test_bad_input_errors(setup, tmp_path) -> None:
    dm, module = setup
    for kwargs, match in [
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"momentum": -0.1}, "momentum"),
        ({"min_weight": 1.0}, "min_weight"),
        ({"max_steps": 0}, "max_steps"),
        ({"momentum": 0.0, "nesterov": True}, "nesterov"),
        ({"augmentation": 3}, "augmentation"),
    ]:
        with pytest.raises(ValueError, match=match):
            TestTimeAggregation(**kwargs)
    callback = TestTimeAggregation()
    with pytest.raises(ValueError, match="needs a test loader"):
        callback.learn_weights(module, None, dm.augmentation)
    with pytest.raises(ValueError, match="needs a test loader"):  # a trainer that has no test loader
        callback.on_test_start(_trainer(tmp_path), module)
    with pytest.raises(ValueError, match="augmentation"):
        callback.learn_weights(module, _images_only(dm.test_dataset, 16))
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8, dtype=torch.uint8)), batch_size=4)
    with pytest.raises(ValueError, match="empty"):
        callback.learn_weights(module, empty, dm.augmentation)
    single = LongTailModule(TinyBackbone(3 * 8 * 8, 4), dm.num_classes, dm.class_counts)
    with pytest.raises(ValueError, match="multi-expert classifier"):
        _trainer(tmp_path, [TestTimeAggregation()]).test(single, dm, verbose=False)
    with pytest.raises(ValueError, match="image tensor"):
        batch_images({"x": torch.zeros(1)})


@pytest.mark.ddp
def test_ddp_ranks_hold_the_same_weights(tmp_path: Path) -> None:
    """2 CPU processes through the CLI (gloo): gradients summed across ranks, so both ranks log the same weights."""
    config = experiment_args("digits_lt", "sade")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}

    def cli(args: list[str]) -> None:
        cmd = [sys.executable, "-m", "lt_lightning", *args, "--trainer.enable_progress_bar", "false"]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"

    fit = ["fit", *config, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    cli([*fit, "--trainer.limit_val_batches", "0", "--trainer.logger", "false"])
    ckpt = next(tmp_path.rglob("last.ckpt"))
    out = tmp_path / "probe"
    probe = ["--trainer.callbacks+=tests.ddp_probe.EvalCountsProbe", "--trainer.callbacks.out_dir", str(out)]
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    cli(["test", *config, "--ckpt_path", str(ckpt), "--trainer.logger", "false", *ddp, *probe])
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    weights = [[r["logged"][f"test/expert_weight_{i}"] for i in range(3)] for r in ranks]
    assert weights[0] == weights[1]
    assert sum(weights[0]) == pytest.approx(1.0, abs=1e-6)
    assert ranks[0]["logged"]["test/acc"] == pytest.approx(ranks[1]["logged"]["test/acc"])
    # one process on the same checkpoint and test set: close weights, not equal -- under DDP each rank takes half the
    # images per step, so the aggregation makes half as many SGD steps over other batches (measured: 0.029 apart)
    single = tmp_path / "single"
    one = ["--trainer.callbacks+=tests.ddp_probe.EvalCountsProbe", "--trainer.callbacks.out_dir", str(single)]
    cli(["test", *config, "--ckpt_path", str(ckpt), "--trainer.logger", "false", *one])
    alone = json.loads((single / "rank0.json").read_text())["logged"]
    assert [alone[f"test/expert_weight_{i}"] for i in range(3)] == pytest.approx(weights[0], abs=0.05)
    assert alone["test/acc"] == pytest.approx(ranks[0]["logged"]["test/acc"], abs=0.02)
