"""Seesaw loss against hand-computed numbers; online counts; a 2-process gloo check of the synced counts."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.losses.seesaw import SeesawLoss, seesaw_log_factors, seesaw_loss
from lt_lightning.module import LongTailModule
from lt_lightning.output import ModelOutput

REPO = Path(__file__).resolve().parents[2]


def out(logits: torch.Tensor) -> ModelOutput:
    return ModelOutput(logits=logits, features=torch.zeros(logits.shape[0], 1))


def test_p_q_zero_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    counts = torch.tensor([500.0, 100.0, 20.0, 5.0, 1.0])
    assert seesaw_loss(logits, target, counts, p=0.0, q=0.0).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6
    )


def test_mitigation_hand_computed() -> None:
    counts = torch.tensor([100.0, 25.0])
    logits = torch.zeros(1, 2)
    # Head target 0: M_01 = (25/100)^0.5 = 0.5 -> L = -log(1 / (1 + 0.5)).
    assert seesaw_loss(logits, torch.tensor([0]), counts, p=0.5, q=0.0).item() == pytest.approx(math.log(1.5), rel=1e-6)
    # Tail target 1: N_0 > N_1, so M_10 = 1 -> cross-entropy log 2.
    assert seesaw_loss(logits, torch.tensor([1]), counts, p=0.5, q=0.0).item() == pytest.approx(math.log(2), rel=1e-6)


def test_compensation_hand_computed() -> None:
    counts = torch.tensor([1.0, 1.0])
    logits = torch.tensor([[0.0, math.log(3.0)]])  # sigma = (1/4, 3/4)
    # Target 0: sigma_1 / sigma_0 = 3 > 1 -> C_01 = 3^2 = 9 -> L = log(1 + 9 * 3) = log 28.
    assert seesaw_loss(logits, torch.tensor([0]), counts, p=0.0, q=2.0).item() == pytest.approx(
        math.log(28.0), rel=1e-6
    )
    # Target 1: sigma_0 / sigma_1 = 1/3 < 1 -> C_10 = 1 -> L = -log(3/4).
    assert seesaw_loss(logits, torch.tensor([1]), counts, p=0.0, q=2.0).item() == pytest.approx(
        -math.log(0.75), rel=1e-6
    )


def test_mitigation_and_compensation_together() -> None:
    counts = torch.tensor([100.0, 25.0])
    logits = torch.tensor([[0.0, math.log(3.0)]])
    # S_01 = 0.5 * 9 = 4.5 -> L = log(1 + 4.5 * 3) = log 14.5.
    got = seesaw_loss(logits, torch.tensor([0]), counts, p=0.5, q=2.0)
    assert got.item() == pytest.approx(math.log(14.5), rel=1e-6)
    log_s = seesaw_log_factors(logits, torch.tensor([0]), counts, p=0.5, q=2.0)
    assert log_s.tolist()[0] == pytest.approx([0.0, math.log(4.5)], rel=1e-6)


def reference_seesaw(logits: list[list[float]], target: list[int], counts: list[float], p: float, q: float) -> float:
    """The paper's formula written out with plain floats (counts below 1 raised to 1, sigma_i to at least 1e-2)."""
    total = 0.0
    for z, i in zip(logits, target, strict=True):
        e = [math.exp(v) for v in z]
        sigma = [v / sum(e) for v in e]
        denom = e[i]
        for j in range(len(z)):
            if j == i:
                continue
            n_i, n_j = max(counts[i], 1.0), max(counts[j], 1.0)
            m = (n_j / n_i) ** p if n_j < n_i else 1.0
            ratio = sigma[j] / max(sigma[i], 1e-2)
            c = ratio**q if ratio > 1.0 else 1.0
            denom += m * c * e[j]
        total += -math.log(e[i] / denom)
    return total / len(target)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_a_plain_transcription_of_the_formula(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(6, 4, generator=g)
    target = torch.randint(0, 4, (6,), generator=g)
    counts = [300.0, 40.0, 7.0, 0.0]
    expected = reference_seesaw(logits.tolist(), target.tolist(), counts, 0.8, 2.0)
    got = seesaw_loss(logits, target, torch.tensor(counts), p=0.8, q=2.0).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_eps_bounds_the_target_probability() -> None:
    logits = torch.tensor([[-10.0, 0.0]])
    sigma = torch.softmax(logits, dim=1)[0].tolist()
    ratio = sigma[1] / 0.01  # sigma_0 ~ 4.5e-5 is raised to eps = 0.01
    expected = -math.log(math.exp(-10.0) / (math.exp(-10.0) + ratio**2 * 1.0))
    got = seesaw_loss(logits, torch.tensor([0]), torch.ones(2), p=0.0, q=2.0, eps=0.01)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_compensation_factor_carries_no_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, generator=g).requires_grad_(True)
    target = torch.tensor([0, 1, 2, 0])
    counts = torch.tensor([50.0, 10.0, 2.0])
    seesaw_loss(logits, target, counts, p=0.8, q=2.0).backward()
    fixed = seesaw_log_factors(logits.detach(), target, counts, p=0.8, q=2.0)
    ref = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(ref + fixed, target).backward()
    torch.testing.assert_close(logits.grad, ref.grad)


def test_online_counts_accumulate_before_the_loss_and_only_in_training() -> None:
    loss = SeesawLoss(p=0.8, q=2.0, num_classes=3)
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 3, generator=g)
    target = torch.tensor([0, 0, 1])
    got = loss(out(logits), target)
    assert loss.cum_samples.tolist() == [2.0, 1.0, 0.0]
    assert got.item() == pytest.approx(seesaw_loss(logits, target, torch.tensor([2.0, 1.0, 0.0])).item(), rel=1e-6)
    loss(out(logits), torch.tensor([2, 2, 2]))
    assert loss.cum_samples.tolist() == [2.0, 1.0, 3.0]
    loss.eval()
    loss(out(logits), target)
    assert loss.cum_samples.tolist() == [2.0, 1.0, 3.0]


def test_set_class_counts_keeps_online_counts_and_checkpoint_round_trip() -> None:
    loss = SeesawLoss()
    loss.set_class_counts(torch.tensor([10.0, 5.0, 1.0]))
    assert loss.cum_samples.tolist() == [0.0, 0.0, 0.0]
    loss(out(torch.zeros(2, 3)), torch.tensor([1, 2]))
    loss.set_class_counts(torch.tensor([10.0, 5.0, 1.0]))  # e.g. on checkpoint load: must not erase
    assert loss.cum_samples.tolist() == [0.0, 1.0, 1.0]
    restored = SeesawLoss()
    restored.set_class_counts(torch.tensor([10.0, 5.0, 1.0]))
    restored.load_state_dict(loss.state_dict())
    assert restored.cum_samples.tolist() == [0.0, 1.0, 1.0]


def test_training_set_counts_when_not_online() -> None:
    loss = SeesawLoss(p=0.5, q=0.0, online_counts=False)
    loss.set_class_counts(torch.tensor([100.0, 25.0]))
    got = loss(out(torch.zeros(1, 2)), torch.tensor([0]))
    assert got.item() == pytest.approx(math.log(1.5), rel=1e-6)
    assert loss.cum_samples.tolist() == [100.0, 25.0]


def test_validation() -> None:
    for kwargs, name in (({"p": -1.0}, "p"), ({"q": -0.5}, "q"), ({"eps": 0.0}, "eps"), ({"num_classes": 0}, "num")):
        with pytest.raises(ValueError, match=name):
            SeesawLoss(**kwargs)
    with pytest.raises(ValueError, match="soft targets"):
        SeesawLoss(num_classes=2)(out(torch.zeros(1, 2)), torch.tensor([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="set_class_counts"):
        SeesawLoss()(out(torch.zeros(1, 2)), torch.tensor([0]))
    with pytest.raises(ValueError, match="class_counts"):
        seesaw_loss(torch.zeros(1, 3), torch.tensor([0]), torch.ones(2))


class _TinyBackbone(Backbone):
    def __init__(self) -> None:
        super().__init__()
        self.num_features = 8
        self.fc = nn.Linear(3 * 8 * 8, 8)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x.flatten(1)))


def test_one_instance_balanced_epoch_counts_every_training_image_once(tmp_path: Path) -> None:
    dm = SyntheticLTDataModule(num_classes=5, n_max=40, imbalance_ratio=10, batch_size=16)
    module = LongTailModule(
        _TinyBackbone(),
        num_classes=5,
        class_counts=dm.class_counts,
        criterion=SeesawLoss(),
        optimizer=partial(torch.optim.SGD, lr=0.05),
    )
    trainer = L.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, dm)
    assert module.criterion.cum_samples.tolist() == [float(c) for c in dm.class_counts]


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from lt_lightning.losses.seesaw import SeesawLoss
    from lt_lightning.output import ModelOutput

    rank, world, port, out_dir = int(sys.argv[1]), 2, sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    loss = SeesawLoss(num_classes=3)
    target = torch.tensor([0, 0]) if rank == 0 else torch.tensor([1, 2])
    loss(ModelOutput(logits=torch.zeros(2, 3), features=torch.zeros(2, 1)), target)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(loss.cum_samples.tolist(), f)
    dist.destroy_process_group()
    """
)


@pytest.mark.ddp
def test_online_counts_are_summed_across_processes(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(r), port, str(tmp_path)], env=env, stderr=subprocess.PIPE)
        for r in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-3000:]
    for r in range(2):
        assert json.loads((tmp_path / f"rank{r}.json").read_text()) == [2.0, 1.0, 1.0]
