"""``lt-lightning predict``: the top-k classes of every image, written to CSV and JSON.

The CLI adds this callback as ``--prediction.*`` to every subcommand; it acts in ``predict`` only::

    lt-lightning predict -c CONFIG --ckpt_path last --prediction.source my_photos/ --prediction.top_k 3

* ``source``: ``test`` (default), ``val``, ``train`` or a folder of unlabelled images
  (:mod:`lt_lightning.data.predict_source`); it sets the datamodule's ``predict_source``.
* The probabilities are the module's ``predict_step``: the softmax of
  :meth:`~lt_lightning.module.LongTailModule.test_logits`, so the test-time rules of the config apply exactly as in
  ``test`` (post-hoc logit adjustment, τ-normalisation, NCM, test-time expert aggregation: their callbacks install
  the rule at ``on_predict_start``). The JSON names the rules that were active.
* ``OUTPUT.csv``: one row per image, in the order of the source (``id``, ``true_class`` where the source has labels,
  then ``class_1, prob_1, ..., class_k, prob_k``, most probable first); ``OUTPUT.json``: the same rows plus the
  source, the checkpoint, the class names, the active test-time rules and, where labels exist, the top-1 accuracy.
  ``OUTPUT`` defaults to ``<log_dir>/predictions``; the paths are printed at the end.
* Under DDP every process predicts its shard; the rows are gathered and rank 0 writes the files.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lt_lightning._checks import check_int
from lt_lightning.data.predict_source import check_predict_source

#: the formats ``PredictionWriter`` can write
FORMATS: tuple[str, ...] = ("csv", "json")


class PredictionWriter(BasePredictionWriter):
    """Write the top-k predicted classes of every ``predict`` image to ``OUTPUT.csv`` / ``OUTPUT.json``.

    Args:
        source: what to predict on: ``"test"``, ``"val"``, ``"train"`` or a folder of images (checked when
            ``predict`` starts).
        output: path of the files without extension (default ``<log_dir>/predictions``); a ``.csv`` / ``.json``
            suffix is dropped.
        top_k: classes per image (``>= 1``; at most the number of classes is written).
        formats: any of ``"csv"``, ``"json"``.
    """

    def __init__(
        self,
        source: str = "test",
        output: str | None = None,
        top_k: int = 5,
        formats: list[str] | tuple[str, ...] = FORMATS,
    ) -> None:
        super().__init__(write_interval="batch")
        if not isinstance(source, str) or not source:
            raise ValueError(f"source must be 'test', 'val', 'train' or a folder, got {source!r}")
        check_int("top_k", top_k, minimum=1)
        formats = tuple(formats)
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
        if output is not None and os.path.splitext(output)[1].lower() in (".csv", ".json"):
            output = os.path.splitext(output)[0]
        self.source = source
        self.output = output
        self.top_k = top_k
        self.formats = formats
        self._rows: list[tuple[int, list[int], list[float]]] = []
        self._rules: list[str] | None = None
        #: the files written by the last ``predict`` (rank 0)
        self.written: list[str] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        check_predict_source(self.source)
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "predict_items"):
            raise ValueError("PredictionWriter needs a LongTailDataModule (lt-lightning predict -c CONFIG ...)")
        datamodule.predict_source = self.source

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows, self._rules, self.written = [], None, []

    @staticmethod
    def test_time_rules(pl_module: pl.LightningModule) -> list[str]:
        """Names of the test-time rules active on ``pl_module`` (those :meth:`LongTailModule.test_output` applies)."""
        rules = []
        weights = getattr(pl_module, "test_expert_weights", None)
        if weights is not None:
            rules.append("expert weights [" + ", ".join(f"{float(w):.3f}" for w in weights) + "]")
        head = getattr(pl_module, "test_head", None)
        if head is not None:
            rules.append(f"test head {type(head).__name__}")
        if getattr(pl_module, "test_logit_offset", None) is not None:
            rules.append("logit offset (post-hoc logit adjustment)")
        return rules

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if self._rules is None:
            self._rules = self.test_time_rules(pl_module)
        if not isinstance(prediction, Tensor) or prediction.dim() != 2:
            raise ValueError("PredictionWriter needs predict_step to return [B, C] class probabilities")
        if batch_indices is None or len(batch_indices) != prediction.shape[0]:
            raise RuntimeError("PredictionWriter: the predict loader gave no dataset index per image")
        k = min(self.top_k, prediction.shape[1])
        probs, classes = prediction.float().topk(k, dim=1)
        for index, cls, prob in zip(batch_indices, classes.tolist(), probs.tolist(), strict=True):
            self._rows.append((int(index), cls, prob))

    def _gathered_rows(self, trainer: pl.Trainer) -> list[tuple[int, list[int], list[float]]]:
        rows = self._rows
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            shards: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(shards, rows)
            rows = [row for shard in shards for row in shard]
        return sorted(rows, key=lambda row: row[0])

    def output_path(self, trainer: pl.Trainer) -> str:
        """The files' path without extension."""
        if self.output is not None:
            return self.output
        return os.path.join(trainer.log_dir or trainer.default_root_dir, "predictions")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = self._gathered_rows(trainer)
        if not trainer.is_global_zero:
            return
        ids, labels = trainer.datamodule.predict_items()
        names = list(getattr(trainer.datamodule, "class_names", None) or map(str, range(pl_module.num_classes)))
        if len({row[0] for row in rows}) != len(rows) or len(rows) > len(ids):
            raise RuntimeError(f"PredictionWriter: {len(rows)} predictions for the {len(ids)} images of the source")
        if len(rows) < len(ids):
            rank_zero_warn(
                f"PredictionWriter: {len(rows)} of the {len(ids)} images of {self.source!r} were predicted "
                f"(trainer.limit_predict_batches={trainer.limit_predict_batches}); the files hold those only"
            )
        base = self.output_path(trainer)
        os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
        records = []
        for index, classes, probs in rows:
            record: dict[str, Any] = {"id": ids[index]}
            if labels is not None:
                record["true_class"] = names[int(labels[index])]
            record["top_k"] = [{"class": names[c], "prob": p} for c, p in zip(classes, probs, strict=True)]
            records.append(record)
        k = len(rows[0][1]) if rows else min(self.top_k, len(names))
        self.written = []
        if "csv" in self.formats:
            path = base + ".csv"
            with open(path, "w", newline="") as f:
                writer = csv.writer(f)
                header = ["id"] + (["true_class"] if labels is not None else [])
                writer.writerow(header + [f"{kind}_{j}" for j in range(1, k + 1) for kind in ("class", "prob")])
                for record in records:
                    values = [record["id"]] + ([record["true_class"]] if labels is not None else [])
                    values += [v for top in record["top_k"] for v in (top["class"], f"{top['prob']:.6f}")]
                    writer.writerow(values)
            self.written.append(path)
        if "json" in self.formats:
            path = base + ".json"
            summary: dict[str, Any] = {
                "source": self.source,
                "checkpoint": trainer.ckpt_path,
                "class_names": names,
                "top_k": k,
                "test_time_rules": self._rules or [],
                "num_images": len(records),
            }
            if labels is not None and records:
                correct = sum(r["top_k"][0]["class"] == r["true_class"] for r in records)
                summary["top1_accuracy"] = correct / len(records)
            with open(path, "w") as f:
                json.dump({**summary, "predictions": records}, f, indent=1)
            self.written.append(path)
        rules = ", ".join(self._rules) if self._rules else "none"
        rank_zero_info(
            f"predictions of {len(records)} images ({self.source}; test-time rules: {rules}): {', '.join(self.written)}"
        )


__all__ = ["FORMATS", "PredictionWriter"]
