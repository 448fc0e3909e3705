"""ImbSAM (Zhou et al., ICCV 2023): two hand-run steps on a tiny linear model against a plain re-implementation of the
reference's head / tail split (cool-xuan/Imbalanced_SAM utils/trainval.py ``forbackward``), the degenerate settings
(no tail class = SGD, every class tail = SAM), the overlay through the real CLI, resume, bad arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lt_lightning.cli import run
from lt_lightning.experiments import experiment_args
from lt_lightning.output import ModelOutput
from lt_lightning.sam import SAM, ImbSAM, in_perturbed_pass, tail_loss_threshold, tail_rows
from tests.helpers import assert_equal_states

OVERLAY = str(Path(__file__).resolve().parents[1] / "configs" / "optimizer" / "imbsam.yaml")
COUNTS = torch.tensor([50, 30, 10, 5])  # with a threshold of 20: classes 2 and 3 are the tail
X = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0], [2.0, 1.0], [-0.5, -1.5], [1.5, -0.5]])
Y = torch.tensor([0, 1, 2, 3, 0, 2])


def _model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(2, 4)


def _closure(model: nn.Module, optimizer: torch.optim.Optimizer):
    """What LongTailModule.training_step does: the mean CE, or in ImbSAM's tail passes the tail rows' CE x n_t / B."""

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        output = ModelOutput(logits=model(X), features=X)
        threshold = tail_loss_threshold()
        if threshold is None:
            loss = nn.functional.cross_entropy(output.logits, Y)
        else:
            rows, y, share = tail_rows(output, Y, COUNTS, threshold)
            loss = output.logits.sum() * 0.0 if rows is None else nn.functional.cross_entropy(rows.logits, y) * share
        loss.backward()
        return loss

    return closure


def _reference_step(model: nn.Linear, lr: float, rho: float, threshold: int) -> None:
    """The reference's ImbSAM step, plainly: per-sample losses, head / tail sums over B, three gradients, SGD."""
    params = list(model.parameters())
    tail = COUNTS[Y] < threshold
    losses = nn.functional.cross_entropy(model(X), Y, reduction="none")
    g_head = torch.autograd.grad(losses[~tail].sum() / len(Y), params, retain_graph=True)
    g_tail = torch.autograd.grad(losses[tail].sum() / len(Y), params)
    norm = torch.sqrt(sum((g**2).sum() for g in g_tail))
    eps = [rho * g / norm for g in g_tail]
    with torch.no_grad():
        for p, e in zip(params, eps, strict=True):
            p.add_(e)
    losses = nn.functional.cross_entropy(model(X), Y, reduction="none")
    g_tail_perturbed = torch.autograd.grad(losses[tail].sum() / len(Y), params)
    with torch.no_grad():
        for p, e, gh, gt in zip(params, eps, g_head, g_tail_perturbed, strict=True):
            p.sub_(e)
            p.sub_(lr * (gh + gt))


def test_two_steps_match_the_reference_split() -> None:
    ours, reference = _model(), _model()
    optimizer = ImbSAM(ours.parameters(), lr=0.5, rho=0.3, tail_threshold=20)
    for _ in range(2):
        optimizer.step(_closure(ours, optimizer))
        _reference_step(reference, lr=0.5, rho=0.3, threshold=20)
    for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not in_perturbed_pass() and tail_loss_threshold() is None


def test_tail_rows_by_hand() -> None:
    logits = torch.arange(24.0).view(6, 4)
    output = ModelOutput(logits=logits, features=X, expert_logits=torch.stack([logits, -logits]), extras={"n": X[:, 0]})
    rows, y, share = tail_rows(output, Y, COUNTS, 20)
    assert y.tolist() == [2, 3, 2] and share == 0.5
    assert rows.logits.equal(logits[[2, 3, 5]]) and rows.expert_logits[1].equal(-logits[[2, 3, 5]])
    assert rows.extras["n"].equal(X[[2, 3, 5], 0])
    soft = nn.functional.one_hot(Y, 4).float() * 0.8 + 0.05  # a mixed target counts as its most likely class
    assert tail_rows(output, soft, COUNTS, 20)[1].argmax(1).tolist() == [2, 3, 2]
    assert tail_rows(output, Y, COUNTS, 0) == (None, None, 0.0)


def test_no_tail_class_is_sgd_and_every_class_tail_is_sam() -> None:
    for threshold, plain in ((0, torch.optim.SGD), (1000, SAM)):
        ours, other = _model(), _model()
        kwargs = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}
        imb = ImbSAM(ours.parameters(), rho=0.2, tail_threshold=threshold, **kwargs)
        ref = plain(other.parameters(), **kwargs, **({"rho": 0.2} if plain is SAM else {}))
        for _ in range(3):
            imb.step(_closure(ours, imb))
            ref.step(_closure(other, ref))
        for a, b in zip(ours.parameters(), other.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_arguments_are_refused() -> None:
    w = torch.zeros(2, requires_grad=True)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="tail_threshold must be"):
            ImbSAM([w], tail_threshold=bad)
    with pytest.raises(ValueError, match="rho must be"):
        ImbSAM([w], rho=-0.1)
    with pytest.raises(ValueError, match="ImbSAM needs the closure"):
        ImbSAM([w]).step()


QUICK = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar"]
QUICK += ["false", "--trainer.logger", "false"]


def test_imbsam_overlay_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*experiment_args("digits_lt", "ldam_drw"), "-c", OVERLAY, *QUICK, "--trainer.max_epochs", "2"]
    full = run(["fit", *args, "--trainer.default_root_dir", "full"])
    optimizer = full.model.optimizers().optimizer
    assert isinstance(optimizer, ImbSAM) and optimizer.tail_threshold == 20
    assert (full.model.class_counts < 20).any()  # Digits-LT has tail classes at this threshold
    run(["fit", *args, "--trainer.max_steps", "2", "--trainer.default_root_dir", "part"])
    ckpt = next((tmp_path / "part").rglob("last.ckpt"))
    resumed = run(["fit", *args, "--trainer.default_root_dir", "part2", "--ckpt_path", str(ckpt)])
    assert_equal_states(full.model.state_dict(), resumed.model.state_dict())
