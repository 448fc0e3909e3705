"""GLMC's head: a conventional and a re-balanced linear classifier, a projection and a prediction head.

Du et al., "Global and Local Mixture Consistency Cumulative Learning for Long-tailed Visual Recognitions", CVPR 2023
(ynu-yangpeng/GLMC, ``GLMC-2023/model/ResNet_cifar.py`` ``ResNet_modify``): on the features ``f``

* ``h = fc(f)``, the conventional classifier, trained on the plain mixed labels (weight ``α``);
* ``g = fc_cb(f)``, the re-balanced classifier, trained on the class-weighted mixed labels (weight ``1 - α``) and
  used for prediction (the reference evaluates ``fc_cb``);
* ``z = projection_head(f)`` (``Linear(D, H)``) and ``u = contrast_head(z)`` (``Linear(H, H)``), ``H = 128`` in the
  CIFAR model, the SimSiam pair of the mixture-consistency term.

Every linear layer is drawn with ``kaiming_normal_`` (the reference's ``_weights_init``; biases keep PyTorch's
default). In training the head returns ``logits = g`` and ``h``, ``z``, ``u`` in ``extras`` (keys of
:mod:`lt_lightning.losses.glmc`); in evaluation ``logits = g`` and ``expert_logits = [h, g]``, so the module logs the
conventional (``expert0_*``) and the re-balanced (``expert1_*``) classifier's accuracy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lt_lightning._checks import check_int
from lt_lightning.heads.base import ClassifierHead
from lt_lightning.losses.glmc import CONVENTIONAL_KEY, PREDICTION_KEY, PROJECTION_KEY
from lt_lightning.output import ModelOutput

__all__ = ["GLMCHead"]


def _kaiming_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.kaiming_normal_(layer.weight)
    return layer


class GLMCHead(ClassifierHead):
    """``logits = fc_cb(f)``; in training also ``fc(f)``, ``z = P f`` and ``u = Q z`` for :class:`GLMCLoss`.

    YAML (``model.init_args.classifier``)::

        class_path: lt_lightning.heads.glmc.GLMCHead
        init_args: {projection_dim: 128}

    Args:
        in_features: feature dimension ``D`` (the backbone's ``num_features``).
        num_classes: ``C``.
        projection_dim: ``H``, the width of the projection and the prediction (128 in the reference's CIFAR model).

    Attributes:
        glmc_projection_dim: ``H`` (not :attr:`projection_dim`, which names an L2-normalised ``extras["projection"]``).
        num_experts: 2 (the conventional and the re-balanced classifier), read by the module's per-expert metrics.
    """

    num_experts = 2

    def __init__(self, in_features: int, num_classes: int, projection_dim: int = 128) -> None:
        super().__init__()
        check_int("in_features", in_features, minimum=1)
        check_int("num_classes", num_classes, minimum=1)
        check_int("projection_dim", projection_dim, minimum=1)
        self.in_features = in_features
        self.num_classes = num_classes
        self.glmc_projection_dim = projection_dim
        self.fc = _kaiming_linear(in_features, num_classes)
        self.fc_cb = _kaiming_linear(in_features, num_classes)
        self.projection = _kaiming_linear(in_features, projection_dim)
        self.prediction = _kaiming_linear(projection_dim, projection_dim)

    @property
    def weight(self) -> Tensor:
        """The re-balanced (predicting) classifier's weight ``[C, D]``."""
        return self.fc_cb.weight

    def linear_parameters(self) -> tuple[Tensor, Tensor | None]:
        """``(W, b)`` of the predicting classifier ``fc_cb``."""
        return self.fc_cb.weight, self.fc_cb.bias

    def reset_parameters(self) -> None:
        """Re-draw every layer (``kaiming_normal_`` weights, PyTorch's default biases)."""
        for layer in (self.fc, self.fc_cb, self.projection, self.prediction):
            layer.reset_parameters()
            nn.init.kaiming_normal_(layer.weight)

    def forward(self, features: Tensor) -> ModelOutput:
        logits = self.fc_cb(features)
        conventional = self.fc(features)
        if not self.training:
            return ModelOutput(logits=logits, features=features, expert_logits=torch.stack((conventional, logits)))
        projection = self.projection(features)
        output = ModelOutput(logits=logits, features=features)
        output.extras[CONVENTIONAL_KEY] = conventional
        output.extras[PROJECTION_KEY] = projection
        output.extras[PREDICTION_KEY] = self.prediction(projection)
        return output

    def extra_repr(self) -> str:
        dims = f"in_features={self.in_features}, num_classes={self.num_classes}"
        return f"{dims}, projection_dim={self.glmc_projection_dim}"
