"""SAM (Foret et al., ICLR 2021) as an SGD optimizer: hand-computed steps, the plain-SGD limit, and runs through the
real CLI (the ``configs/optimizer/sam.yaml`` overlay on a Digits-LT method; resume; what it refuses)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

from lt_lightning.cli import run
from lt_lightning.experiments import experiment_args
from lt_lightning.sam import SAM, frozen_batchnorm_statistics, in_perturbed_pass
from tests.helpers import assert_equal_states

OVERLAY = str(Path(__file__).resolve().parents[1] / "configs" / "optimizer" / "sam.yaml")


def _step(optimizer: torch.optim.Optimizer, w: torch.Tensor) -> None:
    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = 0.5 * (w**2).sum()  # L = ||w||^2 / 2, grad L = w
        loss.backward()
        return loss

    optimizer.step(closure)


def test_one_step_descends_with_the_gradient_at_the_perturbed_weights() -> None:
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    _step(SAM([w], lr=0.1, rho=0.5), w)
    # g = (3, 4), e = 0.5 g / 5 = (0.3, 0.4), g' = w + e = (3.3, 4.4), w <- w - 0.1 g'
    torch.testing.assert_close(w.detach(), torch.tensor([3 - 0.33, 4 - 0.44]))


def test_adaptive_perturbation_is_asam() -> None:
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    _step(SAM([w], lr=0.1, rho=0.5, adaptive=True), w)
    e = 0.5 * torch.tensor([27.0, 64.0]) / math.sqrt(9**2 + 16**2)  # rho w^2 g / || |w| g ||
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 0.1 * (torch.tensor([3.0, 4.0]) + e))


def test_rho_zero_is_sgd_with_momentum_and_weight_decay() -> None:
    torch.manual_seed(0)
    start = torch.randn(5)
    a, b = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    sam = SAM([a], lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True, rho=0.0)
    sgd = torch.optim.SGD([b], lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
    for _ in range(3):
        _step(sam, a)
        _step(sgd, b)
    torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)
    assert sam.state_dict()["state"][0]["momentum_buffer"].equal(sgd.state_dict()["state"][0]["momentum_buffer"])


def test_bad_arguments_and_a_step_without_closure_are_refused() -> None:
    w = torch.zeros(2, requires_grad=True)
    for bad in (-0.1, float("nan"), True):
        with pytest.raises(ValueError, match="rho must be"):
            SAM([w], rho=bad)
    with pytest.raises(ValueError, match="SAM needs the closure.*16-mixed"):
        SAM([w]).step()


QUICK = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
QUICK += ["--trainer.enable_progress_bar", "false"]


class LossCountProbe(L.Callback):
    """Records, after each training batch, how many images the epoch's loss mean has counted."""

    def __init__(self) -> None:
        self.counts: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.counts.append(float(pl_module.train_loss_mean.weight))


def test_sam_overlay_trains_a_method_and_logs_the_loss_at_w(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    probe = ["--trainer.callbacks+=tests.test_sam.LossCountProbe"]
    counts = {}
    for name, overlay in (("sgd", []), ("sam", ["-c", OVERLAY])):
        cli = run(["fit", *experiment_args("digits_lt", "ce"), *overlay, "--trainer.max_epochs", "1", *QUICK, *probe])
        assert cli.trainer.state.finished
        (counted,) = [c for c in cli.trainer.callbacks if isinstance(c, LossCountProbe)]
        counts[name] = counted.counts
    assert isinstance(cli.model.optimizers().optimizer, SAM)
    assert counts["sam"] == counts["sgd"]  # the loss mean counts each batch once: the second pass is not a step's loss
    assert not in_perturbed_pass()


def test_sam_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*experiment_args("digits_lt", "ce"), "-c", OVERLAY, *QUICK, "--trainer.logger", "false"]
    full = run(["fit", *args, "--trainer.max_epochs", "2", "--trainer.default_root_dir", "full"])
    # killed after its first epoch (2 steps) of the same 2-epoch run, then resumed from that epoch's last.ckpt
    run(["fit", *args, "--trainer.max_epochs", "2", "--trainer.max_steps", "2", "--trainer.default_root_dir", "part"])
    ckpt = next((tmp_path / "part").rglob("last.ckpt"))
    resumed = run(
        ["fit", *args, "--trainer.max_epochs", "2", "--trainer.default_root_dir", "part2", "--ckpt_path", str(ckpt)]
    )
    assert_equal_states(full.model.state_dict(), resumed.model.state_dict())


def test_gradient_accumulation_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*experiment_args("digits_lt", "ce"), "-c", OVERLAY, *QUICK, "--trainer.max_epochs", "1"]
    with pytest.raises(ValueError, match="accumulate_grad_batches=2"):
        run(["fit", *args, "--trainer.accumulate_grad_batches", "2"])


def test_second_pass_leaves_batchnorm_statistics_alone() -> None:
    bn = torch.nn.BatchNorm1d(3)
    x = torch.randn(8, 3) + 5.0
    with frozen_batchnorm_statistics(bn):
        out = bn(x)  # normalised with the batch, as in any training forward
    assert torch.equal(bn.running_mean, torch.zeros(3)) and bn.momentum == 0.1
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    bn(x)
    assert not torch.equal(bn.running_mean, torch.zeros(3))


class WeightSumProbe(L.Callback):
    """Under DDP: each rank writes ``rank<R>.json`` with the float64 sum of every weight at the end of the fit."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module) -> None:
        import json

        total = sum(float(p.detach().double().sum()) for p in pl_module.parameters())
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps({"sum": total}))


@pytest.mark.ddp
def test_sam_under_ddp_keeps_the_ranks_identical(tmp_path: Path) -> None:
    """2 CPU processes: each closure's backward all-reduces, so both ranks perturb and step with the same gradient."""
    import json

    from tests.test_ddp import _cli, _ddp

    out = tmp_path / "probe"
    probe = ["--trainer.callbacks+=tests.test_sam.WeightSumProbe", "--trainer.callbacks.out_dir", str(out)]
    fit = ["fit", *experiment_args("digits_lt", "ce"), "-c", OVERLAY, "--trainer.max_epochs", "1", *QUICK]
    _cli([*fit, "--trainer.logger", "false", *_ddp(2), *probe], tmp_path)
    sums = [json.loads((out / f"rank{r}.json").read_text())["sum"] for r in range(2)]
    assert sums[0] == sums[1]
