"""Multi-expert head with RIDE's expert router: per image, evaluate only as many experts as it needs.

Wang et al., "Long-tailed Recognition by Routing Diverse Distribution-Aware Experts", ICLR 2021, Sec. 3.3 (the
"expert assignment module"). :class:`RoutedMultiExpertHead` is a :class:`~lt_lightning.heads.multi_expert.
MultiExpertHead` plus an :class:`~lt_lightning.heads.expert_router.ExpertRouter`:

* while routing is off (stage 1, RIDE's expert training) it is the plain multi-expert head (logits = the experts'
  mean) and the router is not evaluated;
* :class:`~lt_lightning.callbacks.expert_router_training.ExpertRouterTraining` trains the router on the frozen experts
  (stage 2) and turns routing on; from then on, in ``eval()`` mode, the logits are the *routed* prediction -- image
  ``b`` averages its first ``k_b`` experts -- and ``extras["num_experts"]`` holds ``k_b``. The flag is part of the
  head's ``state_dict`` (the ``routing_enabled`` buffer), so a checkpoint written after stage 2 predicts with routing.

The forward pass of the module computes every expert (the backbone returns ``[E, B, D]``), and the routed prediction
is derived from them -- exactly what dynamic evaluation gives, because each decision only reads experts already
evaluated. :func:`routed_predict` is the dynamic evaluation itself (experts run only on the images routed to them);
it is what :class:`~lt_lightning.callbacks.compute_per_image.ComputePerImage` counts to report compute per image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lt_lightning._checks import check_int
from lt_lightning.heads.expert_router import (
    ExpertRouter,
    check_threshold,
    routed_expert_counts,
    routed_logits,
)
from lt_lightning.heads.linear import LinearHead
from lt_lightning.heads.multi_expert import MultiExpertHead
from lt_lightning.output import ModelOutput

__all__ = ["RoutedMultiExpertHead", "check_routable", "routed_predict"]


class RoutedMultiExpertHead(MultiExpertHead):
    """``E`` expert heads and RIDE's router; routed prediction once :attr:`routing` is on (in ``eval()`` mode).

    Args:
        in_features: an expert's feature dimension ``D``.
        num_classes: ``C``.
        num_experts: ``E >= 2`` (must equal the backbone's).
        expert_head: head factory of one expert (RIDE: ``CosineHead`` with ``scale: 30``).
        top_k: running-mean logits fed to the router (reference: 5; 30 for CIFAR-100), ``<= C``.
        hidden_features: width of the router's feature layer (reference: 16).
        threshold: continue to the next expert while ``sigmoid(r) > threshold`` (reference: 0.5).

    Attributes:
        routing: whether the logits are routed in ``eval()`` mode (set by the router-training stage; saved).
        last_num_experts: ``[B]`` experts used per image in the last routed forward pass (``None`` before one).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_experts: int = 3,
        expert_head: Callable[[int, int], nn.Module] = LinearHead,
        top_k: int = 5,
        hidden_features: int = 16,
        threshold: float = 0.5,
    ) -> None:
        check_int("num_experts", num_experts, minimum=2, what="an integer >= 2 (routing needs two experts or more)")
        super().__init__(in_features, num_classes, num_experts, expert_head)
        self.router = ExpertRouter(in_features, num_classes, num_experts, top_k, hidden_features)
        self.threshold = check_threshold(threshold)
        self.register_buffer("routing_enabled", torch.tensor(False))
        self._routing = False  # host copy of the buffer: read every forward pass without a device sync
        self.register_load_state_dict_post_hook(RoutedMultiExpertHead._sync_routing)
        self.last_num_experts: Tensor | None = None

    # ------------------------------------------------------------------ saved flag
    @staticmethod
    def _sync_routing(module: RoutedMultiExpertHead, incompatible_keys: object) -> None:
        module._routing = bool(module.routing_enabled)

    @property
    def routing(self) -> bool:
        """Whether the logits are routed in ``eval()`` mode (the ``routing_enabled`` buffer, saved in checkpoints)."""
        return self._routing

    def set_routing(self, routing: bool) -> None:
        """Turn routed prediction (in ``eval()`` mode) on or off."""
        self.routing_enabled.fill_(bool(routing))
        self._routing = bool(routing)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.router.reset_parameters()

    # ------------------------------------------------------------------ forward
    def forward(self, features: Tensor) -> ModelOutput:
        output = super().forward(features)
        expert_logits = output.expert_logits
        if expert_logits is None:  # pragma: no cover - MultiExpertHead.forward always sets it
            raise RuntimeError("MultiExpertHead returned no expert_logits")
        if self.routing:  # stage 2 (router training) and routed prediction; stage 1 never evaluates the router
            router_logits = self.router(expert_logits, features)
            output.extras["router_logits"] = router_logits
            if not self.training:
                counts = routed_expert_counts(router_logits, self.threshold)
                output.logits = routed_logits(expert_logits, counts)
                output.extras["num_experts"] = counts
                self.last_num_experts = counts.detach()
        return output

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, threshold={self.threshold}, routing={self.routing}"


def check_routable(backbone: nn.Module, head: nn.Module) -> None:
    """Raise ``ValueError`` unless ``head`` is routed and ``backbone`` a multi-expert backbone with as many experts."""
    if not isinstance(head, RoutedMultiExpertHead):
        raise ValueError(f"dynamic routing needs a RoutedMultiExpertHead, got {type(head).__name__}")
    for name in ("shared_features", "expert_features"):
        if not callable(getattr(backbone, name, None)):
            raise ValueError(
                f"dynamic routing needs a multi-expert backbone with {name}() (e.g. MultiExpertResNetCifar), got "
                f"{type(backbone).__name__}"
            )
    if getattr(backbone, "num_experts", None) != head.num_experts:
        raise ValueError(
            f"backbone has {getattr(backbone, 'num_experts', None)} experts but the head {head.num_experts}"
        )


@torch.no_grad()
def routed_predict(backbone: nn.Module, head: RoutedMultiExpertHead, x: Tensor) -> tuple[Tensor, Tensor]:
    """Dynamic evaluation: expert ``i + 1`` runs only on the images whose decision ``i`` says so.

    The shared trunk runs on every image, expert 0 on every image, expert ``i`` on the images still active after
    decision ``i - 1``. Equal to the head's routed prediction from all experts (``eval()`` mode, BatchNorm with
    running statistics), at the compute of the experts actually used.

    Args:
        backbone: a multi-expert backbone (``shared_features``, ``expert_features``; e.g. ``MultiExpertResNetCifar``).
        head: the routed head.
        x: a batch of images.

    Returns:
        ``(logits [B, C], num_experts [B])``.
    """
    check_routable(backbone, head)
    shared = backbone.shared_features(x)
    features = backbone.expert_features(shared, 0)
    total = head.heads[0](features)  # running sum of the logits of the experts each image used
    counts = torch.ones(x.shape[0], dtype=torch.long, device=total.device)
    active = torch.arange(x.shape[0], device=total.device)
    for i in range(1, head.num_experts):
        decision = head.router.decision_logit(i - 1, total[active] / i, features)
        keep = torch.sigmoid(decision.float()) > head.threshold
        active = active[keep]
        if active.numel() == 0:
            break
        features = backbone.expert_features(shared[active], i)
        total[active] += head.heads[i](features)
        counts[active] += 1
    return total / counts.unsqueeze(1).to(total.dtype), counts
