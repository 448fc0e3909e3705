"""Nearest-class-mean (NCM) classifier on the features of a trained backbone.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020, Sec. 4: compute the
mean feature ``μ_c`` of every class on the training set, then predict the nearest mean by cosine similarity or
Euclidean distance. With ``g(f)`` the feature transform (``center``: subtract the mean training feature ``m``;
``normalize``: L2-normalise):

* ``μ_c = (1 / n_c) Σ_{i: y_i = c} g(f_i)``, ``g(f) = (f - m) / ||f - m||`` (``center``, ``normalize``),
  ``f / ||f||`` (``normalize`` only) or ``f`` (neither);
* ``metric="cosine"``:            ``z_c = <g(f) / ||g(f)||, μ_c / ||μ_c||>``;
* ``metric="euclidean"``:         ``z_c = -||g(f) - μ_c||_2``;
* ``metric="squared_euclidean"``: ``z_c = -||g(f) - μ_c||_2²`` (the same argmax as ``"euclidean"``; other logits).

The authors' code (facebookresearch/classifier-balancing ``models/KNNClassifier.py`` and ``run_networks.py``
``get_knncentroids``; ``main.py --knn`` defaults ``--feat_type cl2n --dist_type l2``) uses ``feat_type="cl2n"``:
``m`` is the mean of the raw features of all training images (each image once), every feature is centred by ``m``
and L2-normalised, the means are the class averages of those (not re-normalised), and the logit is the negative
squared distance: ``NCMHead(metric="squared_euclidean", normalize=True, center=True)``. Their ``"l2n"`` is
``normalize=True, center=False`` (this module's default, with the cosine metric), their ``"un"``
``normalize=False``.

The means (and ``m``) are computed by summing over batches and processes (:func:`class_feature_sums`) and dividing
once (:meth:`NCMHead.set_means`), so DDP gives exactly the single-process means.

A class with no training sample has no mean: its logit is ``-inf``, so it is never predicted (and gets probability 0
under a softmax). Every class is in that state until :meth:`NCMHead.set_means` is called.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from lt_lightning.heads.base import ClassifierHead

Metric = Literal["cosine", "euclidean", "squared_euclidean"]
METRICS: tuple[str, ...] = ("cosine", "euclidean", "squared_euclidean")


def class_feature_sums(
    features: Tensor, labels: Tensor, num_classes: int, normalize: bool = True, center: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-class sums of (centred, L2-normalised) features and per-class counts of one batch (sum these over batches).

    Args:
        features: ``[N, D]`` features.
        labels: ``[N]`` class indices in ``[0, num_classes)``.
        num_classes: ``C``.
        normalize: L2-normalise each feature before summing.
        center: ``[D]`` vector subtracted from each feature first (the mean training feature ``m``); ``None``: none.

    Returns:
        ``sums`` ``[C, D]`` (float32, or the features' dtype if wider) and ``counts`` ``[C]`` (long).
    """
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must be [N] with N = {features.shape[0]}, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.device.type == "cpu" and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    f = features.to(torch.promote_types(features.dtype, torch.float32))
    if center is not None:
        if center.shape != (f.shape[1],):
            raise ValueError(f"center must have shape ({f.shape[1]},), got {tuple(center.shape)}")
        f = f - center.to(f)
    if normalize:
        f = F.normalize(f, dim=1)
    labels = labels.long()
    sums = torch.zeros(num_classes, f.shape[1], dtype=f.dtype, device=f.device).index_add_(0, labels, f)
    counts = torch.zeros(num_classes, dtype=torch.long, device=f.device).index_add_(0, labels, torch.ones_like(labels))
    return sums, counts


def means_from_sums(sums: Tensor, counts: Tensor) -> Tensor:
    """``μ_c = sums_c / counts_c``; a row with ``counts_c = 0`` is all zeros."""
    if sums.ndim != 2 or counts.ndim != 1 or counts.shape[0] != sums.shape[0]:
        raise ValueError(f"sums must be [C, D] and counts [C], got {tuple(sums.shape)} and {tuple(counts.shape)}")
    return sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)


def class_means(
    features: Tensor, labels: Tensor, num_classes: int, normalize: bool = True, center: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Class means ``[C, D]`` (zero rows for empty classes) and counts ``[C]`` of a whole feature set."""
    sums, counts = class_feature_sums(features, labels, num_classes, normalize, center)
    return means_from_sums(sums, counts), counts


class NCMHead(ClassifierHead):
    """Nearest-class-mean classifier: logits are similarities to the class means (see the module docstring).

    Built as ``NCMHead(in_features, num_classes)`` like every head; it has no parameters and predicts nothing
    meaningful until :meth:`set_means` (normally called by the
    :class:`~lt_lightning.callbacks.nearest_class_mean.NearestClassMean` callback at test time).

    Args:
        in_features: feature dimension ``D``.
        num_classes: number of classes ``C``.
        metric: ``"cosine"``, ``"euclidean"`` or ``"squared_euclidean"`` (the authors' ``dist_type="l2"``).
        normalize: L2-normalise the features (before averaging for the means, and at prediction). The cosine
            metric compares directions whatever this flag; it changes only how the means are averaged.
        center: subtract the mean training feature ``m`` (given to :meth:`set_means`) before normalising, for the
            means and at prediction (the authors' ``feat_type="cl2n"`` with ``normalize``).

    Buffers:
        class_means: ``[C, D]`` float32 means.
        class_support: ``[C]`` long, the training samples behind each mean (0: the class is never predicted).
        feature_mean: ``[D]`` float32 ``m`` (zeros, and not in the state dict, unless ``center``).
    """

    class_means: Tensor
    class_support: Tensor
    feature_mean: Tensor

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        metric: Metric = "cosine",
        normalize: bool = True,
        center: bool = False,
    ) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if not isinstance(center, bool):
            raise ValueError(f"center must be a bool, got {center!r}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.metric = metric
        self.normalize = bool(normalize)
        self.center = center
        self.register_buffer("class_means", torch.zeros(num_classes, in_features))
        self.register_buffer("class_support", torch.zeros(num_classes, dtype=torch.long))
        # in the state dict only when used: a default head's state dict is what it was before ``center`` existed
        self.register_buffer("feature_mean", torch.zeros(in_features), persistent=center)

    def set_means(self, sums: Tensor, counts: Tensor, feature_mean: Tensor | None = None) -> None:
        """Set ``μ_c = sums_c / counts_c`` from per-class feature sums ``[C, D]`` and counts ``[C]``.

        The sums must have been taken over features prepared like this head's (centred by ``feature_mean`` iff
        ``center``, normalised iff ``normalize``): :func:`class_feature_sums` with the same ``normalize`` and
        ``center=feature_mean``. ``feature_mean`` (``[D]``) is required with ``center`` and refused without.
        """
        if self.center != (feature_mean is not None):
            raise ValueError(
                "feature_mean is the mean training feature of a centred head (center=True): "
                f"center={self.center} but feature_mean is {'missing' if feature_mean is None else 'given'}"
            )
        if feature_mean is not None and tuple(feature_mean.shape) != (self.in_features,):
            raise ValueError(f"feature_mean must have shape ({self.in_features},), got {tuple(feature_mean.shape)}")
        if tuple(sums.shape) != tuple(self.class_means.shape):
            raise ValueError(f"sums must have shape {tuple(self.class_means.shape)}, got {tuple(sums.shape)}")
        if tuple(counts.shape) != (self.num_classes,):
            raise ValueError(f"counts must have shape ({self.num_classes},), got {tuple(counts.shape)}")
        if counts.dtype.is_floating_point and not torch.equal(counts, counts.round()):
            raise ValueError("counts must be whole numbers")
        if bool((counts < 0).any()):
            raise ValueError(f"counts must be >= 0, got {counts.tolist()}")
        if int(counts.sum()) == 0:
            raise ValueError("counts are all zero: no class has a training sample to average")
        means = means_from_sums(sums.double(), counts.long().to(sums.device))
        self.class_means.copy_(means.to(self.class_means))
        self.class_support.copy_(counts.long().to(self.class_support.device))
        if feature_mean is not None:
            self.feature_mean.copy_(feature_mean.to(self.feature_mean))

    def forward(self, features: Tensor) -> Tensor:
        """``[B, C]`` float32 similarities, computed in float32 even under autocast (mixed precision would round the
        small differences between cosines to nearby means: a nearest-mean decision is not a learned layer)."""
        f = features.float()
        if self.center:
            f = f - self.feature_mean.float()
        if self.normalize:
            f = F.normalize(f, dim=1)
        means = self.class_means.float()
        with torch.autocast(device_type=f.device.type, enabled=False):
            if self.metric == "cosine":
                logits = F.linear(F.normalize(f, dim=1), F.normalize(means, dim=1))
            else:
                # the direct kernel: exact distances (no ||a||² + ||b||² - 2ab cancellation), no [B, C, D] tensor
                logits = -torch.cdist(f, means, compute_mode="donot_use_mm_for_euclid_dist")
                if self.metric == "squared_euclidean":
                    logits = -logits.square()
        return logits.masked_fill(self.class_support.to(logits.device).unsqueeze(0) == 0, float("-inf"))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, metric={self.metric!r}, "
            f"normalize={self.normalize}, center={self.center}"
        )
