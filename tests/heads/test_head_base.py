"""``ClassifierHead``: every head of ``lt_lightning.heads`` follows the contract; the helpers answer for plain heads."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lt_lightning.heads as heads
from lt_lightning.heads import (
    BilateralHead,
    CausalHead,
    ClassifierHead,
    CosineHead,
    LinearHead,
    LWSHead,
    MultiExpertHead,
    NCMHead,
    ProjectionHead,
    RoutedMultiExpertHead,
    TauNormHead,
)
from lt_lightning.heads.base import (
    head_linear_parameters,
    head_num_experts,
    head_projection_dim,
    head_resets_parameters,
)
from lt_lightning.output import ModelOutput

D, C = 6, 4


def _bias_free_linear(d: int, c: int) -> LinearHead:
    return LinearHead(d, c, bias=False)


#: name -> (tiny instance, num_experts, linear?, projection_dim, implements reset_parameters)
CASES: dict[str, tuple[nn.Module, int, bool, int | None, bool]] = {
    "linear": (LinearHead(D, C), 1, True, None, True),
    "linear_no_bias": (LinearHead(D, C, bias=False), 1, True, None, True),
    "bilateral": (BilateralHead(D, C), 2, True, None, True),
    "causal": (CausalHead(D, C), 1, False, None, True),
    "cosine": (CosineHead(D, C, scale=16.0), 1, False, None, True),
    "lws": (LWSHead(D, C), 1, False, None, False),
    "multi_expert": (MultiExpertHead(D, C, num_experts=3), 3, False, None, True),
    "routed": (RoutedMultiExpertHead(D, C, num_experts=2, top_k=2), 2, False, None, True),
    "ncm": (NCMHead(D, C), 1, False, None, False),
    "projection": (ProjectionHead(D, C, projection_dim=5), 1, True, 5, True),
    "projection_bias_free": (ProjectionHead(D, C, projection_dim=3, classifier=_bias_free_linear), 1, True, 3, True),
    "projection_cosine": (ProjectionHead(D, C, projection_dim=5, classifier=CosineHead), 1, False, 5, True),
    "tau_norm_0": (TauNormHead(D, C, tau=0.0), 1, True, None, True),
    "tau_norm_1": (TauNormHead(D, C, tau=1.0), 1, False, None, True),
}


def test_every_head_class_is_a_classifier_head() -> None:
    classes = [getattr(heads, name) for name in heads.__all__]
    head_classes = [c for c in classes if inspect.isclass(c) and issubclass(c, nn.Module)]
    assert len(head_classes) == len(heads.__all__)
    for cls in head_classes:
        assert issubclass(cls, ClassifierHead), cls
    covered = {type(head) for head, *_ in CASES.values()}
    assert covered == set(head_classes) - {ClassifierHead}


def _logits(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    out = head(features)
    return out.logits if isinstance(out, ModelOutput) else out


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_contract_on_tiny_heads(name: str) -> None:
    head, num_experts, linear, projection_dim, resets = CASES[name]
    assert head.num_experts == num_experts == head_num_experts(head)
    assert head.projection_dim == projection_dim == head_projection_dim(head)
    assert head_resets_parameters(head) is resets
    params = head.linear_parameters()
    assert head_linear_parameters(head) == params
    assert (params is not None) is linear
    if params is not None:
        weight, bias = params
        assert isinstance(weight, nn.Parameter) and tuple(weight.shape) == (C, D)  # the parameter, not a copy
        assert bias is None or (isinstance(bias, nn.Parameter) and tuple(bias.shape) == (C,))
        features = torch.randn(5, D)
        for mode in (True, False):
            head.train(mode)
            with torch.no_grad():
                torch.testing.assert_close(_logits(head, features), F.linear(features, weight, bias))
    if not resets:
        with pytest.raises(NotImplementedError, match=f"{type(head).__name__} does not implement reset_parameters"):
            head.reset_parameters()


def test_tau_norm_linearity_follows_tau() -> None:
    head = TauNormHead(D, C, tau=0.0)
    assert head.linear_parameters() == (head.fc.weight, head.fc.bias)
    head.tau = 0.5
    assert head.linear_parameters() is None


def test_helpers_answer_for_plain_modules() -> None:
    linear = nn.Linear(D, C)
    assert head_num_experts(linear) == 1
    assert head_projection_dim(linear) is None
    assert head_resets_parameters(linear)
    assert head_linear_parameters(linear) == (linear.weight, linear.bias)
    bias_free = nn.Linear(D, C, bias=False)
    assert head_linear_parameters(bias_free) == (bias_free.weight, None)

    class Wrapped(nn.Module):
        num_experts = 3
        projection_dim = 7

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(D, C)

        @property
        def weight(self) -> torch.Tensor:
            return self.fc.weight

    wrapped = Wrapped()
    assert head_num_experts(wrapped) == 3
    assert head_projection_dim(wrapped) == 7
    assert not head_resets_parameters(wrapped)
    assert head_linear_parameters(wrapped) == (wrapped.fc.weight, wrapped.fc.bias)
    assert head_linear_parameters(nn.ReLU()) is None
    assert head_num_experts(nn.ReLU()) == 1
