"""NearestClassMean: class means of the un-augmented training images, then nearest-mean test predictions."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch import Tensor

from lt_lightning.callbacks.nearest_class_mean import NearestClassMean
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.data.samplers import UnpaddedDistributedSampler
from lt_lightning.heads.ncm import NCMHead, class_feature_sums
from lt_lightning.metrics import LongTailAccuracy
from lt_lightning.module import LongTailModule
from tests.helpers import TinyBackbone
from tests.helpers import quiet_trainer as _trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    L.seed_everything(0)
    dm = DigitsLTDataModule(batch_size=32, eval_batch_size=50)
    module = LongTailModule(
        TinyBackbone(64, 16, relu=True),
        dm.num_classes,
        dm.class_counts,
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
    )
    _trainer(tmp_path_factory.mktemp("fit"), max_epochs=2, limit_train_batches=10, limit_val_batches=0).fit(module, dm)
    return module, dm


def _features(module, dm, images: Tensor) -> Tensor:
    module.eval()
    with torch.no_grad():
        return module(dm.augmentation(images, train=False)).features


def test_train_eval_dataloader_is_the_training_set_once_in_order() -> None:
    dm = DigitsLTDataModule(batch_size=32, eval_batch_size=100)
    dm.setup("fit")
    loader = dm.train_eval_dataloader()
    assert isinstance(loader.sampler, UnpaddedDistributedSampler)
    labels = torch.cat([y for _, y in loader])
    images = torch.cat([x for x, _ in loader])
    assert torch.equal(labels, dm.train_labels) and torch.equal(images, dm.train_dataset.images)
    assert loader.batch_size == 100
    dm.train_dataset.train = True  # a dataset that augments on its own (an ImageFileDataset's train pipeline)
    with pytest.warns(UserWarning, match="augmented"):
        dm.train_eval_dataloader()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ncm_test_uses_the_training_means_and_beats_chance(trained, tmp_path, metric) -> None:
    module, dm = trained
    callback = NearestClassMean(metric=metric)
    seen: dict[str, NCMHead] = {}

    class Spy(L.Callback):  # reads the head the NCM callback installed, during the test
        def on_test_epoch_start(self, trainer, pl_module) -> None:
            seen["head"] = pl_module.test_head

    results = _trainer(tmp_path, [callback, Spy()]).test(module, dm, verbose=False)[0]
    assert module.test_head is None  # removed after the test
    head = seen["head"]
    assert isinstance(head, NCMHead) and head.metric == metric

    # the means are those of the training images without augmentation, each image once
    train_f = _features(module, dm, dm.train_dataset.images)
    sums, counts = class_feature_sums(train_f, dm.train_dataset.labels, 10)
    assert counts.tolist() == dm.class_counts
    assert torch.allclose(head.class_means, sums / counts.unsqueeze(1), atol=1e-5)

    # the test metric is that of nearest-class-mean on the test features
    expected_head = NCMHead(16, 10, metric=metric)
    expected_head.set_means(sums, counts)
    metric_ = LongTailAccuracy(10, module.class_counts.long())
    metric_.update(expected_head(_features(module, dm, dm.test_dataset.images)), dm.test_dataset.labels)
    assert results["test/acc"] == pytest.approx(float(metric_.compute()["acc"]), abs=1e-6)
    assert results["test/acc"] > 0.3  # chance is 0.1 on the balanced test set


def test_reference_ncm_centres_normalises_and_uses_squared_distances(trained, tmp_path) -> None:
    """classifier-balancing's default NCM (``feat_type="cl2n"``, ``dist_type="l2"``), computed here by hand."""
    module, dm = trained
    callback = NearestClassMean(metric="squared_euclidean", center=True)
    seen: dict[str, NCMHead] = {}

    class Spy(L.Callback):
        def on_test_epoch_start(self, trainer, pl_module) -> None:
            seen["head"] = pl_module.test_head

    results = _trainer(tmp_path, [callback, Spy()]).test(module, dm, verbose=False)[0]
    train_f = _features(module, dm, dm.train_dataset.images).double()
    m = train_f.mean(dim=0)  # the mean raw feature of the training images
    g = torch.nn.functional.normalize(train_f - m, dim=1)
    y = dm.train_dataset.labels
    centroids = torch.stack([g[y == c].mean(dim=0) for c in range(10)])
    assert torch.allclose(seen["head"].feature_mean.double(), m, atol=1e-5)
    assert torch.allclose(seen["head"].class_means.double(), centroids, atol=1e-5)
    x = torch.nn.functional.normalize(_features(module, dm, dm.test_dataset.images).double() - m, dim=1)
    predictions = (-torch.cdist(x, centroids).square()).argmax(dim=1)
    expected = float((predictions == dm.test_dataset.labels).double().mean())
    assert results["test/acc"] == pytest.approx(expected, abs=1e-6)


def test_predict_uses_ncm_then_clears_it(trained, tmp_path) -> None:
    module, dm = trained
    probabilities = torch.cat(_trainer(tmp_path, [NearestClassMean()]).predict(module, dm))
    assert module.test_head is None
    train_f = _features(module, dm, dm.train_dataset.images)
    head = NCMHead(16, 10)
    head.set_means(*class_feature_sums(train_f, dm.train_dataset.labels, 10))
    expected = head(_features(module, dm, dm.test_dataset.images)).softmax(dim=-1)
    assert torch.allclose(probabilities, expected, atol=1e-5)


def test_bad_arguments_and_datamodule(tmp_path) -> None:
    with pytest.raises(ValueError, match="metric"):
        NearestClassMean(metric="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="center must be"):
        NearestClassMean(center="yes")  # type: ignore[arg-type]
    dm = DigitsLTDataModule(batch_size=32)
    module = LongTailModule(TinyBackbone(64, 16, relu=True), dm.num_classes, dm.class_counts)
    dm.setup()
    loaders = dict(dataloaders=dm.test_dataloader())  # no datamodule: no training images to average
    with pytest.raises(ValueError, match="train_eval_dataloader"):
        _trainer(tmp_path, [NearestClassMean()]).test(module, verbose=False, **loaders)
