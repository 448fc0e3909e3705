"""Multi-expert CIFAR ResNet: shared early stages, one copy of the later stages per expert (RIDE, SADE).

Wang et al., "Long-tailed Recognition by Routing Diverse Distribution-Aware Experts", ICLR 2021 (RIDE) and Zhang et
al., "Self-Supervised Aggregation of Diverse Experts for Test-Agnostic Long-Tailed Recognition", NeurIPS 2022 (SADE,
built on RIDE's network): the stem and the first ``shared_stages`` stages are shared; every expert has its own copy
of the remaining stages -- optionally narrower (RIDE's ``reduce_dimension``) so that the ensemble costs about as
much as one network -- and its own global average pooling. The survey's "ensemble learning" family.

``forward(x)`` returns the per-expert features ``[E, B, D]``; a multi-expert head
(:class:`~lt_lightning.heads.multi_expert.MultiExpertHead`) turns them into per-expert logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lt_lightning._checks import check_int
from lt_lightning.backbones.resnet_cifar import ResNetCifar


class MultiExpertResNetCifar(ResNetCifar):
    """A CIFAR ResNet whose later stages are replicated per expert.

    Args:
        depth: total depth ``6n + 2`` (32 for ResNet-32).
        num_experts: ``E >= 1`` experts.
        shared_stages: how many of the three stages are shared (0, 1 or 2; RIDE's CIFAR network shares 1).
        widths: channels of the three stages of the shared network.
        expert_widths: channels of the expert stages (``3 - shared_stages`` values, non-decreasing and at least the
            last shared width); default the remaining ``widths`` (RIDE with ``reduce_dimension`` uses (24, 48)).
        in_channels: channels of the input images.

    Attributes:
        num_features: ``D``, the width of an expert's last stage.
        num_experts: ``E``.
    """

    def __init__(
        self,
        depth: int = 32,
        num_experts: int = 3,
        shared_stages: int = 1,
        widths: tuple[int, int, int] = (16, 32, 64),
        expert_widths: tuple[int, ...] | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__(depth=depth, widths=widths, in_channels=in_channels)
        check_int("num_experts", num_experts, minimum=1)
        if shared_stages not in (0, 1, 2):
            raise ValueError(f"shared_stages must be 0, 1 or 2, got {shared_stages!r}")
        widths = self.widths
        expert_widths = tuple(widths[shared_stages:]) if expert_widths is None else tuple(expert_widths)
        if len(expert_widths) != 3 - shared_stages or any(not isinstance(w, int) or w <= 0 for w in expert_widths):
            raise ValueError(
                f"expert_widths must be {3 - shared_stages} positive integers (one per expert stage), got "
                f"{expert_widths!r}"
            )
        chain = (widths[shared_stages - 1] if shared_stages else widths[0], *expert_widths)
        if any(a > b for a, b in zip(chain, chain[1:], strict=False)):
            raise ValueError(f"expert_widths must be non-decreasing from the last shared width {chain[0]}: {chain}")
        self.num_experts = num_experts
        self.shared_stages = shared_stages
        self.expert_widths = expert_widths
        blocks = (depth - 2) // 6
        shared = [self.layer1, self.layer2, self.layer3][:shared_stages]
        del self.layer1, self.layer2, self.layer3
        self.shared = nn.Sequential(*shared)
        strides = (1, 2, 2)[shared_stages:]
        self.experts = nn.ModuleList()
        for _ in range(num_experts):
            stages, in_planes = [], chain[0]
            for planes, stride in zip(expert_widths, strides, strict=True):
                stages.append(self._make_stage(in_planes, planes, blocks, stride))
                in_planes = planes
            self.experts.append(nn.Sequential(*stages))
        self.num_features = expert_widths[-1]
        self.reset_parameters()

    def shared_features(self, x: Tensor) -> Tensor:
        """The shared trunk's feature map (stem and shared stages)."""
        return self.shared(F.relu(self.bn1(self.conv1(x))))

    def expert_features(self, shared: Tensor, expert: int) -> Tensor:
        """Pooled features ``[B, D]`` of expert ``expert`` on the shared feature map."""
        return self.experts[expert](shared).mean(dim=(2, 3))

    def forward_features(self, x: Tensor) -> Tensor:
        shared = self.shared_features(x)
        return torch.stack([self.expert_features(shared, i) for i in range(self.num_experts)])
