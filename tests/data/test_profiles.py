"""Long-tailed count profiles and the LDAM-DRW selection (``lt_lightning.data.profiles``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lt_lightning.data.profiles import long_tail_counts, select_long_tail_indices

CIFAR_CASES = [(c, n, rho, p) for c, n in ((10, 5000), (100, 500)) for rho in (10, 50, 100) for p in ("exp", "step")]


# ---------------------------------------------------------------------------------------------- long_tail_counts
@pytest.mark.parametrize(("num_classes", "n_max", "rho", "profile"), CIFAR_CASES)
def test_counts_equal_ldam_get_img_num_per_cls(ldam_counts, num_classes, n_max, rho, profile) -> None:
    expected = ldam_counts(num_classes, n_max, profile, 1.0 / rho)
    assert long_tail_counts(num_classes, n_max, rho, profile) == expected
    assert long_tail_counts(num_classes, n_max, float(rho), profile) == expected  # int or float rho alike


def test_counts_known_cifar_lists_and_sums() -> None:
    c10 = long_tail_counts(10, 5000, 100)
    assert c10 == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(c10) == 12406
    # published CIFAR-LT sizes (LDAM-DRW / Cui et al.): CIFAR-10 rho=50, 10; CIFAR-100 rho=100, 50, 10
    assert sum(long_tail_counts(10, 5000, 50)) == 13996
    assert sum(long_tail_counts(10, 5000, 10)) == 20431
    c100 = long_tail_counts(100, 500, 100)
    assert len(c100) == 100 and c100[0] == 500 and c100[-1] == 5
    assert sum(c100) == 10847
    assert sum(long_tail_counts(100, 500, 50)) == 12608
    assert sum(long_tail_counts(100, 500, 10)) == 19573


def test_counts_hand_computed_entries() -> None:
    # class 1 of 10, rho 10: 5000 * 0.1 ** (1/9) = 5000 * 0.774264 = 3871.3 -> 3871
    assert long_tail_counts(10, 5000, 10)[1] == 3871
    # class 1 of 100, rho 100: 500 * 0.01 ** (1/99) = 500 * 0.954548 = 477.3 -> 477
    assert long_tail_counts(100, 500, 100)[1] == 477
    # step: first C // 2 at n_max, the rest int(n_max / rho)
    assert long_tail_counts(10, 5000, 50, "step") == [5000] * 5 + [100] * 5
    assert long_tail_counts(4, 30, 3, "step") == [30, 30, 10, 10]


def test_counts_exp_monotone_head_and_tail() -> None:
    counts = long_tail_counts(37, 1000, 20)
    assert counts[0] == 1000 and counts[-1] == 50
    assert all(a >= b for a, b in zip(counts[:-1], counts[1:], strict=True))


@pytest.mark.parametrize("profile", ["exp", "step"])
def test_counts_rho_one_is_balanced(profile) -> None:
    assert long_tail_counts(10, 5000, 1, profile) == [5000] * 10
    assert long_tail_counts(7, 3, 1.0, profile) == [3] * 7


def test_counts_single_class_and_odd_step() -> None:
    assert long_tail_counts(1, 17, 10) == [17]
    # LDAM-DRW returns only C-1 entries for odd C; here the last C - C//2 classes are the minority
    assert long_tail_counts(5, 100, 10, "step") == [100, 100, 10, 10, 10]
    assert long_tail_counts(10, 100, 10, "step", step_fraction=0.3) == [100] * 3 + [10] * 7
    assert long_tail_counts(4, 100, 10, "step", step_fraction=1.0) == [100] * 4


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"imbalance_ratio": 0}, "imbalance_ratio"),
        ({"imbalance_ratio": -10}, "imbalance_ratio"),
        ({"imbalance_ratio": 0.5}, "imbalance_ratio"),
        ({"imbalance_ratio": math.nan}, "imbalance_ratio"),
        ({"imbalance_ratio": math.inf}, "imbalance_ratio"),
        ({"profile": "linear"}, "profile"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"n_max": 0}, "n_max"),
        ({"n_max": -5}, "n_max"),
        ({"n_max": 10.0}, "n_max"),
        ({"profile": "step", "step_fraction": 0.0}, "step_fraction"),
        ({"profile": "step", "step_fraction": 1.5}, "step_fraction"),
    ],
)
def test_counts_bad_arguments_name_the_argument(kwargs, name) -> None:
    args = {"num_classes": 10, "n_max": 100, "imbalance_ratio": 10.0, "profile": "exp", **kwargs}
    with pytest.raises(ValueError, match=name):
        long_tail_counts(**args)


@pytest.mark.parametrize(
    ("n_max", "rho", "profile", "first_empty"),
    [
        (10, 100, "exp", 5),  # c=4: 10 * 0.01**(4/9) = 1.29 -> 1 ; c=5: 10 * 0.01**(5/9) = 0.77 -> 0
        (5, 10, "exp", 7),  # c=6: 5 * 0.1**(6/9) = 1.08 -> 1 ; c=7: 5 * 0.1**(7/9) = 0.83 -> 0
        (99, 100, "step", 5),  # minority half: int(99 * 0.01) = int(0.99) = 0
    ],
)
def test_counts_zero_image_class_is_an_error(n_max, rho, profile, first_empty) -> None:
    with pytest.raises(ValueError, match=f"class {first_empty} would get zero images.*imbalance_ratio"):
        long_tail_counts(10, n_max, rho, profile)


# ---------------------------------------------------------------------------------------------- selection
def _interleaved_labels(num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Labels in a random order (like CIFAR's batches), ``per_class`` of each class."""
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.RandomState(seed).permutation(labels)


@pytest.mark.parametrize(
    ("num_classes", "per_class", "rho", "profile"),
    [(10, 60, 10, "exp"), (10, 60, 20, "step"), (25, 40, 8, "exp"), (3, 7, 1, "exp")],
)
@pytest.mark.parametrize("seed", [0, 1, 123])
def test_selection_equals_ldam_gen_imbalanced_data(ldam_selection, num_classes, per_class, rho, profile, seed) -> None:
    labels = _interleaved_labels(num_classes, per_class, seed=1000 + seed)
    counts = long_tail_counts(num_classes, per_class, rho, profile)
    ref_selected, ref_num, ref_rest = ldam_selection(labels.tolist(), counts, rand_number=seed)

    selected, unused = select_long_tail_indices(labels, counts, seed=seed)

    assert selected.dtype == np.int64
    np.testing.assert_array_equal(selected, ref_selected)  # same indices, same (class-by-class shuffled) order
    assert np.bincount(labels[selected], minlength=num_classes).tolist() == counts
    assert {int(k): v for k, v in ref_num.items()} == dict(enumerate(counts))
    assert sorted(unused) == list(range(num_classes))
    for c in range(num_classes):
        np.testing.assert_array_equal(unused[c], ref_rest[c])  # the rest of the shuffled class, in that order
        assert set(unused[c]).isdisjoint(selected)
        assert sorted([*unused[c], *selected[labels[selected] == c]]) == np.flatnonzero(labels == c).tolist()


def test_selection_does_not_touch_global_numpy_state() -> None:
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    select_long_tail_indices(_interleaved_labels(4, 10, 0), [10, 5, 3, 1], seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_selection_accepts_lists_and_zero_counts() -> None:
    labels = [0, 1, 0, 1, 2, 2]
    selected, unused = select_long_tail_indices(labels, [2, 0, 1], seed=0)
    assert sorted(selected.tolist())[:2] == [0, 2]
    assert np.asarray(labels)[selected].tolist() == [0, 0, 2]
    assert sorted(unused[1].tolist()) == [1, 3]
    empty, _ = select_long_tail_indices([], [], seed=0)
    assert empty.shape == (0,) and empty.dtype == np.int64


@pytest.mark.parametrize(
    ("labels", "counts", "match"),
    [
        ([0, 1, 3], [1, 1, 1], r"labels\[2\] = 3 is outside \[0, 3\)"),
        ([0, -1], [1, 1], r"labels\[1\] = -1"),
        ([0, 1], [1, -2], r"counts\[1\] must be non-negative"),
        ([0, 0, 1], [1, 2], r"class 1 has 1 images but counts\[1\] = 2"),
        ([0, 0], [1, 1], r"class 1 has 0 images but counts\[1\] = 1"),
        ([[0, 1]], [1, 1], "labels must be 1-D"),
    ],
)
def test_selection_bad_input(labels, counts, match) -> None:
    with pytest.raises(ValueError, match=match):
        select_long_tail_indices(labels, counts)
