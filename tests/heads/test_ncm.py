"""Nearest-class-mean head (Kang et al., ICLR 2020) against hand-computed means, logits and a separable set."""

from __future__ import annotations

import math

import pytest
import torch

from lt_lightning.heads.ncm import NCMHead, class_feature_sums, class_means, means_from_sums

FEATURES = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
LABELS = torch.tensor([0, 0, 1])


def test_means_by_hand() -> None:
    # normalised features: (0.6, 0.8), (0, 1), (1, 0)
    sums, counts = class_feature_sums(FEATURES, LABELS, 3, normalize=True)
    assert torch.allclose(sums, torch.tensor([[0.6, 1.8], [1.0, 0.0], [0.0, 0.0]]), atol=1e-6)
    assert counts.tolist() == [2, 1, 0]
    means, counts = class_means(FEATURES, LABELS, 3, normalize=True)
    assert torch.allclose(means, torch.tensor([[0.3, 0.9], [1.0, 0.0], [0.0, 0.0]]), atol=1e-6)
    plain, _ = class_means(FEATURES, LABELS, 3, normalize=False)
    assert torch.allclose(plain, torch.tensor([[1.5, 3.0], [1.0, 0.0], [0.0, 0.0]]))


def test_sums_over_batches_equal_the_whole_set() -> None:
    torch.manual_seed(0)
    f, y = torch.randn(50, 4), torch.randint(0, 5, (50,))
    parts = [class_feature_sums(f[i::3], y[i::3], 5) for i in range(3)]  # e.g. three processes' shards
    sums, counts = sum(p[0] for p in parts), sum(p[1] for p in parts)
    means, whole_counts = class_means(f, y, 5)
    assert torch.equal(counts, whole_counts)
    assert torch.allclose(means_from_sums(sums, counts), means, atol=1e-6)


def _head(metric: str, normalize: bool = True) -> NCMHead:
    head = NCMHead(2, 3, metric=metric, normalize=normalize)
    head.set_means(*class_feature_sums(FEATURES, LABELS, 3, normalize=normalize))
    return head


def test_cosine_logits_by_hand() -> None:
    out = _head("cosine")(torch.tensor([[0.0, 5.0], [2.0, 0.0]]))
    # means (0.3, 0.9) -> direction (1, 3)/sqrt(10); (1, 0); class 2 has no training sample -> -inf
    c = 3 / math.sqrt(10)
    assert torch.allclose(out[:, :2], torch.tensor([[c, 0.0], [1 / math.sqrt(10), 1.0]]), atol=1e-6)
    assert torch.isneginf(out[:, 2]).all()
    assert out.argmax(dim=1).tolist() == [0, 1]


def test_euclidean_logits_by_hand() -> None:
    out = _head("euclidean")(torch.tensor([[0.0, 5.0], [2.0, 0.0]]))
    # f̂ = (0, 1): -|(0,1)-(0.3,0.9)| = -sqrt(0.1), -|(0,1)-(1,0)| = -sqrt(2);  f̂ = (1, 0): -sqrt(0.49+0.81), 0
    expected = torch.tensor([[-math.sqrt(0.1), -math.sqrt(2.0)], [-math.sqrt(1.3), 0.0]])
    assert torch.allclose(out[:, :2], expected, atol=1e-6)
    assert torch.isneginf(out[:, 2]).all()
    # without normalisation: means (1.5, 3), (1, 0) and the raw feature
    raw = _head("euclidean", normalize=False)(torch.tensor([[0.0, 5.0]]))
    assert torch.allclose(raw[0, :2], torch.tensor([-math.sqrt(1.5**2 + 2.0**2), -math.sqrt(1.0 + 25.0)]), atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_separable_features_are_classified_exactly(metric) -> None:
    torch.manual_seed(0)
    num_classes, dim = 5, 8
    directions = torch.eye(dim)[:num_classes] * 4.0

    def sample(counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(counts))
        return directions[y] + 0.3 * torch.randn(len(y), dim), y

    train_x, train_y = sample([100, 40, 15, 6, 2])  # long-tailed
    test_x, test_y = sample([30] * num_classes)
    head = NCMHead(dim, num_classes, metric=metric)
    head.set_means(*class_feature_sums(train_x, train_y, num_classes))
    accuracy = (head(test_x).argmax(dim=1) == test_y).float().mean()
    assert accuracy == 1.0


# centred by m = (1, 2): (3, 4), (-3, 4), (0, -8) -> normalised (0.6, 0.8), (-0.6, 0.8), (0, -1)
CENTRED = torch.tensor([[4.0, 6.0], [-2.0, 6.0], [1.0, -6.0]])


def test_centred_means_and_squared_distances_by_hand() -> None:
    """The authors' default NCM (classifier-balancing ``KNNClassifier``, ``feat_type="cl2n"``, ``dist_type="l2"``)."""
    m = CENTRED.mean(dim=0)
    assert torch.allclose(m, torch.tensor([1.0, 2.0]))
    sums, counts = class_feature_sums(CENTRED, LABELS, 3, normalize=True, center=m)
    assert torch.allclose(sums, torch.tensor([[0.0, 1.6], [0.0, -1.0], [0.0, 0.0]]), atol=1e-6)
    head = NCMHead(2, 3, metric="squared_euclidean", center=True)
    head.set_means(sums, counts, feature_mean=m)
    assert torch.allclose(head.class_means, torch.tensor([[0.0, 0.8], [0.0, -1.0], [0.0, 0.0]]), atol=1e-6)
    out = head(torch.tensor([[1.0, 3.0], [4.0, 2.0]]))
    # (1, 3) -> (0, 1): 0.2² = 0.04 and 2² = 4;  (4, 2) -> (1, 0): 1 + 0.64 = 1.64 and 1 + 1 = 2
    assert torch.allclose(out[:, :2], torch.tensor([[-0.04, -4.0], [-1.64, -2.0]]), atol=1e-6)
    assert torch.isneginf(out[:, 2]).all()
    # "euclidean" is the square root of the same distances (same argmax)
    plain = NCMHead(2, 3, metric="euclidean", center=True)
    plain.set_means(sums, counts, feature_mean=m)
    assert torch.allclose(plain(torch.tensor([[4.0, 2.0]]))[0, :2], -torch.tensor([1.64, 2.0]).sqrt(), atol=1e-6)
    # the mean travels with the state dict of a centred head only
    fresh = NCMHead(2, 3, metric="squared_euclidean", center=True)
    fresh.load_state_dict(head.state_dict())
    assert torch.equal(fresh.feature_mean, m) and "feature_mean" not in NCMHead(2, 3).state_dict()


def test_centred_head_equals_the_reference_formula() -> None:
    """``-(||x||² + ||c||² - 2 x·c)`` of ``x = (f - m) / ||f - m||`` against the class means of the same transform."""
    torch.manual_seed(0)
    train, y = torch.randn(40, 6, dtype=torch.float64) + 2.0, torch.arange(40) % 4
    test = torch.randn(7, 6, dtype=torch.float64) + 2.0
    m = train.mean(dim=0)

    def transform(f: torch.Tensor) -> torch.Tensor:
        g = f - m
        return g / g.norm(dim=1, keepdim=True)

    centroids = torch.stack([transform(train)[y == c].mean(dim=0) for c in range(4)])
    x = transform(test)
    reference = -((x**2).sum(1, keepdim=True) + (centroids**2).sum(1).unsqueeze(0) - 2 * x @ centroids.T)
    head = NCMHead(6, 4, metric="squared_euclidean", center=True)
    head.set_means(*class_feature_sums(train, y, 4, center=m), feature_mean=m)
    assert torch.allclose(head(test).double(), reference, atol=1e-5)


def test_state_dict_carries_the_means() -> None:
    head = _head("cosine")
    fresh = NCMHead(2, 3)
    fresh.load_state_dict(head.state_dict())
    f = torch.tensor([[0.5, 0.5]])
    assert torch.equal(fresh(f), head(f))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="metric"):
        NCMHead(2, 3, metric="manhattan")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        NCMHead(0, 3)
    head = NCMHead(2, 3)
    with pytest.raises(ValueError, match="all zero"):
        head.set_means(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="sums"):
        head.set_means(torch.zeros(2, 2), torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="counts"):
        head.set_means(torch.zeros(3, 2), -torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="feature_mean"):
        head.set_means(torch.zeros(3, 2), torch.ones(3, dtype=torch.long), feature_mean=torch.zeros(2))
    with pytest.raises(ValueError, match="feature_mean"):
        NCMHead(2, 3, center=True).set_means(torch.zeros(3, 2), torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="center must be"):
        NCMHead(2, 3, center=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="center must have shape"):
        class_feature_sums(FEATURES, LABELS, 3, center=torch.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        class_feature_sums(FEATURES, torch.tensor([0, 1, 3]), 3)
    with pytest.raises(ValueError, match="features"):
        class_feature_sums(torch.ones(3), LABELS, 3)
