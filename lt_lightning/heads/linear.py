"""Linear classifier head: ``z = W f + b``."""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from lt_lightning._checks import check_float
from lt_lightning.heads.base import ClassifierHead

LinearInit = Literal["default", "kaiming_normal"]
BiasInit = float | Literal["uniform_prior"] | None


class LinearHead(ClassifierHead):
    """The plain fully-connected classifier.

    Heads are built by the module as ``head(in_features, num_classes)``; from YAML they are given by
    ``class_path`` with their other arguments in ``init_args``.

    Args:
        in_features: feature dimension ``D`` (the backbone's ``num_features``).
        num_classes: number of classes ``C``.
        bias: learn a bias term.
        init: initialisation of ``W`` at construction. ``"default"``: ``nn.Linear``'s
            (``U(-1/sqrt(D), 1/sqrt(D))``). ``"kaiming_normal"``: ``W ~ N(0, 2 / D)`` (``nn.init.kaiming_normal_``,
            fan-in, ReLU gain), as LDAM-DRW's CIFAR ResNet (kaidic/LDAM-DRW ``models/resnet_cifar.py``,
            ``_weights_init`` applied to every ``nn.Linear`` and ``nn.Conv2d``), the classifier of every CE-family
            CIFAR baseline. Either way the bias keeps ``nn.Linear``'s ``U(-1/sqrt(D), 1/sqrt(D))``, as there, unless
            ``bias_init`` is given.
        bias_init: ``None``: the bias as ``init`` leaves it. A number: every ``b_c`` set to it. ``"uniform_prior"``:
            ``b_c = -log(C - 1)``, so that every sigmoid ``σ(z_c)`` starts at the prior ``π = 1/C``
            (``b = -log((1 - π) / π)``, the focal-loss initialisation of Lin et al., ICCV 2017); Cui et al. (CVPR 2019,
            richardaecn/class-balanced-loss ``src/model_base.py`` ``_fully_connected``) use it for their sigmoid and
            (sigmoid) focal losses, not for softmax. Needs ``bias=True``, and ``C >= 2`` for ``"uniform_prior"``.
        bias_weight_decay: ``False`` leaves the bias out of weight decay: :meth:`no_weight_decay_names` names it, and
            :class:`~lt_lightning.module.LongTailModule` gives it ``weight_decay = 0`` (Cui et al.'s
            ``src/cifar_main.py``: "no regularization (weight decay) for last layer's bias" with the sigmoid and focal
            losses).

    Attributes:
        init: the construction-time initialisation of ``W``.
        bias_init: the construction-time bias (``None``, a number or ``"uniform_prior"``).
        bias_weight_decay: whether the bias is weight-decayed.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        bias: bool = True,
        init: LinearInit = "default",
        bias_init: BiasInit = None,
        bias_weight_decay: bool = True,
    ) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        if init not in ("default", "kaiming_normal"):
            raise ValueError(f"init must be 'default' or 'kaiming_normal', got {init!r}")
        bias_value = self._bias_value(bias_init, num_classes, bias)
        self.in_features = in_features
        self.num_classes = num_classes
        self.init = init
        self.bias_init = bias_init
        self.bias_weight_decay = bool(bias_weight_decay)
        self.fc = nn.Linear(in_features, num_classes, bias=bias)
        if init == "kaiming_normal":
            nn.init.kaiming_normal_(self.fc.weight)
        if bias_value is not None:
            nn.init.constant_(self.fc.bias, bias_value)

    @staticmethod
    def _bias_value(bias_init: BiasInit, num_classes: int, bias: bool) -> float | None:
        """The constant of ``bias_init`` (``None``: leave the bias as it is); ``ValueError`` for a bad one."""
        if bias_init is None:
            return None
        if not bias:
            raise ValueError(f"bias_init={bias_init!r} needs bias=True")
        if bias_init == "uniform_prior":
            if num_classes < 2:
                raise ValueError(f"bias_init='uniform_prior' (-log(C - 1)) needs num_classes >= 2, got {num_classes}")
            return -math.log(num_classes - 1)
        return float(check_float("bias_init", bias_init, what="None, a finite number or 'uniform_prior'"))

    def no_weight_decay_names(self) -> set[str]:
        """Names (relative to this head) of the parameters to keep out of weight decay: ``{"fc.bias"}`` or none."""
        if self.bias_weight_decay or self.fc.bias is None:
            return set()
        return {"fc.bias"}

    @property
    def weight(self) -> Tensor:
        return self.fc.weight

    def linear_parameters(self) -> tuple[Tensor, Tensor | None]:
        """``(fc.weight, fc.bias)``: the logits are ``F.linear(features, W, b)``."""
        return self.fc.weight, self.fc.bias

    def reset_parameters(self) -> None:
        """Restore ``nn.Linear``'s initialisation, whatever ``init`` and ``bias_init`` are (cRT's re-initialisation).

        The reference builds its stage-2 classifier afresh (facebookresearch/classifier-balancing
        ``models/DotProductClassifier.py``: a new ``nn.Linear``, "Random initialized classifier weights"), so the
        re-drawn classifier has ``nn.Linear``'s initialisation, not the stage-1 ``init``.
        """
        self.fc.reset_parameters()

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features)
