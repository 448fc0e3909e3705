"""ProCo: the vMF maths against closed forms and scipy, hand-computed logits and estimator steps, the authors' loss
re-implemented, the degenerate setting, the per-epoch state (swap, checkpoint, SAM's second pass) and DDP sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import ive

from lt_lightning.losses.logit_adjustment import balanced_softmax_loss, log_prior_from_counts, logit_adjusted_loss
from lt_lightning.losses.proco import ProCoLoss, proco_logits, proco_loss, update_vmf_statistics
from lt_lightning.losses.vmf import log_bessel_iv, log_bessel_iv_and_ratio, log_vmf_partition, vmf_concentration
from lt_lightning.output import ModelOutput
from lt_lightning.sam import _perturbed

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------- vMF maths
def _log_sinh_over_k(k: float) -> float:
    """``log I_{1/2}(k) - (1/2) log k = log(sqrt(2 / pi) sinh(k) / k)`` (``I_{1/2}(k) = sqrt(2 / (pi k)) sinh k``)."""
    return 0.5 * math.log(2 / math.pi) + math.log(math.sinh(k) / k)


def test_log_bessel_half_order_is_the_closed_form() -> None:
    x = torch.tensor([0.01, 0.5, 1.0, 2.0, 10.0, 300.0], dtype=torch.float64)
    expected = [0.5 * math.log(2 / (math.pi * v)) + v + math.log1p(-math.exp(-2 * v)) - math.log(2) for v in x.tolist()]
    assert torch.allclose(log_bessel_iv(0.5, x), torch.tensor(expected, dtype=torch.float64), atol=1e-8)


@pytest.mark.parametrize("nu", [0.0, 1.0, 15.0, 31.0, 63.0, 63.5, 127.0])
def test_log_bessel_and_ratio_equal_scipy(nu: float) -> None:
    x = np.array([1e-3, 0.1, 1.0, 5.0, 50.0, 606.0, 1000.0, 1e4, 1e5 + 10])
    log_i, ratio = log_bessel_iv_and_ratio(nu, torch.from_numpy(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        reference = np.log(ive(nu, x)) + x
        reference_ratio = ive(nu + 1, x) / ive(nu, x)
    finite = np.isfinite(reference) & np.isfinite(reference_ratio)  # scipy underflows at 1e-3 for large orders
    assert finite.sum() >= 6
    assert np.allclose(log_i.numpy()[finite], reference[finite], rtol=0, atol=1e-7)
    assert np.allclose(ratio.numpy()[finite], reference_ratio[finite], rtol=0, atol=1e-9)


def test_log_vmf_partition_value_and_gradient_is_the_bessel_ratio() -> None:
    kappa = torch.tensor([0.5, 2.0, 40.0, 700.0], dtype=torch.float64, requires_grad=True)
    value = log_vmf_partition(kappa, 3)  # p = 3: nu = 1/2
    assert torch.allclose(value, torch.tensor([_log_sinh_over_k(k) for k in kappa.tolist()], dtype=torch.float64))
    value.sum().backward()
    # d/dk log(sinh k / k) = coth k - 1/k = I_{3/2}(k) / I_{1/2}(k)
    expected = [1 / math.tanh(k) - 1 / k for k in kappa.tolist()]
    assert torch.allclose(kappa.grad, torch.tensor(expected, dtype=torch.float64), atol=1e-9)
    # p = 128: the gradient is scipy's ratio I_64 / I_63
    k = torch.tensor([3.0, 606.0], dtype=torch.float64, requires_grad=True)
    log_vmf_partition(k, 128).sum().backward()
    assert np.allclose(k.grad.numpy(), ive(64, k.detach().numpy()) / ive(63, k.detach().numpy()), atol=1e-10)


def test_concentration_estimate() -> None:
    # R = 0.6, p = 3: 3 * 0.6 / (1 - 0.36) = 2.8125; R = 0.9, p = 128: 128 * 90 / 19 (the authors' initial kappa);
    # R = 1 (a class whose samples all coincide): the cap 1e5; R = 0: 0
    mean = torch.tensor([[0.6, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(vmf_concentration(mean), torch.tensor([2.8125, 1e5, 0.0]))
    assert vmf_concentration(0.9 * F.normalize(torch.randn(1, 128), dim=1)).item() == pytest.approx(128 * 90 / 19)


def test_bad_vmf_arguments() -> None:
    with pytest.raises(ValueError, match="nu"):
        log_bessel_iv(-1.0, torch.ones(2))
    with pytest.raises(ValueError, match="dim"):
        log_vmf_partition(torch.ones(2), 1)


# ---------------------------------------------------------------------- hand-computed cases
def test_logits_hand_case() -> None:
    # p = 3, mu_0 = e1, mu_1 = e2, kappa = (1, 2); query z = e1, t = 1:
    # kappa~_0 = ||e1 + e1|| = 2, kappa~_1 = ||2 e2 + e1|| = sqrt(5);
    # s_c = A(kappa_c) - A(kappa~_c) with -log C_3(k) = A(k) + const, A(k) = log(sinh k / k) + log sqrt(2 / pi);
    # here s_c = log C(kappa_c) - log C(kappa~_c) = A(kappa~_c) - A(kappa_c)
    mu = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])  # normalised inside
    kappa = torch.tensor([1.0, 2.0])
    z = torch.tensor([[1.0, 0.0, 0.0]])
    expected = [_log_sinh_over_k(2.0) - _log_sinh_over_k(1.0), _log_sinh_over_k(math.sqrt(5)) - _log_sinh_over_k(2.0)]
    assert torch.allclose(proco_logits(z, mu, kappa, 1.0), torch.tensor([expected]), atol=1e-6)
    # t = 0.5: z / t = 2 e1 -> kappa~ = (3, sqrt(8))
    expected = [_log_sinh_over_k(3.0) - _log_sinh_over_k(1.0), _log_sinh_over_k(math.sqrt(8)) - _log_sinh_over_k(2.0)]
    assert torch.allclose(proco_logits(z, mu, kappa, 0.5), torch.tensor([expected]), atol=1e-6)


def test_estimator_step_hand_case() -> None:
    # class 0: N = 2, m = (0.9, 0); a batch of two class-0 samples summing to (0, 2) (mean (0, 1)): w = 2 / 4,
    # m = (0.45, 0.5), N = 4. Class 1: N = 0, no sample: unchanged. Class 2: N = 0, one sample (0.6, 0.8): w = 1.
    mean = torch.tensor([[0.9, 0.0], [0.0, 0.9], [0.1, 0.1]])
    count = torch.tensor([2.0, 0.0, 0.0])
    sums = torch.tensor([[0.0, 2.0], [0.0, 0.0], [0.6, 0.8]])
    batch = torch.tensor([2.0, 0.0, 1.0])
    new_mean, new_count = update_vmf_statistics(mean, count, sums, batch)
    assert torch.allclose(new_mean, torch.tensor([[0.45, 0.5], [0.0, 0.9], [0.6, 0.8]]))
    assert new_count.tolist() == [4.0, 0.0, 1.0]


def test_loss_hand_case() -> None:
    # logits l = [[1, 0]], contrast logits s = [[0.5, -0.5]], y = 0, prior (0.75, 0.25), alpha = 0.5, tau = 1:
    # L = -log softmax(l + log pi)_0 + 0.5 * -log softmax(s + log pi)_0
    log_prior = torch.tensor([math.log(0.75), math.log(0.25)])
    la = -(1 + math.log(0.75) - math.log(math.exp(1 + math.log(0.75)) + math.exp(math.log(0.25))))
    con = -(0.5 + math.log(0.75) - math.log(math.exp(0.5 + math.log(0.75)) + math.exp(-0.5 + math.log(0.25))))
    loss = proco_loss(torch.tensor([[1.0, 0.0]]), [torch.tensor([[0.5, -0.5]])], torch.tensor([0]), log_prior, 0.5)
    assert loss.item() == pytest.approx(la + 0.5 * con, abs=1e-6)


# ---------------------------------------------------------------------- the authors' loss, re-implemented
class _ReferenceEstimator:
    """LeapLabTHU/ProCo ``EstimatorCV`` (update_CV, update_kappa), ``log I`` from scipy, on CPU in float64."""

    def __init__(self, mean: torch.Tensor) -> None:
        self.ave = mean.clone().double()
        self.amount = torch.zeros(mean.shape[0], dtype=torch.float64)
        self.p = mean.shape[1]

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        onehot = F.one_hot(labels, self.ave.shape[0]).double()
        amount = onehot.sum(0)
        ave = onehot.T @ features.double() / amount.clamp(min=1)[:, None]
        weight = amount / (amount + self.amount)
        weight[weight != weight] = 0
        self.ave = self.ave * (1 - weight[:, None]) + ave * weight[:, None]
        self.amount = self.amount + amount

    def logits(self, features: torch.Tensor, temperature: float) -> torch.Tensor:
        r = self.ave.norm(dim=1)
        kappa = self.p * r / (1 - r**2)
        kappa[(kappa > 1e5) | (kappa < 0)] = 1e5
        nu = self.p / 2 - 1

        def log_c(k: np.ndarray) -> np.ndarray:
            return np.log(ive(nu, k)) + k - nu * np.log(k)

        tilde = kappa[None, :, None] * F.normalize(self.ave, dim=1)[None] + features.double()[:, None] / temperature
        tilde = tilde.norm(dim=2).numpy()
        return torch.from_numpy(log_c(tilde) - log_c(kappa.numpy())[None, :])


def test_equals_the_authors_loss_over_two_epochs() -> None:
    # two views per image; per view: update, then contrast (the reference's two criterion_scl calls); the loss's
    # estimator restarts from the epoch's statistics at set_epoch(1) (_hook_before_epoch)
    torch.manual_seed(0)
    c, p, b, t, alpha = 4, 8, 6, 0.1, 1.0
    counts = torch.tensor([20.0, 9.0, 4.0, 2.0])
    loss_fn = ProCoLoss(alpha=alpha, temperature=t)
    loss_fn.set_class_counts(counts)
    log_prior = log_prior_from_counts(counts)
    start = loss_fn.initial_mean(c, p)
    used, restarted = _ReferenceEstimator(start), _ReferenceEstimator(start)
    for epoch in range(2):
        loss_fn.set_epoch(epoch)
        if epoch == 1:
            used.ave, used.amount = restarted.ave.clone(), restarted.amount.clone()
            restarted = _ReferenceEstimator(start)
        for _ in range(3):
            y = torch.randint(0, c, (b,))
            z = F.normalize(torch.randn(2 * b, p), dim=1)
            logits = torch.randn(2 * b, c)
            loss = loss_fn(ModelOutput(logits=logits, features=z, extras={"projection": z}), torch.cat([y, y]))
            contrast = []
            for view in z.chunk(2):
                used.update(view, y)
                restarted.update(view, y)
                contrast.append(F.cross_entropy(used.logits(view, t).float() + log_prior, y))
            expected = F.cross_entropy(logits + log_prior, torch.cat([y, y])) + alpha * torch.stack(contrast).mean()
            assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(loss_fn.mean.double(), used.ave, atol=1e-6)
    assert torch.allclose(loss_fn.epoch_mean.double(), restarted.ave, atol=1e-6)


def test_alpha_zero_is_the_logit_adjusted_loss() -> None:
    torch.manual_seed(0)
    counts = torch.tensor([30.0, 6.0, 2.0])
    logits, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    z = F.normalize(torch.randn(8, 5), dim=1)
    out = ModelOutput(logits=logits, features=z, extras={"projection": z})
    lp = log_prior_from_counts(counts)
    for tau in (1.0, 0.5):
        loss_fn = ProCoLoss(alpha=0.0, tau=tau)
        loss_fn.set_class_counts(counts)
        assert torch.allclose(loss_fn(out, y), logit_adjusted_loss(logits, y, lp, tau))
    assert torch.allclose(proco_loss(logits, [], y, lp), balanced_softmax_loss(logits, y, lp))


def test_gradient_reaches_the_projection_and_the_logits() -> None:
    torch.manual_seed(0)
    loss_fn = ProCoLoss()
    loss_fn.set_class_counts(torch.tensor([5.0, 3.0, 1.0]))
    z = F.normalize(torch.randn(6, 16), dim=1).requires_grad_()
    logits = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    loss_fn(ModelOutput(logits=logits, features=z, extras={"projection": z}), y).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---------------------------------------------------------------------- state
def _step(loss_fn: ProCoLoss, seed: int, c: int = 3, p: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (4,), generator=g)
    z = F.normalize(torch.randn(8, p, generator=g), dim=1)
    out = ModelOutput(logits=torch.randn(8, c, generator=g), features=z, extras={"projection": z})
    return loss_fn(out, torch.cat([y, y]))


def _fresh(counts: tuple[float, ...] = (5.0, 3.0, 1.0)) -> ProCoLoss:
    loss_fn = ProCoLoss()
    loss_fn.set_class_counts(torch.tensor(counts))
    return loss_fn


def test_set_epoch_swaps_once_and_restarts_the_epoch_statistics() -> None:
    loss_fn = _fresh()
    loss_fn.set_epoch(0)
    _step(loss_fn, 0)
    _step(loss_fn, 1)
    epoch_mean, epoch_count = loss_fn.epoch_mean.clone(), loss_fn.epoch_count.clone()
    assert epoch_count.sum() == 16  # two views x 4 images x 2 steps
    loss_fn.set_epoch(1)
    assert torch.equal(loss_fn.mean, epoch_mean) and torch.equal(loss_fn.count, epoch_count)
    assert torch.equal(loss_fn.epoch_mean, loss_fn.initial_mean(3, 6)) and loss_fn.epoch_count.sum() == 0
    _step(loss_fn, 2)
    mean = loss_fn.mean.clone()
    loss_fn.set_epoch(1)  # idempotent: a resumed epoch does not swap again
    assert torch.equal(loss_fn.mean, mean)


def test_state_dict_round_trip_into_a_fresh_loss() -> None:
    loss_fn = _fresh()
    loss_fn.set_epoch(0)
    _step(loss_fn, 0)
    loss_fn.set_epoch(1)
    _step(loss_fn, 1)
    state = loss_fn.state_dict()
    restored = _fresh()
    restored.load_state_dict(state)  # buffers are created at the first step: load takes the checkpoint's shapes
    assert restored.epoch == 1
    for name in ("mean", "count", "epoch_mean", "epoch_count"):
        assert torch.equal(getattr(restored, name), getattr(loss_fn, name))
    restored.set_class_counts(torch.tensor([5.0, 3.0, 1.0]))  # the module's call on checkpoint load keeps them
    restored.set_epoch(1)
    assert torch.equal(_step(restored, 2), _step(loss_fn, 2))
    assert torch.equal(restored.mean, loss_fn.mean)


def test_no_update_in_eval_mode_or_in_the_sam_perturbed_pass() -> None:
    loss_fn = _fresh()
    loss_fn.set_epoch(0)
    _step(loss_fn, 0)
    mean = loss_fn.mean.clone()
    with _perturbed():
        _step(loss_fn, 1)
    assert torch.equal(loss_fn.mean, mean)
    loss_fn.eval()
    _step(loss_fn, 2)
    assert torch.equal(loss_fn.mean, mean)


def _ddp_worker(rank: int, init_file: str, result_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        y = torch.randint(0, 3, (8,))
        z = F.normalize(torch.randn(16, 6), dim=1)  # [view 1 of 8 images; view 2]
        shard = torch.arange(rank * 4, rank * 4 + 4)
        rows = torch.cat([shard, shard + 8])
        loss_fn = _fresh()
        loss_fn.set_epoch(0)
        out = ModelOutput(logits=torch.zeros(8, 3), features=z[rows], extras={"projection": z[rows]})
        loss_fn(out, torch.cat([y[shard], y[shard]]))
        if rank == 0:
            torch.save({"mean": loss_fn.mean, "count": loss_fn.count}, result_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_ddp_statistics_equal_the_global_batch(tmp_path) -> None:
    # two processes with half the batch each end with the statistics of one process holding the whole batch
    import torch.multiprocessing as mp

    result = tmp_path / "rank0.pt"
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(result)), nprocs=2, join=True)
    torch.manual_seed(0)
    y = torch.randint(0, 3, (8,))
    z = F.normalize(torch.randn(16, 6), dim=1)
    loss_fn = _fresh()
    loss_fn.set_epoch(0)
    loss_fn(ModelOutput(logits=torch.zeros(16, 3), features=z, extras={"projection": z}), torch.cat([y, y]))
    synced = torch.load(result)
    assert torch.allclose(synced["mean"], loss_fn.mean, atol=1e-6)
    assert torch.equal(synced["count"], loss_fn.count)


def test_bad_arguments() -> None:
    for name, value in (("alpha", -1.0), ("temperature", 0.0), ("tau", -1.0), ("views", 0), ("init_seed", -1)):
        with pytest.raises(ValueError, match=name):
            ProCoLoss(**{name: value})
    with pytest.raises(ValueError, match="sync_statistics"):
        ProCoLoss(sync_statistics="yes")  # type: ignore[arg-type]
    z = F.normalize(torch.randn(3, 4), dim=1)
    out = ModelOutput(logits=torch.randn(3, 2), features=z, extras={"projection": z})
    with pytest.raises(ValueError, match="no class prior"):
        ProCoLoss()(out, torch.tensor([0, 1, 0]))
    loss_fn = _fresh((3.0, 1.0))
    with pytest.raises(ValueError, match="multiple of views"):
        loss_fn(out, torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="ProjectionHead"):
        loss_fn(ModelOutput(logits=torch.randn(2, 2), features=z[:2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="hard class-index"):
        loss_fn(out, torch.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="epoch"):
        loss_fn.set_epoch(-1)
    with pytest.raises(ValueError, match="temperature"):
        proco_logits(z, z, torch.ones(3), 0.0)
