"""Synthetic Gaussian-blob LT data and Digits-LT (``lt_lightning.data.synthetic`` / ``lt_lightning.data.digits``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lt_lightning.data.digits import DIGITS_MEAN, DIGITS_STD, DigitsLTDataModule, load_digits_uint8
from lt_lightning.data.synthetic import SyntheticLTDataModule


def _labels_of(dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


# ---------------------------------------------------------------------------------------------- synthetic
def test_synthetic_counts_shapes_and_balanced_eval_sets() -> None:
    dm = SyntheticLTDataModule()  # 5 classes, n_max 64, rho 10, exp
    # 64 * 0.1 ** (c / 4): 64, 35.99, 20.24, 11.38, 6.4 -> truncated
    assert dm.num_classes == 5
    assert dm.class_counts == [64, 35, 20, 11, 6]
    assert dm.class_names == ["0", "1", "2", "3", "4"]
    assert dm.train_labels.tolist() == [c for c, n in enumerate([64, 35, 20, 11, 6]) for _ in range(n)]
    dm.setup("fit")
    assert len(dm.train_dataset) == 136
    image, label = dm.train_dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8) and label == 0
    assert torch.equal(dm.train_dataset.labels, dm.train_labels)
    for dataset, per_class in ((dm.val_dataset, 8), (dm.test_dataset, 8)):
        assert np.bincount(_labels_of(dataset), minlength=5).tolist() == [per_class] * 5


def test_synthetic_is_deterministic_in_data_seed_and_configurable() -> None:
    a = SyntheticLTDataModule(num_classes=3, n_max=10, imbalance_ratio=2, image_size=4, channels=1, data_seed=3)
    b = SyntheticLTDataModule(num_classes=3, n_max=10, imbalance_ratio=2, image_size=4, channels=1, data_seed=3)
    c = SyntheticLTDataModule(num_classes=3, n_max=10, imbalance_ratio=2, image_size=4, channels=1, data_seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert a.class_counts == [10, 7, 5]  # 10 * 0.5 ** (c / 2): 10, 7.07, 5
    assert a.train_dataset.images.shape == (22, 1, 4, 4)
    assert a.mean == (0.5,) and a.std == (0.25,)
    assert torch.equal(a.train_dataset.images, b.train_dataset.images)
    assert torch.equal(a.test_dataset.images, b.test_dataset.images)
    assert not torch.equal(a.train_dataset.images, c.train_dataset.images)
    step = SyntheticLTDataModule(num_classes=4, n_max=12, imbalance_ratio=4, profile="step")
    assert step.class_counts == [12, 12, 3, 3]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_per_class": 0}, "val_per_class"),
        ({"test_per_class": 0}, "test_per_class"),
        ({"image_size": 0}, "image_size"),
        ({"channels": 0}, "channels"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"imbalance_ratio": 0.5}, "imbalance_ratio"),
        ({"num_classes": 0}, "num_classes"),
        ({"n_max": 4, "imbalance_ratio": 10}, "zero images"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_synthetic_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticLTDataModule(**kwargs)


# ---------------------------------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits() -> DigitsLTDataModule:
    dm = DigitsLTDataModule()
    dm.setup()
    return dm


def test_digits_default_counts_and_shapes(digits: DigitsLTDataModule) -> None:
    assert digits.num_classes == 10
    assert digits.class_counts == [114, 88, 68, 52, 40, 31, 24, 19, 14, 11]
    assert sum(digits.class_counts) == 461 == len(digits.train_dataset)
    assert digits.class_names == [str(d) for d in range(10)]
    assert digits.mean == DIGITS_MEAN and digits.std == DIGITS_STD
    assert digits.crop_padding == 1 and digits.horizontal_flip is False
    image, _ = digits.train_dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (1, 8, 8)
    assert torch.equal(digits.train_dataset.labels, digits.train_labels)


def test_digits_balanced_disjoint_splits(digits: DigitsLTDataModule) -> None:
    assert np.bincount(_labels_of(digits.val_dataset), minlength=10).tolist() == [20] * 10
    assert np.bincount(_labels_of(digits.test_dataset), minlength=10).tolist() == [40] * 10
    train, val, test = (set(i.tolist()) for i in (digits.train_index, digits.val_index, digits.test_index))
    assert len(train) == 461 and len(val) == 200 and len(test) == 400
    assert train.isdisjoint(val) and train.isdisjoint(test) and val.isdisjoint(test)


def test_digits_split_equals_plain_holdout_and_ldam_selection(digits: DigitsLTDataModule, ldam_selection) -> None:
    images, labels = load_digits_uint8()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.uint8 and int(images.max()) == 255
    # plain per-class hold-out: RandomState(0), classes 0..9, shuffle, first 40 test, next 20 val, rest pool
    rng = np.random.RandomState(0)
    test, val, pool = [], [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test.append(idx[:40])
        val.append(idx[40:60])
        pool.append(idx[60:])
    test, val, pool = (np.sort(np.concatenate(x)) for x in (test, val, pool))
    np.testing.assert_array_equal(digits.test_index, test)
    np.testing.assert_array_equal(digits.val_index, val)
    assert int(np.bincount(labels[pool]).min()) == 114  # default n_max = smallest pool
    selected, _, _ = ldam_selection(labels[pool], digits.class_counts, rand_number=0)
    np.testing.assert_array_equal(digits.train_index, pool[selected])
    # dataset contents follow the indices
    assert torch.equal(digits.test_dataset.images, torch.from_numpy(images[test]))
    assert digits.train_dataset.labels.tolist() == labels[pool[selected]].tolist()


def test_digits_image_size_16_repeats_pixels(digits: DigitsLTDataModule) -> None:
    big = DigitsLTDataModule(image_size=16)
    big.setup()
    assert big.crop_padding == 2
    np.testing.assert_array_equal(big.train_index, digits.train_index)
    x8, x16 = digits.train_dataset.images, big.train_dataset.images
    assert x16.shape == (461, 1, 16, 16)
    for a in (0, 1):
        for b in (0, 1):
            assert torch.equal(x16[:, :, a::2, b::2], x8)


def test_digits_other_profile_and_n_max() -> None:
    dm = DigitsLTDataModule(imbalance_ratio=5, profile="step", n_max=50)
    assert dm.class_counts == [50] * 5 + [10] * 5
    assert DigitsLTDataModule(imbalance_ratio=1, n_max=30).class_counts == [30] * 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 12}, "image_size must be a positive multiple of 8, got 12"),
        ({"image_size": 0}, "image_size"),
        ({"test_per_class": 0}, "test_per_class"),
        ({"val_per_class": 0}, "val_per_class"),
        ({"n_max": 200}, "n_max=200 exceeds the smallest class pool"),
        ({"test_per_class": 150, "val_per_class": 50}, "class 0 has"),
        ({"imbalance_ratio": 0}, "imbalance_ratio"),
        ({"profile": "linear"}, "profile"),
    ],
)
def test_digits_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        DigitsLTDataModule(**kwargs)
