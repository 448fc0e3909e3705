"""The base datamodule of every long-tailed dataset (:class:`LongTailDataModule`).

Contract of a :class:`LongTailDataModule` subclass:

* ``__init__`` (cheap: labels or a split file, no image decoding) calls :meth:`LongTailDataModule._set_class_info`,
  which sets ``num_classes``, ``class_counts`` (training images per class), ``class_names`` and ``train_labels``.
  The CLI links ``data.num_classes`` and ``data.class_counts`` into the model right after ``__init__``.
* ``setup(stage)`` sets ``train_dataset``, ``val_dataset`` (a balanced validation split) and ``test_dataset``:
  datasets of ``(uint8 [C, H, W] image, int label)``; ``train_dataset[i]`` must have label ``train_labels[i]``
  (samplers draw indices from ``train_labels``).
* Class attributes (or instance attributes set in ``__init__``) ``mean``/``std`` (normalisation of ``[0, 1]``
  images), ``crop_padding`` and ``horizontal_flip`` (train-time augmentation) configure the device pipeline, with
  the ``view_augment`` argument (``"standard"`` crop + flip, or the ``"simclr"`` views of contrastive learning).

Loading, sampling and augmentation follow one path: the train loader uses :meth:`build_train_sampler` (an
:class:`~lt_lightning.data.samplers.EpochSampler`, instance-balanced by default -- re-sampling methods override
this hook or swap the sampler), evaluation loaders an unpadded distributed sampler, and the batch is augmented and
normalised on the device in :meth:`on_after_batch_transfer`. With ``train_set_on_device=True`` the train loader
yields index batches (:class:`~lt_lightning.data.tensor_dataset.TrainIndices`) and :meth:`transfer_batch_to_device`
gathers the images and labels from a copy of the training set held on the device: the same batches, without a
host-to-device image copy per step.

The dataset and collate function live in :mod:`lt_lightning.data.tensor_dataset`, the per-batch device work
(reseeding, views, the on-device training set) in :mod:`lt_lightning.data.device_pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lt_lightning._checks import check_int
from lt_lightning.data.device_pipeline import DeviceTrainSet, augment_batch, augment_views, seed_training_step
from lt_lightning.data.image_listing import IMAGE_EXTENSIONS, list_images
from lt_lightning.data.predict_source import PredictImageFolder, check_predict_source
from lt_lightning.data.resumable import ResumableDataLoader
from lt_lightning.data.samplers import EpochSampler, InstanceBalancedSampler, UnpaddedDistributedSampler
from lt_lightning.data.tensor_dataset import (
    IndexDataset,
    TensorImageDataset,
    TrainIndices,
    check_labels,
    collate_image_batch,
    collate_indices,
)
from lt_lightning.data.test_agnostic import check_distribution, dataset_labels, resample_test_dataset
from lt_lightning.data.transforms import DeviceAugmentation, check_augment_policy, check_view_augment

__all__ = ["LongTailDataModule", "SamplerFactory"]

SamplerFactory = Callable[[Tensor, int, int, int], EpochSampler]
"""Builds the training sampler as ``factory(train_labels, num_replicas, rank, seed)``: an :class:`EpochSampler`
subclass given in YAML by ``class_path`` and ``init_args`` (its other arguments), e.g.
``lt_lightning.data.resampling.ClassPowerSampler`` with ``q: 0.5``."""


class LongTailDataModule(L.LightningDataModule):
    """Base datamodule: class statistics after ``__init__``, DDP-aware seeded loaders, device-side augmentation.

    Args:
        batch_size: training batch size per process.
        eval_batch_size: validation/test batch size per process (default ``2 * batch_size``).
        num_workers: DataLoader worker processes (``persistent_workers`` when ``> 0``).
        seed: base seed of the training sampler (epoch ``e`` draws with ``seed + e``).
        augment: apply the train-time augmentation (crop/flip) during training.
        pin_memory: DataLoader ``pin_memory``.
        sampler: training sampler factory ``(train_labels, num_replicas, rank, seed) -> EpochSampler`` (see
            :data:`SamplerFactory`); ``None`` is instance-balanced. A ``ResamplingSchedule`` callback sets it.
        test_distribution: test-agnostic evaluation (SADE's protocol): test on the test set resampled to a
            ``"forward"`` long tail (head classes of training stay frequent), ``"uniform"`` or ``"backward"`` (reversed)
            distribution; ``None`` tests on the test set as it is.
        test_imbalance_ratio: the ratio ``n_max / n_min`` of the resampled test set (``>= 1``).
        views: augmented views of each training image (``>= 1``). With ``V > 1`` a training batch of ``B`` images
            becomes ``V * B`` images in view-major order (image ``i``'s views at ``i, B + i, ..., (V-1) B + i``)
            with the labels repeated ``V`` times: the two-view pipeline of contrastive representation learning
            (SupCon / KCL / PaCo, SimCLR pre-training). Evaluation batches are never repeated.
        view_augment: the train-time augmentation of each view: ``"standard"`` (the default: the random crop with
            ``crop_padding`` and the ``horizontal_flip`` of the class) or ``"simclr"``, the SimCLR / SupCon view
            recipe (Khosla et al. NeurIPS 2020, CIFAR): random resized crop with scale ``(0.2, 1)``, the flip if
            ``horizontal_flip``, colour jitter ``(0.4, 0.4, 0.4, 0.1)`` with ``p = 0.8``, grayscale with ``p = 0.2``
            (:func:`~lt_lightning.data.transforms.simclr_augment`; ``crop_padding`` is then unused). Any other string
            raises ``ValueError``.
        augment_policy: the strong recipe's policy after the crop and flip of ``"standard"`` views (unused with
            ``"simclr"``): ``"none"`` (the default), ``"autoaugment"`` (AutoAugment's CIFAR-10 policy, Cubuk et al.
            CVPR 2019) or ``"randaugment"`` (2 operations of magnitude 9 of 31, Cubuk et al. CVPR-W 2020), drawn per
            sample on the device (:mod:`lt_lightning.data.autoaugment`; ``configs/recipe/strong.yaml``).
        cutout: side of the Cutout square (DeVries & Taylor 2017) zeroed in each training image after the policy
            (``"standard"`` views only); ``0`` (the default) is none, 16 the CIFAR recipe.
        train_set_on_device: hold a copy of the training images and labels on the training device and index it
            there: the train loader then yields only each batch's indices (drawn by the same sampler, in the same
            order) and :meth:`transfer_batch_to_device` gathers ``images[idx]``, ``labels[idx]`` on the device, so a
            step copies no image from the host and never waits for a pageable host-to-device copy. The batches are
            those of the loader path, bit for bit. Needs an in-memory training set (a :class:`TensorImageDataset`;
            ``ValueError`` otherwise, when the train loader is built). Costs the training set's ``uint8`` size in
            device memory (CIFAR-10-LT: 38 MB). Default off.

    Attributes:
        num_classes: number of classes ``C``.
        class_counts: training images per class (length ``C``).
        class_names: a name per class.
        train_labels: ``[N_train]`` long tensor of training labels, in ``train_dataset`` order.
    """

    #: what ``predict`` runs on: ``"test"``, ``"val"``, ``"train"`` or a folder of images
    #: (:mod:`lt_lightning.data.predict_source`; the CLI's ``--prediction.source`` sets it)
    predict_source: str = "test"
    #: per-channel mean / std of the ``[0, 1]`` images (subclasses set these)
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    #: train-time augmentation: zero padding of the random crop (0 = no crop) and random horizontal flip
    crop_padding: int = 0
    horizontal_flip: bool = False

    num_classes: int
    class_counts: list[int]
    class_names: list[str]
    train_labels: Tensor

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = True,
        pin_memory: bool = False,
        sampler: SamplerFactory | None = None,
        test_distribution: Literal["forward", "uniform", "backward"] | None = None,
        test_imbalance_ratio: float = 1.0,
        views: int = 1,
        view_augment: str = "standard",
        train_set_on_device: bool = False,
        augment_policy: str = "none",
        cutout: int = 0,
    ) -> None:
        super().__init__()
        # the arguments as given (those of the subclass's __init__ too; the YAML values under the CLI), read by the
        # pre-stages fitted on the same data; not logged (the model's hparams are), the sampler factory not recorded
        self.save_hyperparameters(ignore=["sampler"], logger=False)
        self.views = check_int("views", views, minimum=1)
        self.view_augment = check_view_augment(view_augment)
        self.augment_policy = check_augment_policy(augment_policy)
        self.cutout = check_int("cutout", cutout, minimum=0)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1 or None, got {eval_batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size) if eval_batch_size is not None else 2 * self.batch_size
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.pin_memory = bool(pin_memory)
        if sampler is not None and not callable(sampler):
            raise ValueError(
                f"sampler must be a callable (labels, num_replicas, rank, seed) -> EpochSampler, got {sampler!r}"
            )
        self.sampler = sampler
        if test_distribution is not None:
            check_distribution(test_distribution, test_imbalance_ratio)
        self.test_distribution = test_distribution
        self.test_imbalance_ratio = float(test_imbalance_ratio)
        self._resampled_test: tuple[Dataset, Dataset] | None = None
        self.train_dataset: Dataset | None = None
        self._predict_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self._augmentation: DeviceAugmentation | None = None
        self.train_set_on_device = bool(train_set_on_device)
        self._device_train_set = DeviceTrainSet()

    # ------------------------------------------------------------------ class statistics
    def _set_class_info(
        self,
        train_labels: Sequence[int] | np.ndarray | Tensor,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        origin: str = "training labels",
    ) -> None:
        """Validate the training labels and set ``num_classes``, ``class_counts``, ``class_names``, ``train_labels``.

        Args:
            train_labels: ``[N]`` training labels in ``train_dataset`` order.
            num_classes: number of classes ``C``.
            class_names: ``C`` names (default ``"0" .. "C-1"``).
            origin: where the labels come from, used in error messages.

        Raises:
            ValueError: ``num_classes < 1``, a label outside ``[0, C)``, a class with no training image, or a
                wrong number of class names.
        """
        check_int("num_classes", num_classes, minimum=1, numpy=True)
        labels = check_labels(train_labels, int(num_classes), origin)
        counts = torch.bincount(labels, minlength=int(num_classes)).tolist()
        names = [str(c) for c in range(num_classes)] if class_names is None else [str(n) for n in class_names]
        if len(names) != num_classes:
            raise ValueError(f"class_names has {len(names)} entries but num_classes={num_classes}")
        empty = [c for c, n in enumerate(counts) if n == 0]
        if empty:
            c = empty[0]
            raise ValueError(
                f"class {c} ({names[c]!r}) has no training images in {origin}"
                + (f" ({len(empty)} empty classes: {empty[:10]})" if len(empty) > 1 else "")
            )
        self.num_classes = int(num_classes)
        self.class_counts = [int(n) for n in counts]
        self.class_names = names
        self.train_labels = labels

    # ------------------------------------------------------------------ distributed context
    def _world(self) -> tuple[int, int]:
        """``(num_replicas, rank)`` from the attached trainer, ``(1, 0)`` without one."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _sampler_epoch(self) -> int:
        """Epoch the train sampler must draw next (Lightning issue #21938: set it before workers start)."""
        trainer = self.trainer
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_progress.current.processed)

    def _require(self, name: str) -> Dataset:
        dataset = getattr(self, name)
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.{name} is not built: call setup() before asking for loaders")
        return dataset

    # ------------------------------------------------------------------ loaders
    def build_train_sampler(self) -> EpochSampler:
        """The training sampler ``self.sampler(train_labels, num_replicas, rank, seed)``; instance-balanced if None.

        Raises:
            TypeError: the factory returned something that is not an :class:`EpochSampler`.
        """
        num_replicas, rank = self._world()
        if self.sampler is None:
            return InstanceBalancedSampler(self.train_labels, num_replicas=num_replicas, rank=rank, seed=self.seed)
        sampler = self.sampler(self.train_labels, num_replicas, rank, self.seed)
        if not isinstance(sampler, EpochSampler):
            raise TypeError(
                f"sampler factory {self.sampler!r} returned {type(sampler).__name__}, expected an EpochSampler "
                "(seeded by seed + epoch and sharded by rank; see lt_lightning.data.samplers)"
            )
        return sampler

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int,
        sampler: torch.utils.data.Sampler,
        loader: type[DataLoader] = DataLoader,
        collate_fn: Callable[[Any], Any] = collate_image_batch,
    ) -> DataLoader:
        return loader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=False,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._require("train_dataset")
        if len(dataset) != self.train_labels.numel():  # type: ignore[arg-type]
            raise RuntimeError(
                f"train_dataset has {len(dataset)} samples but train_labels has {self.train_labels.numel()}"  # type: ignore[arg-type]
            )
        sampler = self.build_train_sampler()
        sampler.set_epoch(self._sampler_epoch())
        if self.train_set_on_device:
            if not isinstance(dataset, TensorImageDataset):
                raise ValueError(
                    f"train_set_on_device=True needs an in-memory training set (TensorImageDataset), but "
                    f"{type(self).__name__}.train_dataset is a {type(dataset).__name__}"
                )
            index_set = IndexDataset(len(dataset))
            loader = self._loader(index_set, self.batch_size, sampler, ResumableDataLoader, collate_indices)
        else:
            loader = self._loader(dataset, self.batch_size, sampler, ResumableDataLoader)
        loader.progress = self._trained_batches  # type: ignore[attr-defined]
        return loader

    def _trained_batches(self) -> int:
        """Batches of the current epoch whose training step ran (what a mid-epoch resume skips)."""
        trainer = self.trainer
        return 0 if trainer is None else int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def evaluation_test_dataset(self) -> Dataset:
        """The test set as tested: ``test_dataset``, or its test-agnostic resampling when ``test_distribution`` is set.

        The resampling (Zhang et al., SADE, NeurIPS 2022: forward-LT / uniform / backward-LT at
        ``test_imbalance_ratio``, classes ranked by training count) is
        :func:`~lt_lightning.data.test_agnostic.resample_test_dataset`, seeded with ``seed``.
        """
        dataset = self._require("test_dataset")
        if self.test_distribution is None:
            return dataset
        if self._resampled_test is None or self._resampled_test[0] is not dataset:
            resampled = resample_test_dataset(
                dataset,
                self.num_classes,
                self.test_distribution,  # type: ignore[arg-type]
                self.test_imbalance_ratio,
                self.class_counts,
                seed=self.seed,
            )
            self._resampled_test = (dataset, resampled)
        return self._resampled_test[1]

    def test_class_counts(self) -> list[int]:
        """Images per class of the test set as tested (after ``setup("test")``)."""
        return torch.bincount(dataset_labels(self.evaluation_test_dataset()), minlength=self.num_classes).tolist()

    def _eval_loader(self, name: str) -> DataLoader:
        dataset = self.evaluation_test_dataset() if name == "test_dataset" else self._require(name)
        num_replicas, rank = self._world()
        sampler = UnpaddedDistributedSampler(len(dataset), num_replicas=num_replicas, rank=rank)  # type: ignore[arg-type]
        return self._loader(dataset, self.eval_batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val_dataset")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test_dataset")

    def predict_dataloader(self) -> DataLoader:
        """The images of :attr:`predict_source` (:mod:`lt_lightning.data.predict_source`), each once, in order."""
        source = check_predict_source(self.predict_source)
        if source == "train":
            if self.train_dataset is None:
                self.setup("fit")
            self._predict_dataset = self._require("train_dataset")
            return self.train_eval_dataloader()  # the evaluation pipeline; same order as train_dataset
        if source in ("test", "val"):
            name = f"{source}_dataset"
            if getattr(self, name) is None:
                self.setup("test" if source == "test" else "validate")
            self._predict_dataset = self.evaluation_test_dataset() if source == "test" else self._require(name)
            return self._eval_loader(name)
        channels, height, width = self.predict_image_shape()
        paths = list_images(source)
        if not paths:
            raise ValueError(f"prediction source {source!r} holds no image file (extensions {IMAGE_EXTENSIONS})")
        dataset = PredictImageFolder(paths, channels, (height, width), getattr(self, "resize_size", None))
        self._predict_dataset = dataset
        num_replicas, rank = self._world()
        return self._loader(dataset, self.eval_batch_size, UnpaddedDistributedSampler(len(dataset), num_replicas, rank))

    def predict_image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the test images, the shape a folder's images are given for ``predict`` (from the first
        test image; datamodules that know it without loading an image may override this)."""
        if self.test_dataset is None:
            self.setup("test")
        image = self._require("test_dataset")[0][0]
        if not isinstance(image, Tensor) or image.dim() != 3:
            raise ValueError(f"{type(self).__name__}: test images must be [C, H, W] tensors to predict on a folder")
        return int(image.shape[0]), int(image.shape[1]), int(image.shape[2])

    def predict_items(self) -> tuple[list[str], Tensor | None]:
        """The ids (file paths where the dataset has ``paths``, else ``"<split>[i]"``) and the labels (``None`` for a
        folder) of the images :meth:`predict_dataloader` yields, indexed like its dataset."""
        dataset = self._predict_dataset
        if dataset is None:
            raise RuntimeError("predict_items() needs predict_dataloader() first")
        paths = getattr(dataset, "paths", None)
        ids = (
            [str(p) for p in paths]
            if paths is not None
            else [f"{self.predict_source}[{i}]" for i in range(len(dataset))]
        )
        labels = None if isinstance(dataset, PredictImageFolder) else dataset_labels(dataset)
        return ids, labels

    def train_eval_dataloader(self) -> DataLoader:
        """The training set for evaluation: every image once, in order, ``eval_batch_size``, no augmentation.

        Sharded like the evaluation loaders (an :class:`UnpaddedDistributedSampler`: process ``r`` gets
        ``range(r, N, world)``, nothing repeated), for statistics of the training features such as class means
        (NCM). Its batches get no augmentation from :meth:`on_after_batch_transfer` as long as the trainer is not
        training (``trainer.test`` / ``validate`` / ``predict``, or no trainer). Call :meth:`setup` first.

        A datamodule whose ``train_dataset`` augments on its own (a dataset with ``train = True``, e.g. an
        :class:`~lt_lightning.data.image_files.ImageFileDataset` with its random resized crop) must override this
        with a loader over the training images through its evaluation pipeline; otherwise a warning says that the
        images are augmented.
        """
        if getattr(self._require("train_dataset"), "train", False) is True:
            rank_zero_warn(
                f"{type(self).__name__}.train_eval_dataloader: train_dataset applies its training augmentation "
                "(train=True), so these 'evaluation' images are augmented; override train_eval_dataloader"
            )
        return self._eval_loader("train_dataset")

    # ------------------------------------------------------------------ device-side pipeline
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Lightning's transfer, except that a :class:`TrainIndices` batch (``train_set_on_device=True``) becomes
        ``[images[idx], labels[idx]]`` gathered from the device copy of the training set (made on first use, again
        when the training set or the device changes)."""
        if not isinstance(batch, TrainIndices):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        return self._device_train_set.gather(self._require("train_dataset"), batch, device)

    @property
    def augmentation(self) -> DeviceAugmentation:
        """The device pipeline built from ``mean``, ``std``, ``crop_padding``, ``horizontal_flip``,
        ``view_augment``, ``augment_policy`` and ``cutout``."""
        if self._augmentation is None:
            self._augmentation = DeviceAugmentation(
                self.mean,
                self.std,
                self.crop_padding,
                self.horizontal_flip,
                view_augment=self.view_augment,
                policy=self.augment_policy,
                cutout=self.cutout,
            )
        return self._augmentation

    def _views(self, images: Tensor, train: bool, views: int) -> Tensor:
        """``views`` independently augmented copies of ``images``, concatenated view-major."""
        return augment_views(self.augmentation, images, train, views)

    def _is_training(self) -> bool:
        trainer = self.trainer
        return bool(trainer is not None and trainer.training)

    def _seed_training_step(self) -> None:
        """Re-seed torch's global generators for this training batch from ``(seed, epoch, batch index, rank)``.

        Everything random on the device during a training step -- the crop/flip here, a random loss (equalization's
        β, KCL's positives), dropout -- then depends on the step, not on what ran before it, so a run resumed from any
        checkpoint draws what the uninterrupted run drew (Lightning does not restore the global RNG state), and DDP
        ranks draw differently. The batch index is the trainer's ``ready`` count, which Lightning increments right
        after this hook (``loops/training_epoch_loop.py``).
        """
        seed_training_step(self.seed, self.trainer)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``uint8 -> float``, train-time augmentation (training and ``augment`` only), normalisation.

        Each training batch first re-seeds the global generators (:meth:`_seed_training_step`).

        Accepts ``[images, labels, ...]`` (list/tuple) or a bare image tensor. Without a trainer the batch is
        treated as evaluation data (no augmentation).
        """
        training = self._is_training()
        if training:
            self._seed_training_step()
        train = self.augment and training
        views = self.views if training else 1
        return augment_batch(self.augmentation, batch, train, views)
