"""Re-sampling samplers (``lt_lightning.data.resampling``) and the datamodule's ``sampler`` hook.

Probability vectors are checked against hand-computed numbers, sampled class frequencies against them over many
draws, DDP shards (``num_replicas=2``) for being the strided halves of one global list, and every sampler for being a
pure function of ``(seed, epoch)``; a 2-process gloo DDP fit through the CLI checks the shards each rank trains on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor

from lt_lightning.cli import LongTailCLI
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.data.resampling import (
    ClassAwareSampler,
    ClassBalancedSampler,
    ClassPowerSampler,
    DeferredResampler,
    ProgressiveSampler,
    SquareRootSampler,
    class_power_probabilities,
    mixed_class_probabilities,
    progressive_mixing,
    sample_probabilities,
)
from lt_lightning.data.samplers import EpochSampler, InstanceBalancedSampler
from lt_lightning.data.synthetic import SyntheticLTDataModule

#: counts [9, 4, 1]: sqrt gives [3, 2, 1] -- easy hand numbers
LABELS = torch.tensor([0] * 9 + [1] * 4 + [2] * 1)
#: a larger long-tailed label vector for frequency checks: counts [60, 30, 10], shuffled
BIG = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)[torch.randperm(100, generator=torch.Generator().manual_seed(5))]


def _all_samplers(labels: torch.Tensor, **kw) -> list[EpochSampler]:
    return [
        ClassPowerSampler(labels, q=0.5, **kw),
        ClassBalancedSampler(labels, **kw),
        SquareRootSampler(labels, **kw),
        ClassAwareSampler(labels, **kw),
        ClassAwareSampler(labels, num_samples_cls=2, **kw),
        ProgressiveSampler(labels, total_epochs=4, **kw),
        DeferredResampler(labels, switch_epoch=1, **kw),
    ]


def _freq(indices: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    counts = torch.bincount(labels[indices], minlength=int(labels.max()) + 1).to(torch.float64)
    return counts / counts.sum()


# ---------------------------------------------------------------------------------------------- functional core
def test_class_power_probabilities_by_hand() -> None:
    counts = torch.tensor([9, 4, 1])
    expected = {1.0: [9 / 14, 4 / 14, 1 / 14], 0.5: [3 / 6, 2 / 6, 1 / 6], 0.0: [1 / 3, 1 / 3, 1 / 3]}
    for q, p in expected.items():
        got = class_power_probabilities(counts, q)
        assert got.dtype == torch.float64
        assert torch.allclose(got, torch.tensor(p, dtype=torch.float64), atol=1e-15)
    # q = 0.25: 9^.25 = sqrt(3), 4^.25 = sqrt(2), 1
    w = torch.tensor([math.sqrt(3), math.sqrt(2), 1.0], dtype=torch.float64)
    assert torch.allclose(class_power_probabilities(counts, 0.25), w / w.sum())
    # an empty class is never drawn, whatever q (0^0 would otherwise give it 1/C)
    assert class_power_probabilities(torch.tensor([4, 0, 1]), 0.0).tolist() == [0.5, 0.0, 0.5]


def test_mixed_and_progressive_by_hand() -> None:
    counts = torch.tensor([9, 4, 1])
    got = mixed_class_probabilities(counts, 0.25)
    hand = [0.75 * 9 / 14 + 0.25 / 3, 0.75 * 4 / 14 + 0.25 / 3, 0.75 * 1 / 14 + 0.25 / 3]
    assert torch.allclose(got, torch.tensor(hand, dtype=torch.float64))
    assert torch.allclose(mixed_class_probabilities(counts, 0.0), class_power_probabilities(counts, 1.0))
    assert torch.allclose(mixed_class_probabilities(counts, 1.0), class_power_probabilities(counts, 0.0))
    assert [progressive_mixing(t, 4) for t in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_sample_probabilities_by_hand() -> None:
    labels = torch.tensor([0, 1, 0, 0, 0])
    got = sample_probabilities(labels, torch.tensor([2 / 3, 1 / 3]))
    assert torch.allclose(got, torch.tensor([1 / 6, 1 / 3, 1 / 6, 1 / 6, 1 / 6], dtype=torch.float64))
    assert got.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, 0.3])
def test_per_image_probabilities_reproduce_class_power_in_expectation(q: float) -> None:
    # the expected class distribution of a draw is exactly p_c ∝ n_c^q
    sampler = ClassPowerSampler(BIG, q=q)
    per_image = sample_probabilities(sampler.labels, sampler.class_probabilities())
    by_class = torch.zeros(3, dtype=torch.float64).index_add_(0, BIG, per_image)
    n = torch.tensor([60.0, 30.0, 10.0], dtype=torch.float64)
    assert torch.allclose(by_class, n**q / (n**q).sum(), atol=1e-12)
    # and every image of a class has the same probability
    for c in range(3):
        assert torch.unique(per_image[BIG == c]).numel() == 1


def test_functional_bad_input() -> None:
    with pytest.raises(ValueError, match="q must be in"):
        class_power_probabilities(torch.tensor([3, 1]), -0.1)
    with pytest.raises(ValueError, match="q must be in"):
        class_power_probabilities(torch.tensor([3, 1]), 1.5)
    with pytest.raises(ValueError, match="no class"):
        class_power_probabilities(torch.tensor([0, 0]), 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        class_power_probabilities(torch.tensor([3, -1]), 0.5)
    with pytest.raises(ValueError, match="mixing"):
        mixed_class_probabilities(torch.tensor([3, 1]), 1.2)
    with pytest.raises(ValueError, match="total_epochs"):
        progressive_mixing(1, 0)
    with pytest.raises(ValueError, match="epoch"):
        progressive_mixing(-1, 3)
    with pytest.raises(ValueError, match="no image"):
        sample_probabilities(torch.tensor([0, 0]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="lie in"):
        sample_probabilities(torch.tensor([0, 2]), torch.tensor([0.5, 0.5]))


# ---------------------------------------------------------------------------------------------- class-power family
@pytest.mark.parametrize("q", [0.0, 0.5, 1.0])
def test_class_power_frequencies_match_probabilities(q: float) -> None:
    sampler = ClassPowerSampler(BIG, q=q, num_samples=40_000)
    n = torch.tensor([60.0, 30.0, 10.0], dtype=torch.float64)
    p = n**q / (n**q).sum()
    assert torch.allclose(sampler.class_probabilities(), p)
    # 40k draws: the standard error of a frequency is <= 0.0025; 0.01 is four of them
    assert torch.allclose(_freq(sampler.global_indices(0), BIG), p, atol=0.01)
    # over many ordinary epochs (N draws each) as well
    epochs = torch.cat([ClassPowerSampler(BIG, q=q).global_indices(e) for e in range(200)])
    assert torch.allclose(_freq(epochs, BIG), p, atol=0.01)


def test_named_members_of_the_family() -> None:
    assert ClassBalancedSampler(LABELS).q == 0.0
    assert SquareRootSampler(LABELS).q == 0.5
    assert torch.equal(
        ClassBalancedSampler(LABELS, seed=3).global_indices(2),
        ClassPowerSampler(LABELS, seed=3, q=0.0).global_indices(2),
    )
    assert torch.allclose(
        SquareRootSampler(LABELS).class_probabilities(), torch.tensor([0.5, 1 / 3, 1 / 6], dtype=torch.float64)
    )


def test_class_balanced_draws_within_a_class_uniformly() -> None:
    sampler = ClassBalancedSampler(BIG, num_samples=30_000)
    idx = sampler.global_indices(0)
    tail = idx[BIG[idx] == 2]  # 10 images share ~10k draws: ~1000 each
    per_image = torch.bincount(tail, minlength=100)[BIG == 2].to(torch.float64)
    assert per_image.min() > 0.8 * per_image.mean() and per_image.max() < 1.2 * per_image.mean()


# ---------------------------------------------------------------------------------------------- class-aware
def test_class_aware_balanced_cycles_and_per_class_walks() -> None:
    sampler = ClassAwareSampler(LABELS, num_samples=30)  # 30 picks = 10 cycles of the 3 classes
    idx = sampler.global_indices(0)
    classes = LABELS[idx]
    for k in range(10):  # each cycle of C picks visits every class once
        assert sorted(classes[3 * k : 3 * k + 3].tolist()) == [0, 1, 2]
    # within a class, images come without repeats until its list is exhausted, then it is reshuffled
    class1 = idx[classes == 1].tolist()  # 10 picks of a 4-image class
    assert sorted(class1[:4]) == sorted(class1[4:8]) == [9, 10, 11, 12]
    assert set(class1[8:]) <= {9, 10, 11, 12} and len(set(class1[8:])) == 2
    assert idx[classes == 2].tolist() == [13] * 10
    assert torch.allclose(sampler.class_probabilities(), torch.full((3,), 1 / 3, dtype=torch.float64))


def test_class_aware_num_samples_cls_takes_consecutive_images_of_one_class() -> None:
    sampler = ClassAwareSampler(BIG, num_samples_cls=2)
    classes = BIG[sampler.global_indices(1)]
    assert classes.numel() == 100
    assert torch.equal(classes[0::2], classes[1::2])
    assert sorted(torch.bincount(classes).tolist()) == [32, 34, 34]  # 50 picks: 16 full cycles + 2 classes


def test_class_aware_frequencies_over_epochs_are_uniform() -> None:
    draws = torch.cat([ClassAwareSampler(BIG).global_indices(e) for e in range(30)])
    assert torch.allclose(_freq(draws, BIG), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.005)


# ---------------------------------------------------------------------------------------------- progressive, DRS
def test_progressive_probabilities_at_given_epochs_by_hand() -> None:
    sampler = ProgressiveSampler(LABELS, total_epochs=4)
    ib, cb = torch.tensor([9, 4, 1], dtype=torch.float64) / 14, torch.full((3,), 1 / 3, dtype=torch.float64)
    for epoch, a in [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (9, 1.0)]:
        assert sampler.mixing(epoch) == a
        assert torch.allclose(sampler.class_probabilities(epoch), (1 - a) * ib + a * cb)
    sampler.set_epoch(2)
    assert sampler.mixing() == 0.5 and torch.allclose(sampler.class_probabilities(), (ib + cb) / 2)


def test_progressive_frequencies_follow_the_epoch() -> None:
    n = torch.tensor([60.0, 30.0, 10.0], dtype=torch.float64)
    ib, cb = n / n.sum(), torch.full((3,), 1 / 3, dtype=torch.float64)
    sampler = ProgressiveSampler(BIG, total_epochs=2, num_samples=40_000)
    for epoch, a in [(0, 0.0), (1, 0.5), (2, 1.0)]:
        assert torch.allclose(_freq(sampler.global_indices(epoch), BIG), (1 - a) * ib + a * cb, atol=0.01)


def test_drs_is_the_baseline_permutation_before_the_switch_and_class_balanced_after() -> None:
    sampler = DeferredResampler(BIG, seed=7, switch_epoch=3)
    baseline = InstanceBalancedSampler(BIG, seed=7)
    for epoch in range(3):
        assert sampler.mixing(epoch) == 0.0
        assert torch.equal(sampler.global_indices(epoch), baseline.global_indices(epoch))
    assert [sampler.mixing(e) for e in (3, 4, 100)] == [1.0, 1.0, 1.0]
    assert torch.allclose(sampler.class_probabilities(3), torch.full((3,), 1 / 3, dtype=torch.float64))
    after = torch.cat([sampler.global_indices(e) for e in range(3, 303)])
    assert torch.allclose(_freq(after, BIG), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01)
    assert torch.equal(sampler.global_indices(3), ClassBalancedSampler(BIG, seed=7).global_indices(3))


# ---------------------------------------------------------------------------------------------- seeds, DDP
@pytest.mark.parametrize("index", range(7))
def test_pure_function_of_seed_and_epoch(index: int) -> None:
    a = _all_samplers(BIG, seed=11)[index]
    b = _all_samplers(BIG, seed=11)[index]
    b.set_epoch(5)
    list(b)  # drawing epoch 5 first leaves no trace
    for epoch in (3, 0, 2):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b) == b.global_indices(epoch).tolist()
    assert not torch.equal(a.global_indices(2), a.global_indices(3))
    other = _all_samplers(BIG, seed=12)[index]
    assert not torch.equal(a.global_indices(2), other.global_indices(2))


@pytest.mark.parametrize("index", range(7))
@pytest.mark.parametrize("n", [14, 13])
def test_two_ranks_are_the_strided_halves_of_one_global_list(index: int, n: int) -> None:
    labels = LABELS[:n]
    single = _all_samplers(labels, seed=4)[index]
    ranks = [_all_samplers(labels, seed=4, num_replicas=2, rank=r)[index] for r in (0, 1)]
    for epoch in (0, 1, 3):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        shards = [list(s) for s in ranks]
        assert len(shards[0]) == len(shards[1]) == len(ranks[0]) == math.ceil(n / 2)
        interleaved = [i for pair in zip(*shards, strict=True) for i in pair]
        # every rank draws the same global list (identical to one process's); the shards partition it
        assert interleaved == ranks[0].global_indices().tolist() == ranks[1].global_indices().tolist()
        assert interleaved[:n] == list(single)
        assert ranks[0].total_size == 2 * math.ceil(n / 2)


def test_samplers_bad_arguments() -> None:
    with pytest.raises(ValueError, match="q must be in"):
        ClassPowerSampler(LABELS, q=1.5)
    with pytest.raises(ValueError, match="total_epochs"):
        ProgressiveSampler(LABELS, total_epochs=0)
    with pytest.raises(ValueError, match="switch_epoch"):
        DeferredResampler(LABELS, switch_epoch=-1)
    with pytest.raises(ValueError, match="num_samples_cls"):
        ClassAwareSampler(LABELS, num_samples_cls=0)
    with pytest.raises(ValueError, match="labels is empty"):
        ClassBalancedSampler(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="rank"):
        ClassAwareSampler(LABELS, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match=">= 0"):
        ClassBalancedSampler(torch.tensor([0, -1]))


# ---------------------------------------------------------------------------------------------- datamodule hook
def test_datamodule_sampler_hook() -> None:
    dm = SyntheticLTDataModule(
        num_classes=3,
        n_max=9,
        imbalance_ratio=9,
        image_size=2,
        batch_size=4,
        seed=5,
        sampler=functools.partial(ClassPowerSampler, q=0.0),
    )
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, ClassPowerSampler) and sampler.q == 0.0 and sampler.seed == 5
    assert torch.equal(sampler.labels, dm.train_labels)
    # default: instance-balanced
    plain = SyntheticLTDataModule(num_classes=3, n_max=9, imbalance_ratio=9, image_size=2)
    plain.setup("fit")
    assert type(plain.train_dataloader().sampler) is InstanceBalancedSampler

    with pytest.raises(ValueError, match="sampler must be a callable"):
        SyntheticLTDataModule(sampler="class_balanced")  # type: ignore[arg-type]
    bad = SyntheticLTDataModule(num_classes=3, n_max=9, imbalance_ratio=9, sampler=lambda *a: list(range(3)))
    bad.setup("fit")
    with pytest.raises(TypeError, match="expected an EpochSampler"):
        bad.train_dataloader()


def test_sampler_from_yaml_through_the_cli() -> None:
    sampler = '{"class_path": "lt_lightning.data.resampling.ClassPowerSampler", "init_args": {"q": 0.5}}'
    args = [
        "--data=lt_lightning.data.synthetic.SyntheticLTDataModule",
        "--data.init_args.num_classes=3",
        "--data.init_args.seed=9",
        f"--data.init_args.sampler={sampler}",
        "--model.backbone=lt_lightning.backbones.resnet_cifar.ResNet32",
        "--seed_everything=0",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
    ]
    cli = LongTailCLI(args=args, run=False)
    dm = cli.datamodule
    dm.setup("fit")
    built = dm.train_dataloader().sampler
    assert isinstance(built, ClassPowerSampler) and built.q == 0.5 and built.seed == 9


# ---------------------------------------------------------------------------------------------- DDP (2 processes)
class SampledImagesProbe(L.Callback):
    """For the DDP test (run by the CLI): each rank writes the fingerprints of its training images per epoch."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.seen: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.setdefault(trainer.current_epoch, []).extend(_fingerprints(batch[0]))

    def on_train_end(self, trainer, pl_module) -> None:
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        record = {"world_size": trainer.world_size, "seen": {str(k): v for k, v in self.seen.items()}}
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _fingerprints(images: Tensor) -> list[str]:
    return [hashlib.sha1(img.cpu().contiguous().numpy().tobytes()).hexdigest() for img in images]


@pytest.mark.ddp
def test_ddp_two_processes_draw_disjoint_shards_of_the_scheduled_global_list(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "probe"
    data = ["--data.init_args.image_size", "8", "--data.init_args.augment", "false", "--data.init_args.seed", "4"]
    schedule = [
        "--trainer.callbacks+=lt_lightning.callbacks.resampling_schedule.ResamplingSchedule",
        "--trainer.callbacks.schedule=drs",
        "--trainer.callbacks.switch_epoch=1",
        f"--trainer.callbacks+={__name__}.SampledImagesProbe",
        f"--trainer.callbacks.out_dir={out}",
    ]
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    short = ["--trainer.max_epochs", "2", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"]
    cmd = [sys.executable, "-m", "lt_lightning", "fit", "-c", str(repo / "configs" / "quickstart.yaml")]
    cmd += [*data, *schedule, *ddp, *short, "--trainer.logger", "false"]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    # the expected global order of each epoch, computed here from the same datamodule
    dm = DigitsLTDataModule(imbalance_ratio=10.0, image_size=8, augment=False, seed=4)
    dm.setup("fit")
    for epoch in (0, 1):
        sampler = DeferredResampler(dm.train_labels, num_replicas=2, seed=4, switch_epoch=1)
        order = sampler.global_indices(epoch)
        expected = _fingerprints(dm.augmentation(dm.train_dataset.images[order]))
        shards = [r["seen"][str(epoch)] for r in ranks]
        assert len(shards[0]) == len(shards[1]) == sampler.num_samples  # the same length on every rank
        assert shards[0] == expected[0::2] and shards[1] == expected[1::2]  # disjoint strided halves of one list
    # epoch 0: every training image exactly once across the two ranks (461 images, one padded repeat)
    both = ranks[0]["seen"]["0"] + ranks[1]["seen"]["0"]
    assert len(set(both)) == dm.train_labels.numel() == 461 and len(both) == 462
