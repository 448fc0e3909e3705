"""A callback for DDP tests: each rank writes what it evaluated, and the synced metric, to ``rank<R>.json``.

Used by tests/test_ddp.py through the real CLI (``--trainer.callbacks+=tests.ddp_probe.EvalCountsProbe``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class EvalCountsProbe(Callback):
    """Record, per rank, a fingerprint and the label of every test image seen, local per-class correct/total
    counts, and the module's synced ``last_test_results``; write them as JSON in ``on_test_end``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.images: list[str] = []
        self.labels: list[int] = []
        self.correct: torch.Tensor | None = None

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        x, y = batch
        with torch.no_grad():
            hit = pl_module(x).logits.argmax(dim=1) == y
        c = pl_module.num_classes
        local = torch.bincount(y[hit], minlength=c)
        self.correct = local if self.correct is None else self.correct + local
        self.images += [hashlib.sha1(img.cpu().numpy().tobytes()).hexdigest() for img in x]
        self.labels += y.tolist()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        results = pl_module.last_test_results
        c = pl_module.num_classes
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "images": self.images,
            "labels": self.labels,
            "local_total": torch.bincount(torch.tensor(self.labels, dtype=torch.long), minlength=c).tolist(),
            "local_correct": (self.correct if self.correct is not None else torch.zeros(c, dtype=torch.long)).tolist(),
            "total": results["total"].tolist(),
            "correct": results["correct"].tolist(),
            "logged": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")},
        }
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _state_hash(module: torch.nn.Module) -> str:
    """SHA-1 of every tensor of ``module``'s state_dict (weights and BatchNorm statistics), bit-exact."""
    digest = hashlib.sha1()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class StageProbe(Callback):
    """Per rank and epoch: this rank's sampled training indices, bit-exact hashes of the backbone and classifier,
    whether the backbone is trainable; written to ``rank<R>.json`` at the end of the fit."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.epochs: dict[int, dict[str, Any]] = {}
        self.start: dict[str, str] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = {"backbone": _state_hash(pl_module.backbone), "classifier": _state_hash(pl_module.classifier)}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler
        self.epochs[trainer.current_epoch] = {
            "indices": list(iter(sampler)),
            "backbone": _state_hash(pl_module.backbone),
            "classifier": _state_hash(pl_module.classifier),
            "backbone_trainable": any(p.requires_grad for p in pl_module.backbone.parameters()),
            "backbone_training": pl_module.backbone.training,
        }

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "start": self.start}
        record["epochs"] = {str(k): v for k, v in self.epochs.items()}
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class BatchProbe(Callback):
    """Per rank: the labels of every training batch by ``(epoch, batch_idx)`` and, at the end of the fit, a bit-exact
    hash of the whole module state; written to ``rank<R>.json`` (for resume-under-DDP tests)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.batches: dict[str, list[int]] = {}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.batches[f"{trainer.current_epoch}/{batch_idx}"] = batch[1].tolist()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = {"rank": trainer.global_rank, "batches": self.batches, "state": _state_hash(pl_module)}
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class CriterionProbe(Callback):
    """Per rank and epoch: the training criterion's buffers (DRW's class weights) as lists, and the global step."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.epochs: dict[str, dict[str, Any]] = {}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        criterion = pl_module.training_criterion
        buffers = {k: v.detach().cpu().flatten().tolist() for k, v in criterion.state_dict().items()}
        self.epochs[str(trainer.current_epoch)] = {"buffers": buffers, "step": trainer.global_step}

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "epochs": self.epochs}
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
