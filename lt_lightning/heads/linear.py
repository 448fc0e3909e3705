"""Linear classifier head: ``z = W f + b``."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

LinearInit = Literal["default", "kaiming_normal"]


class LinearHead(nn.Module):
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
            CIFAR baseline. Either way the bias keeps ``nn.Linear``'s ``U(-1/sqrt(D), 1/sqrt(D))``, as there.

    Attributes:
        init: the construction-time initialisation of ``W``.
    """

    def __init__(self, in_features: int, num_classes: int, bias: bool = True, init: LinearInit = "default") -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        if init not in ("default", "kaiming_normal"):
            raise ValueError(f"init must be 'default' or 'kaiming_normal', got {init!r}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.init = init
        self.fc = nn.Linear(in_features, num_classes, bias=bias)
        if init == "kaiming_normal":
            nn.init.kaiming_normal_(self.fc.weight)

    @property
    def weight(self) -> Tensor:
        return self.fc.weight

    def reset_parameters(self) -> None:
        """Re-initialise the weights with ``nn.Linear``'s defaults, whatever ``init`` is (cRT's re-initialisation).

        The reference builds its stage-2 classifier afresh (facebookresearch/classifier-balancing
        ``models/DotProductClassifier.py``: a new ``nn.Linear``, "Random initialized classifier weights"), so the
        re-drawn classifier has ``nn.Linear``'s initialisation, not the stage-1 ``init``.
        """
        self.fc.reset_parameters()

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features)
