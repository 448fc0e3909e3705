"""Projection head for representation learning: an MLP projection of the features beside the classifier.

Contrastive methods (SimCLR, Chen et al. ICML 2020; SupCon, Khosla et al. NeurIPS 2020; KCL, Kang et al. ICLR 2021;
PaCo, Cui et al. ICCV 2021) compare ``z = normalize(g(f))``, where ``g`` is a small MLP on the backbone features
``f``, and classify with a separate classifier on ``f``. This head returns both in one
:class:`~lt_lightning.output.ModelOutput`:

* ``logits``: ``classifier(f)``, or ``classifier(f.detach())`` with ``detach_classifier=True`` (an online linear
  probe: the classifier's loss trains the classifier only and the representation is learned by the contrastive
  term alone -- SupCon / KCL; PaCo trains both through the same loss and sets it to ``False``);
* ``extras["projection"]``: ``[B, projection_dim]`` L2-normalised projection ``z``.

``g`` is ``Linear(D, H) -> [BatchNorm1d(H)] -> ReLU -> Linear(H, projection_dim)`` (SupCon's "mlp" head; the
PaCo / MoCo v2 CIFAR head adds the BatchNorm).

With ``prototype_projection=True`` a second MLP ``g'`` of the same shape maps the classifier's class weights
``W [C, D]`` to class prototypes ``extras["prototypes"] = normalize(g'(W))`` ``[C, projection_dim]``, BCL's
class-complement (Zhu et al., CVPR 2022; FlamieZhu/Balanced-Contrastive-Learning ``models/resnext.py``:
``centers_logits = F.normalize(self.head_fc(self.fc.weight.T), dim=1)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning.heads.base import ClassifierHead, head_linear_parameters
from lt_lightning.heads.linear import LinearHead
from lt_lightning.output import ModelOutput, as_output

#: where the projection is stored in ``ModelOutput.extras``
PROJECTION_KEY = "projection"
#: where the class prototypes (``prototype_projection=True``) are stored in ``ModelOutput.extras``
PROTOTYPES_KEY = "prototypes"


def _mlp(in_features: int, hidden: int, out_features: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_features, hidden)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden, out_features)]
    return nn.Sequential(*layers)


class ProjectionHead(ClassifierHead):
    """MLP projection (L2-normalised, in ``extras["projection"]``) plus a classifier on the features.

    Built by the module as ``ProjectionHead(in_features, num_classes)``; from YAML give ``projection_dim`` etc. in
    ``init_args`` and the classifier as a nested ``class_path`` (any head factory ``(D, C) -> head``).

    Args:
        in_features: feature dimension ``D`` (the backbone's ``num_features``).
        num_classes: number of classes ``C``.
        projection_dim: output dimension of the projection (128 in SupCon, 64 in PaCo's CIFAR recipe).
        hidden_dim: hidden width ``H`` of the MLP; ``None``: ``D``.
        classifier: head factory called as ``classifier(D, C)``; default linear.
        detach_classifier: feed the classifier ``f.detach()`` (no gradient from the classifier into the backbone).
        batch_norm: BatchNorm after the hidden layer (MoCo v2 / PaCo CIFAR head).
        prototype_projection: also project the classifier's weights ``[C, D]`` (its ``weight``) with a second MLP of
            the same shape into ``extras["prototypes"]`` (BCL); the default ``False`` adds nothing.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        classifier: Callable[[int, int], nn.Module] = LinearHead,
        detach_classifier: bool = True,
        batch_norm: bool = False,
        prototype_projection: bool = False,
    ) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        if projection_dim <= 0:
            raise ValueError(f"projection_dim must be positive, got {projection_dim}")
        hidden = in_features if hidden_dim is None else hidden_dim
        if hidden <= 0:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.projection_dim = projection_dim
        self.detach_classifier = bool(detach_classifier)
        self.projection = _mlp(in_features, hidden, projection_dim, batch_norm)
        self.classifier = classifier(in_features, num_classes)
        self.prototype_projection = (
            _mlp(in_features, hidden, projection_dim, batch_norm) if prototype_projection else None
        )
        if self.prototype_projection is not None:
            weight = getattr(self.classifier, "weight", None)
            if not isinstance(weight, Tensor) or tuple(weight.shape) != (num_classes, in_features):
                raise ValueError(
                    f"prototype_projection needs a classifier with a weight [{num_classes}, {in_features}] (linear or "
                    f"cosine), got {type(self.classifier).__name__}"
                )

    @property
    def weight(self) -> Tensor:
        """The classifier's weight ``[C, D]`` (what weight-based callbacks such as τ-normalisation read)."""
        return self.classifier.weight

    def linear_parameters(self) -> tuple[Tensor, Tensor | None] | None:
        """The classifier's (``logits = classifier(f)``): its ``(W, b)`` when it is linear, else ``None``."""
        return head_linear_parameters(self.classifier)

    def reset_parameters(self) -> None:
        """Re-initialise the classifier only (cRT's re-initialisation; the projection is not used afterwards)."""
        self.classifier.reset_parameters()

    def project(self, features: Tensor) -> Tensor:
        """``normalize(g(f))``, ``[B, projection_dim]``."""
        return F.normalize(self.projection(features), dim=1)

    def forward(self, features: Tensor) -> ModelOutput:
        head_input = features.detach() if self.detach_classifier else features
        output = as_output(self.classifier(head_input), features)
        output.features = features
        output.extras[PROJECTION_KEY] = self.project(features)
        if self.prototype_projection is not None:
            output.extras[PROTOTYPES_KEY] = F.normalize(self.prototype_projection(self.classifier.weight), dim=1)
        return output

    def extra_repr(self) -> str:
        return f"projection_dim={self.projection_dim}, detach_classifier={self.detach_classifier}"
