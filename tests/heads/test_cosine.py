"""CosineHead against hand-computed cosines."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.heads.cosine import CosineHead


def test_cosine_head_by_hand() -> None:
    head = CosineHead(2, 2, scale=2.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [1.0, 1.0]]))
    out = head(torch.tensor([[0.0, 5.0], [2.0, 0.0]]))
    s = 2**-0.5
    expected = 2.0 * torch.tensor([[0.0, s], [1.0, s]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_unit_scale_outputs_are_cosines_and_init_is_unit_norm() -> None:
    torch.manual_seed(0)
    head = CosineHead(16, 5)
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(5), atol=1e-4)
    out = head(torch.randn(8, 16))
    assert out.shape == (8, 5) and out.abs().max() <= 1 + 1e-6


@pytest.mark.parametrize("kwargs", [{"scale": 0.0}, {"scale": -1.0}, {"in_features": 0}])
def test_bad_arguments(kwargs) -> None:
    args = {"in_features": 4, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError):
        CosineHead(**args)
