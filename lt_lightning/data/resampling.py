"""Re-sampling samplers of the survey's class re-balancing family: ``p_c ∝ n_c^q``, class-aware, progressive, DRS.

Every sampler here is an :class:`~lt_lightning.data.samplers.EpochSampler` that overrides ``draw`` only: the order of
epoch ``e`` is a pure function of ``(seed, e)`` (a ``torch.Generator`` seeded with ``seed + e``), one global list is
drawn identically on every process and each process takes ``global[rank::num_replicas]``. So they are exact under
resume (nothing is carried between epochs) and under DDP (disjoint shards of one list, equal lengths) by
construction.

Notation: ``n_c`` training images of class ``c``, ``N = sum_c n_c``, ``C`` the classes present in ``labels``. A
sampler draws class ``c`` with probability ``p_c`` and, within the class, every image with the same probability, so
image ``i`` of label ``y_i`` has probability ``p_{y_i} / n_{y_i}``.

* :class:`ClassPowerSampler` -- ``p_c = n_c^q / sum_k n_k^q`` (Kang et al., "Decoupling Representation and
  Classifier for Long-Tailed Recognition", ICLR 2020, Eq. 1): ``q = 1`` instance-balanced, ``q = 1/2`` square-root
  (Mahajan et al., "Exploring the Limits of Weakly Supervised Pretraining", ECCV 2018), ``q = 0`` class-balanced.
  :class:`ClassBalancedSampler` and :class:`SquareRootSampler` are its ``q = 0`` and ``q = 1/2`` members.
* :class:`ClassAwareSampler` -- Shen, Lin, Huang, "Relay Backpropagation for Effective Learning of Deep
  Convolutional Neural Networks", ECCV 2016 (used by Kang et al. 2020 for cRT): walk a shuffled list of classes,
  and for each class visit take the next image of its shuffled image list; a list is reshuffled when exhausted.
* :class:`ProgressiveSampler` -- progressively-balanced sampling (Kang et al. 2020, Eq. 2):
  ``p_c(t) = (1 - t/T) p_c^IB + (t/T) p_c^CB`` at epoch ``t`` of ``T``.
* :class:`DeferredResampler` -- deferred re-sampling, DRS (Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced
  Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019, Sec. 3.3): instance-balanced (a plain random
  permutation, the baseline's order) before epoch ``E``, class-balanced from ``E``.

Draws by class probabilities are with replacement (``torch.multinomial`` over the ``N`` per-image probabilities), as
in the reference ``ImbalancedDatasetSampler`` of LDAM-DRW; an epoch has ``N`` draws unless ``num_samples`` says
otherwise. Their constructors take ``(labels, num_replicas, rank, seed)`` first and everything else by keyword, so a
YAML gives them as a ``Callable[[Tensor, int, int, int], EpochSampler]`` (``class_path`` + ``init_args``: ``q``,
``total_epochs``, ...) to :class:`~lt_lightning.data.base.LongTailDataModule`'s ``sampler`` argument.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lt_lightning._checks import check_int
from lt_lightning.data.samplers import EpochSampler, permutation_draw

__all__ = [
    "ClassAwareSampler",
    "ClassBalancedSampler",
    "ClassPowerSampler",
    "ClassProbabilitySampler",
    "DeferredResampler",
    "ProgressiveSampler",
    "SquareRootSampler",
    "class_power_probabilities",
    "mixed_class_probabilities",
    "progressive_mixing",
    "sample_probabilities",
]


# ---------------------------------------------------------------------------------------------- functional core
def _counts(class_counts: Tensor) -> Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0:
        raise ValueError("class_counts is empty")
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"class_counts must be finite and non-negative, got {counts.tolist()}")
    if not (counts > 0).any():
        raise ValueError(f"class_counts has no class with a training image: {counts.tolist()}")
    return counts


def class_power_probabilities(class_counts: Tensor, q: float) -> Tensor:
    """Class sampling probabilities ``p_c = n_c^q / sum_k n_k^q`` (Kang et al., ICLR 2020, Eq. 1), float64 ``[C]``.

    ``q = 1`` instance-balanced (``n_c / N``), ``q = 1/2`` square-root, ``q = 0`` class-balanced (``1 / C``). A class
    with ``n_c = 0`` gets ``p_c = 0`` for every ``q`` (it cannot be drawn), so ``C`` counts only present classes.

    Args:
        class_counts: ``[C]`` training images per class.
        q: the exponent, in ``[0, 1]``.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    counts = _counts(class_counts)
    present = counts > 0
    weights = torch.where(present, counts.clamp_min(1.0) ** q, torch.zeros_like(counts))
    return weights / weights.sum()


def mixed_class_probabilities(class_counts: Tensor, mixing: float) -> Tensor:
    """``p_c = (1 - a) p_c^IB + a p_c^CB`` with ``p^IB = n_c / N`` and ``p^CB = 1 / C`` (float64 ``[C]``).

    Args:
        class_counts: ``[C]`` training images per class.
        mixing: the class-balance mixing ``a`` in ``[0, 1]`` (0 instance-balanced, 1 class-balanced).
    """
    if not 0.0 <= mixing <= 1.0:
        raise ValueError(f"mixing must be in [0, 1], got {mixing}")
    instance = class_power_probabilities(class_counts, 1.0)
    balanced = class_power_probabilities(class_counts, 0.0)
    return (1.0 - mixing) * instance + mixing * balanced


def progressive_mixing(epoch: int, total_epochs: int) -> float:
    """Mixing ``t / T`` of progressively-balanced sampling at epoch ``t`` (Kang et al. 2020, Eq. 2), capped at 1."""
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return min(epoch / total_epochs, 1.0)


def sample_probabilities(labels: Tensor, class_probabilities: Tensor) -> Tensor:
    """Per-image probabilities ``p_{y_i} / n_{y_i}`` (float64 ``[N]``, summing to 1): class ``c`` drawn with ``p_c``.

    Args:
        labels: ``[N]`` class indices.
        class_probabilities: ``[C]`` class probabilities (``C > max(labels)``); classes absent from ``labels`` must
            have probability 0.
    """
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    probs = torch.as_tensor(class_probabilities, dtype=torch.float64).flatten()
    if labels.numel() == 0:
        raise ValueError("labels is empty")
    if labels.min() < 0 or labels.max() >= probs.numel():
        lo, hi = int(labels.min()), int(labels.max())
        raise ValueError(f"labels must lie in [0, {probs.numel()}), got min {lo}, max {hi}")
    counts = torch.bincount(labels, minlength=probs.numel()).to(torch.float64)
    absent = (counts == 0) & (probs > 0)
    if absent.any():
        c = int(torch.nonzero(absent)[0])
        raise ValueError(f"class {c} has probability {float(probs[c])} but no image in labels")
    return probs[labels] / counts[labels]


# ---------------------------------------------------------------------------------------------- samplers
class ClassProbabilitySampler(EpochSampler):
    """Base of the samplers that draw class ``c`` with ``p_c(epoch)``: ``N`` draws with replacement per epoch.

    ``draw`` is ``torch.multinomial(p_{y_i} / n_{y_i}, total_size, replacement=True, generator)``; subclasses define
    :meth:`class_probabilities`. ``class_counts`` (``[C]``, ``C = max(labels) + 1``) is kept for them.
    """

    def __init__(
        self,
        labels: Tensor,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        *,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(labels, num_replicas=num_replicas, rank=rank, seed=seed, num_samples=num_samples)
        if self.labels.min() < 0:
            raise ValueError(f"labels must be >= 0, got {int(self.labels.min())}")
        self.class_counts = torch.bincount(self.labels)

    def class_probabilities(self, epoch: int | None = None) -> Tensor:  # pragma: no cover - interface
        """``[C]`` float64 probability of drawing each class in ``epoch`` (default ``self.epoch``)."""
        raise NotImplementedError

    def draw(self, generator: torch.Generator) -> Tensor:
        probs = sample_probabilities(self.labels, self.class_probabilities(self.epoch))
        return torch.multinomial(probs, self.total_size, replacement=True, generator=generator)


class ClassPowerSampler(ClassProbabilitySampler):
    """Class-balanced family ``p_c ∝ n_c^q`` (Kang et al., "Decoupling Representation and Classifier for
    Long-Tailed Recognition", ICLR 2020, Eq. 1), drawn with replacement.

    Args:
        labels: ``[N]`` training labels.
        num_replicas: world size.
        rank: this process's global rank.
        seed: base seed (epoch ``e`` draws with ``seed + e``).
        q: exponent in ``[0, 1]``: 1 instance-balanced, 1/2 square-root, 0 class-balanced.
        num_samples: global draws per epoch (default ``N``).
    """

    def __init__(
        self,
        labels: Tensor,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        *,
        q: float,
        num_samples: int | None = None,
    ) -> None:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        super().__init__(labels, num_replicas, rank, seed, num_samples=num_samples)
        self.q = float(q)
        self._probs = class_power_probabilities(self.class_counts, self.q)

    def class_probabilities(self, epoch: int | None = None) -> Tensor:
        return self._probs.clone()


class ClassBalancedSampler(ClassPowerSampler):
    """Class-balanced sampling ``p_c = 1 / C`` (``q = 0`` of :class:`ClassPowerSampler`), with replacement."""

    def __init__(
        self, labels: Tensor, num_replicas: int = 1, rank: int = 0, seed: int = 0, *, num_samples: int | None = None
    ) -> None:
        super().__init__(labels, num_replicas, rank, seed, q=0.0, num_samples=num_samples)


class SquareRootSampler(ClassPowerSampler):
    """Square-root sampling ``p_c ∝ sqrt(n_c)`` (``q = 1/2`` of :class:`ClassPowerSampler`; Mahajan et al., ECCV
    2018), with replacement."""

    def __init__(
        self, labels: Tensor, num_replicas: int = 1, rank: int = 0, seed: int = 0, *, num_samples: int | None = None
    ) -> None:
        super().__init__(labels, num_replicas, rank, seed, q=0.5, num_samples=num_samples)


class ProgressiveSampler(ClassProbabilitySampler):
    """Progressively-balanced sampling ``p_c(t) = (1 - t/T) n_c/N + (t/T) / C`` at epoch ``t`` (Kang et al., ICLR
    2020, Eq. 2); from ``t >= T`` it stays class-balanced.

    Args:
        labels: ``[N]`` training labels.
        num_replicas: world size.
        rank: this process's global rank.
        seed: base seed.
        total_epochs: ``T``, usually the number of training epochs.
        num_samples: global draws per epoch (default ``N``).
    """

    def __init__(
        self,
        labels: Tensor,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        *,
        total_epochs: int,
        num_samples: int | None = None,
    ) -> None:
        check_int("total_epochs", total_epochs, minimum=1)
        super().__init__(labels, num_replicas, rank, seed, num_samples=num_samples)
        self.total_epochs = total_epochs

    def mixing(self, epoch: int | None = None) -> float:
        """Class-balance mixing ``min(t / T, 1)`` of ``epoch`` (default ``self.epoch``)."""
        return progressive_mixing(self.epoch if epoch is None else int(epoch), self.total_epochs)

    def class_probabilities(self, epoch: int | None = None) -> Tensor:
        return mixed_class_probabilities(self.class_counts, self.mixing(epoch))


class DeferredResampler(ClassProbabilitySampler):
    """Deferred re-sampling, DRS (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
    Loss", NeurIPS 2019): instance-balanced before epoch ``E``, class-balanced ``p_c = 1 / C`` from ``E``.

    Before ``E`` an epoch is a random permutation (each image once: the order of
    :class:`~lt_lightning.data.samplers.InstanceBalancedSampler`, so the run equals the baseline until ``E``);
    from ``E`` it draws class-balanced with replacement.

    Args:
        labels: ``[N]`` training labels.
        num_replicas: world size.
        rank: this process's global rank.
        seed: base seed.
        switch_epoch: ``E`` (0-based; 160 of 200 epochs in the paper's CIFAR recipe).
        num_samples: global draws per epoch (default ``N``).
    """

    def __init__(
        self,
        labels: Tensor,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        *,
        switch_epoch: int,
        num_samples: int | None = None,
    ) -> None:
        check_int("switch_epoch", switch_epoch, minimum=0)
        super().__init__(labels, num_replicas, rank, seed, num_samples=num_samples)
        self.switch_epoch = switch_epoch

    def mixing(self, epoch: int | None = None) -> float:
        """Class-balance mixing: 0 before ``switch_epoch``, 1 from it."""
        return 0.0 if (self.epoch if epoch is None else int(epoch)) < self.switch_epoch else 1.0

    def class_probabilities(self, epoch: int | None = None) -> Tensor:
        return mixed_class_probabilities(self.class_counts, self.mixing(epoch))

    def draw(self, generator: torch.Generator) -> Tensor:
        if self.mixing() == 0.0:
            return permutation_draw(self.labels.numel(), self.total_size, generator)
        return super().draw(generator)


class ClassAwareSampler(EpochSampler):
    """Class-aware sampling (Shen et al., "Relay Backpropagation", ECCV 2016; Kang et al., ICLR 2020, cRT).

    Walk a list of the classes in random order (a fresh shuffle after every ``C`` picks); at each pick take the next
    ``num_samples_cls`` images of that class from its shuffled image list, reshuffled when exhausted. Every class is
    picked equally often (``p_c = 1 / C``) and, within a class, images are drawn without replacement until its list
    is used up. Stateless: the lists of epoch ``e`` start fresh from the ``(seed + e)`` generator (the reference
    ``ClassAwareSampler`` of facebookresearch/classifier-balancing carries its iterators across epochs; the draws
    have the same distribution within an epoch).

    Args:
        labels: ``[N]`` training labels.
        num_replicas: world size.
        rank: this process's global rank.
        seed: base seed.
        num_samples_cls: consecutive images taken per class pick (1 by default in the reference; its ImageNet-LT
            cRT config ``config/ImageNet_LT/cls_crt.yaml`` uses 4).
        num_samples: global draws per epoch (default ``N``). The reference sampler's ``__len__`` is
            ``C * max_c n_c``, but neither reference trains on all of it: classifier-balancing's ``run_networks.py``
            stops each epoch after ``int(N / batch_size)`` batches (``epoch_steps``) and MiSLAS's
            ``train_stage2.py`` after ``ceil(N / batch_size) + 1`` (``if i > end_steps: break``), so their stage-2
            epoch is one pass's worth of batches, as ``N`` draws are here.
    """

    def __init__(
        self,
        labels: Tensor,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        *,
        num_samples_cls: int = 1,
        num_samples: int | None = None,
    ) -> None:
        check_int("num_samples_cls", num_samples_cls, minimum=1)
        super().__init__(labels, num_replicas=num_replicas, rank=rank, seed=seed, num_samples=num_samples)
        if self.labels.min() < 0:
            raise ValueError(f"labels must be >= 0, got {int(self.labels.min())}")
        self.num_samples_cls = num_samples_cls
        self.class_counts = torch.bincount(self.labels)
        self.classes = torch.nonzero(self.class_counts).flatten()
        order = torch.argsort(self.labels, stable=True)
        self._class_images = dict(
            zip(self.classes.tolist(), torch.split(order, self.class_counts[self.classes].tolist()), strict=True)
        )

    def class_probabilities(self, epoch: int | None = None) -> Tensor:
        """``1 / C`` for every present class, 0 for absent ones (float64 ``[C]``)."""
        return class_power_probabilities(self.class_counts, 0.0)

    def draw(self, generator: torch.Generator) -> Tensor:
        s = self.num_samples_cls
        picks = math.ceil(self.total_size / s)
        num_classes = self.classes.numel()
        cycles = math.ceil(picks / num_classes)
        class_order = torch.cat([self.classes[torch.randperm(num_classes, generator=generator)] for _ in range(cycles)])
        class_order = class_order[:picks]
        # the pick slots grouped by class, each group in pick order (O(picks log picks), not O(picks * C))
        slots_by_class = torch.argsort(class_order, stable=True)
        picks_per_class = torch.bincount(class_order, minlength=self.class_counts.numel())
        out = torch.empty(picks, s, dtype=torch.long)
        start = 0
        for c, images in self._class_images.items():
            m = int(picks_per_class[c])
            slots, start = slots_by_class[start : start + m], start + m
            if m == 0:
                continue
            needed = m * s
            n = images.numel()
            walk = permutation_draw(n, needed, generator)
            out[slots] = images[walk].view(-1, s)
        return out.flatten()[: self.total_size]
