"""Test-agnostic resampling (SADE's forward / uniform / backward test sets): counts by hand, the reference's selection,
bad input, and the datamodules' ``test_distribution`` option through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lt_lightning.cli import run
from lt_lightning.data.base import TensorImageDataset
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.data.test_agnostic import (
    SADE_TEST_DISTRIBUTIONS,
    class_ranks,
    dataset_labels,
    resample_test_dataset,
    resampled_counts,
    select_resampled_indices,
)
from lt_lightning.experiments import experiment_args
from tests.conftest import ldam_reference_selection

REPO = Path(__file__).resolve().parents[2]
# rho = 10 over 10 classes, 100 test images per class: int(100 * 10 ** (-r / 9)) for r = 0..9, by hand:
# 10^(-1/9) = 0.7743, 10^(-2/9) = 0.5995, 10^(-3/9) = 0.4642, 10^(-4/9) = 0.3594, 10^(-5/9) = 0.2783,
# 10^(-6/9) = 0.2154, 10^(-7/9) = 0.1668, 10^(-8/9) = 0.1292, 10^(-1) = 0.1
FORWARD_10 = [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]


def test_forward_counts_by_hand() -> None:
    assert resampled_counts(10, 100, "forward", 10) == FORWARD_10


def test_backward_is_forward_reversed() -> None:
    assert resampled_counts(10, 100, "backward", 10) == FORWARD_10[::-1]
    for rho in (2, 5, 25, 50):
        assert resampled_counts(100, 100, "backward", rho) == resampled_counts(100, 100, "forward", rho)[::-1]


def test_forward_with_ratio_one_is_uniform() -> None:
    assert resampled_counts(10, 100, "forward", 1) == [100] * 10
    assert resampled_counts(10, 100, "backward", 1) == [100] * 10
    assert resampled_counts(10, 100, "uniform", 50) == [100] * 10  # the ratio does not apply to uniform


def test_classes_are_ranked_by_training_counts() -> None:
    # training head is class 1, then class 2, then class 0 (ties: by index)
    assert class_ranks([1, 5, 3], 3) == [2, 0, 1]
    assert class_ranks([4, 4, 9], 3) == [1, 2, 0]
    assert class_ranks(None, 3) == [0, 1, 2]
    # forward by rank with rho = 4 over 3 classes, n_max 8: (8, int(8 * 0.5), int(8 * 0.25)) = (8, 4, 2)
    assert resampled_counts(3, 8, "forward", 4, train_counts=[1, 5, 3]) == [2, 8, 4]
    assert resampled_counts(3, 8, "backward", 4, train_counts=[1, 5, 3]) == [8, 2, 4]
    # a head-first training profile gives the reference's class-index order
    assert resampled_counts(10, 100, "forward", 10, train_counts=[500 - 40 * c for c in range(10)]) == FORWARD_10


def test_sade_grid() -> None:
    assert list(SADE_TEST_DISTRIBUTIONS)[:6] == [
        "forward50",
        "forward25",
        "forward10",
        "forward5",
        "forward2",
        "uniform",
    ]
    assert SADE_TEST_DISTRIBUTIONS["backward25"] == ("backward", 25.0)
    assert len(SADE_TEST_DISTRIBUTIONS) == 11


def _reference_counts(cls_num: int, img_max: float, imb_factor: float, reverse: bool) -> list[int]:
    """SADE's ``IMBALANCECIFAR10.get_img_num_per_cls`` (``imb_type='exp'``), written plainly."""
    counts = []
    for cls_idx in range(cls_num):
        exponent = (cls_num - 1 - cls_idx) if reverse else cls_idx
        counts.append(int(img_max * (imb_factor ** (exponent / (cls_num - 1.0)))))
    return counts


@pytest.mark.parametrize(("name", "distribution", "ratio"), [(k, *v) for k, v in SADE_TEST_DISTRIBUTIONS.items()])
def test_selection_equals_the_reference(name: str, distribution: str, ratio: float) -> None:
    # a CIFAR-100-like balanced test set: 100 classes x 100 images, in a shuffled order
    labels = np.random.RandomState(3).permutation(np.repeat(np.arange(100), 100))
    reverse = distribution == "backward"
    imb_factor = 1.0 if distribution == "uniform" else 1.0 / ratio
    expected_counts = _reference_counts(100, len(labels) / 100, imb_factor, reverse)
    expected, _, _ = ldam_reference_selection(labels, expected_counts, rand_number=0)
    got = select_resampled_indices(labels, 100, distribution, ratio, seed=0)
    assert np.array_equal(got, expected), name
    assert np.bincount(labels[got], minlength=100).tolist() == expected_counts


def test_selection_is_seeded() -> None:
    labels = np.repeat(np.arange(10), 20)
    a = select_resampled_indices(labels, 10, "forward", 5, seed=1)
    assert np.array_equal(a, select_resampled_indices(labels, 10, "forward", 5, seed=1))
    assert not np.array_equal(a, select_resampled_indices(labels, 10, "forward", 5, seed=2))
    # n_max defaults to the smallest per-class test count; it can be given
    assert len(select_resampled_indices(labels, 10, "uniform", 1)) == 200
    assert len(select_resampled_indices(labels, 10, "uniform", 1, n_max=7)) == 70


def test_resample_dataset_keeps_batched_loading() -> None:
    images = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1)
    labels = torch.tensor([0, 1, 2] * 4)
    subset = resample_test_dataset(TensorImageDataset(images, labels), 3, "forward", 4)
    assert dataset_labels(subset).bincount(minlength=3).tolist() == [4, 2, 1]
    batch = subset.__getitems__([0, 1])  # forwarded to TensorImageDataset: one indexing operation
    assert batch.images.shape == (2, 1, 1, 1)
    assert batch.labels.tolist() == dataset_labels(subset)[:2].tolist()


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="distribution must be one of"):
        resampled_counts(10, 100, "sideways", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="imbalance_ratio"):
        resampled_counts(10, 100, "forward", 0.5)
    with pytest.raises(ValueError, match="imbalance_ratio"):
        resampled_counts(10, 100, "forward", float("inf"))
    with pytest.raises(ValueError, match="zero images"):
        resampled_counts(10, 40, "backward", 50)  # 40 / 50 < 1 image for the tail
    with pytest.raises(ValueError, match="train_counts has 2 entries"):
        resampled_counts(3, 10, "forward", 2, train_counts=[1, 2])
    with pytest.raises(ValueError, match=r"no image of class\(es\) \[2\]"):
        select_resampled_indices([0, 1, 0, 1], 3, "forward", 2)
    with pytest.raises(ValueError, match="distribution must be one of"):
        DigitsLTDataModule(test_distribution="both", test_imbalance_ratio=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="imbalance_ratio"):
        DigitsLTDataModule(test_distribution="forward", test_imbalance_ratio=0.5)


def test_datamodule_option_changes_only_the_test_set() -> None:
    plain = DigitsLTDataModule(batch_size=16)
    dm = DigitsLTDataModule(batch_size=16, test_distribution="backward", test_imbalance_ratio=10)
    assert dm.class_counts == plain.class_counts
    dm.setup("fit"), plain.setup("fit")
    assert torch.equal(dm.train_labels, plain.train_labels)
    assert torch.equal(next(iter(dm.val_dataloader()))[1], next(iter(plain.val_dataloader()))[1])
    dm.setup("test")
    # Digits-LT: 40 test images per class, training head = class 0; backward rho = 10 by hand:
    # int(40 * 10 ** (-r / 9)) = 40, 30, 23, 18, 14, 11, 8, 6, 5, 4, reversed
    assert dm.test_class_counts() == [4, 5, 6, 8, 11, 14, 18, 23, 30, 40]
    batch = next(iter(dm.test_dataloader()))
    assert batch[0].dtype == torch.uint8 and len(dm.predict_dataloader().dataset) == 159
    x, _ = dm.on_after_batch_transfer(batch, 0)
    assert x.dtype == torch.float32  # the device pipeline normalised it


def test_datamodule_option_through_the_cli(tmp_path, monkeypatch) -> None:
    configs = experiment_args("digits_lt", "ce")
    monkeypatch.chdir(tmp_path)
    fast = ["--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false"]
    forward = ["--data.init_args.test_distribution", "forward", "--data.init_args.test_imbalance_ratio", "10"]
    cli = run(["test", *configs, "--ckpt_path", "untrained", *fast, *forward])  # the data is under test
    assert cli.datamodule.test_class_counts() == [40, 30, 23, 18, 14, 11, 8, 6, 5, 4]
    assert "test/acc" in cli.trainer.callback_metrics
