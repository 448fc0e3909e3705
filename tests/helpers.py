"""Small parts the Trainer-level tests share: a tiny backbone, a quiet trainer, and callbacks that stop a run or
write a mid-epoch checkpoint (for resume tests)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone


class TinyBackbone(Backbone):
    """``flatten -> Linear(in_features, num_features)`` (then ReLU when ``relu``)."""

    def __init__(self, in_features: int = 12, num_features: int = 4, relu: bool = False) -> None:
        super().__init__()
        self.num_features = num_features
        self.relu = relu
        self.fc = nn.Linear(in_features, num_features)

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.fc(x.flatten(1))
        return torch.relu(out) if self.relu else out


def quiet_trainer(tmp_path: Path, callbacks=(), **kwargs) -> L.Trainer:
    """A CPU ``Trainer`` without logger, checkpoints, progress bar or model summary."""
    args = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    args |= {"enable_model_summary": False, "default_root_dir": tmp_path, "callbacks": list(callbacks)}
    return L.Trainer(**(args | kwargs))


class StopAfter(L.Callback):
    """Stop the fit at the end of epoch ``epochs - 1`` (a run interrupted with its max_epochs unchanged)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class SaveMidEpoch(L.Callback):
    """Write a checkpoint to ``path`` after batch ``batch_idx`` of ``epoch`` (a mid-epoch checkpoint)."""

    def __init__(self, epoch: int, path: Path, batch_idx: int = 0) -> None:
        self.epoch, self.path, self.batch_idx = epoch, path, batch_idx

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch_idx:
            trainer.save_checkpoint(self.path)
