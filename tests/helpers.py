"""Small parts the Trainer-level tests share: a tiny backbone, a quiet trainer, and callbacks that stop a run or
write a mid-epoch checkpoint (for resume tests)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone


class BNBackbone(Backbone):
    """``Linear(12, 4) -> BatchNorm1d -> ReLU``: running statistics change whenever it runs in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 4
        self.proj = nn.Linear(12, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.proj(x.flatten(1))))


def tiny_lt_data(**kwargs):
    """3 classes, counts [16, 8, 4], images 3x2x2, batch 8 (4 steps per epoch), no augmentation."""
    from lt_lightning.data.synthetic import SyntheticLTDataModule

    args = {"num_classes": 3, "n_max": 16, "imbalance_ratio": 4, "image_size": 2, "batch_size": 8, "seed": 3}
    return SyntheticLTDataModule(**{**args, "augment": False, **kwargs})


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


def assert_equal_states(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    """Two state dicts hold the same keys and bit-identical tensors (the key is named on failure)."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class InterruptAt(L.Callback):
    """Raise ``KeyboardInterrupt`` (what Ctrl-C does) at training step ``step``: Lightning then stops "gracefully"."""

    def __init__(self, step: int = 1) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def lr_sequence(make_scheduler, epochs: int, base: float = 0.1) -> list[float]:
    """The learning rate of each of ``epochs`` epochs under the scheduler ``make_scheduler(optimizer)`` builds
    (one-parameter SGD at ``base``, stepped once per epoch)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = make_scheduler(optimizer)
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def composed_yaml(files: list[Path]) -> dict:
    """The YAML trees of ``files`` merged in order as the CLI merges them, without its defaults (only what the files
    say): mappings merge key by key, lists are replaced, ``callbacks+`` appends to ``callbacks``, and a new
    ``class_path`` keeps only the earlier ``init_args`` its class accepts (jsonargparse's rule for subclass types)."""
    import inspect

    import yaml

    from lt_lightning.class_path import import_class_path

    def accepts(class_path: str, name: str) -> bool:
        cls = import_class_path(class_path)
        for klass in inspect.getmro(cls) if inspect.isclass(cls) else ():
            try:
                if name in inspect.signature(klass.__init__).parameters:
                    return True
            except (TypeError, ValueError):
                continue
        return False

    def merge(base, new):
        if not (isinstance(base, dict) and isinstance(new, dict)):
            return new
        out = dict(base)
        if "class_path" in new and new["class_path"] != base.get("class_path") and "init_args" in base:
            kept = {k: v for k, v in base["init_args"].items() if accepts(new["class_path"], k)}
            out["init_args"] = kept
        for key, value in new.items():
            if key.endswith("+"):
                out[key[:-1]] = [*(out.get(key[:-1]) or []), *value]
            else:
                out[key] = merge(out.get(key), value)
        return out

    tree: dict = {}
    for file in files:
        tree = merge(tree, yaml.safe_load(Path(file).read_text()) or {})
    return tree
