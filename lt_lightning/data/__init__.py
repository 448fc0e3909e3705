"""Long-tailed datamodules, samplers, profiles and device-side transforms."""

from lt_lightning.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.digits import DigitsLTDataModule
from lt_lightning.data.folder import ImageFolderLTDataModule
from lt_lightning.data.image_datamodule import IMAGENET_MEAN, IMAGENET_STD, ImageFileDataModule
from lt_lightning.data.image_dataset import ImageFileDataset
from lt_lightning.data.image_decoding import UnreadableImageError
from lt_lightning.data.profiles import long_tail_counts, select_long_tail_indices
from lt_lightning.data.resampling import (
    ClassAwareSampler,
    ClassBalancedSampler,
    ClassPowerSampler,
    DeferredResampler,
    ProgressiveSampler,
    SquareRootSampler,
)
from lt_lightning.data.samplers import EpochSampler, InstanceBalancedSampler, UnpaddedDistributedSampler
from lt_lightning.data.split_file import parse_split_file
from lt_lightning.data.split_file_datamodule import SplitFileDataModule
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.data.tensor_dataset import (
    ImageBatch,
    TensorImageDataset,
    TrainIndices,
    check_labels,
    collate_image_batch,
)
from lt_lightning.data.transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    DeviceAugmentation,
    normalize,
    random_crop_with_padding,
    random_horizontal_flip,
    to_float,
)

__all__ = [
    "ClassAwareSampler",
    "ClassBalancedSampler",
    "ClassPowerSampler",
    "DeferredResampler",
    "ProgressiveSampler",
    "SquareRootSampler",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFileDataModule",
    "ImageFileDataset",
    "ImageFolderLTDataModule",
    "SplitFileDataModule",
    "UnreadableImageError",
    "parse_split_file",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "CIFAR10LTDataModule",
    "CIFAR100LTDataModule",
    "DeviceAugmentation",
    "DigitsLTDataModule",
    "EpochSampler",
    "ImageBatch",
    "InstanceBalancedSampler",
    "LongTailDataModule",
    "SyntheticLTDataModule",
    "TensorImageDataset",
    "TrainIndices",
    "UnpaddedDistributedSampler",
    "check_labels",
    "collate_image_batch",
    "long_tail_counts",
    "normalize",
    "random_crop_with_padding",
    "random_horizontal_flip",
    "select_long_tail_indices",
    "to_float",
]
