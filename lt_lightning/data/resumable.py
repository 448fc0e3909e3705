"""A training DataLoader that resumes from the middle of an epoch where the interrupted run stopped.

Lightning 2.6 saves ``state_dict()`` of every train loader that has ``state_dict``/``load_state_dict`` in the
checkpoint (``fit_loop.on_save_checkpoint``, ``loops/fit_loop.py:522``) and gives it back before the resumed epoch is
iterated (``_load_combined_loader_states``, ``loops/fit_loop.py:552``); a loader without them is replayed from the
epoch's first batch (with a ``PossibleUserWarning``), so a run resumed from a mid-epoch checkpoint trains on the
epoch's first batches twice and is no longer the uninterrupted run.

:class:`ResumableDataLoader` records ``(epoch, batches trained in it)``. The count comes from the trainer's batch
progress (``processed``: batches whose training step ran), not from what the loader yielded: Lightning's fetcher
has already pre-fetched the next batch when a checkpoint is written in ``on_train_batch_end``. On load it asks its
:class:`~lt_lightning.data.samplers.EpochSampler` to re-draw that epoch (the draw depends only on ``(seed, epoch)``)
and skip ``batches x batch_size`` of this process's indices -- index skipping, no image is loaded for nothing. A
checkpoint written at the end of an epoch (all batches trained) skips nothing: the next epoch starts at its
beginning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader

from lt_lightning.data.samplers import EpochSampler


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochSampler` with Lightning's ``state_dict``/``load_state_dict`` interface.

    Attributes:
        progress: ``() -> int``, the number of batches of the current epoch whose training step ran (set by the
            datamodule from its trainer; ``None``: nothing trained yet, the state records 0).
    """

    progress: Callable[[], int] | None = None

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        epoch = int(getattr(sampler, "epoch", 0))
        batches = int(self.progress()) if self.progress is not None else 0
        return {"epoch": epoch, "batches": batches, "batch_size": self.batch_size, "num_batches": len(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = self.sampler
        if not isinstance(sampler, EpochSampler):
            raise TypeError(f"ResumableDataLoader needs an EpochSampler to resume, got {type(sampler).__name__}")
        batches = int(state.get("batches", 0))
        if not 0 < batches < int(state.get("num_batches", len(self))):
            return  # an end-of-epoch (or before-the-first-step) checkpoint: the next epoch starts at its beginning
        if state.get("batch_size") != self.batch_size:
            raise ValueError(
                f"the checkpoint's train loader had batch_size {state.get('batch_size')}, this one has "
                f"{self.batch_size}: a mid-epoch resume cannot skip the {batches} trained batches exactly "
                "(resume from an end-of-epoch checkpoint to change the batch size)"
            )
        sampler.resume_within_epoch(int(state["epoch"]), batches * int(self.batch_size))
