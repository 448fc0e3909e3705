"""Tiny method configs for the study tests: synthetic or folder data, a linear backbone, one epoch on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TRAINER = """seed_everything: 0
trainer:
  max_epochs: 1
  accelerator: cpu
  devices: 1
  log_every_n_steps: 1
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_last: true}
"""
SYNTHETIC = """data:
  class_path: lt_lightning.data.synthetic.SyntheticLTDataModule
  init_args: {num_classes: 3, n_max: 24, imbalance_ratio: 4, image_size: 4, channels: 1, batch_size: 16, noise_std: 20}
"""
MODEL = """model:
  class_path: lt_lightning.module.LongTailModule
  init_args:
    backbone:
      class_path: tests.helpers.TinyBackbone
      init_args: {in_features: IN, num_features: 8, relu: true}
    classifier:
      class_path: lt_lightning.heads.linear.LinearHead
    criterion:
      class_path: LOSS
    optimizer:
      class_path: torch.optim.SGD
      init_args: {lr: 0.1}
"""
CE = "lt_lightning.losses.cross_entropy.CrossEntropyLoss"
BALANCED_SOFTMAX = "lt_lightning.losses.logit_adjustment.BalancedSoftmaxLoss"


def synthetic_config(path: Path, loss: str = CE) -> Path:
    """A fit config on 3-class synthetic blobs (``SyntheticLTDataModule``, 24 / 12 / 6 training images)."""
    path.write_text(TRAINER + SYNTHETIC + MODEL.replace("IN", "16").replace("LOSS", loss))
    return path


def folder_config(path: Path, root: Path, counts: list[int]) -> Path:
    """A fit config on a folder of 4x4 PNGs with ``counts`` images per class (1 test, 1 val per class held out)."""
    rng = np.random.RandomState(0)
    for c, n in enumerate(counts):
        folder = root / "train" / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.randint(0, 256, (4, 4, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    data = f"""data:
  class_path: lt_lightning.data.folder.ImageFolderLTDataModule
  init_args: {{root: {root}, val_per_class: 1, test_per_class: 1, image_size: 4, resize_size: 4, batch_size: 8}}
"""
    path.write_text(TRAINER + data + MODEL.replace("IN", "48").replace("LOSS", CE))
    return path
