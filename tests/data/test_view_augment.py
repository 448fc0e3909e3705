"""SimCLR / SupCon view augmentation (``lt_lightning.data.transforms``: random resized crop, colour jitter, grayscale,
``DeviceAugmentation(view_augment="simclr")``) and the datamodule's ``view_augment`` argument, down to the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torchvision.transforms import functional as TF

from lt_lightning.backbones.base import Backbone
from lt_lightning.cli import run as main
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.data.transforms import CIFAR_MEAN, CIFAR_STD, DeviceAugmentation, normalize, random_horizontal_flip
from lt_lightning.data.views import (
    _adjust_hue,
    color_jitter,
    random_grayscale,
    random_resized_crop,
    resized_crop,
    sample_crop_boxes,
    simclr_augment,
)
from lt_lightning.experiments import experiment_args
from lt_lightning.module import LongTailModule

REPO = Path(__file__).resolve().parents[2]
DIGITS_SUPCON = experiment_args("digits_lt", "supcon")


def _rand(b: int = 8, c: int = 3, h: int = 12, w: int = 12, seed: int = 0) -> Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- colour jitter
def test_brightness_scales_a_constant_image_and_clamps() -> None:
    x = torch.full((2, 3, 4, 4), 0.4)
    assert torch.allclose(color_jitter(x, brightness=(1.5, 1.5), p=1.0), torch.full_like(x, 0.6))
    assert torch.equal(color_jitter(x, brightness=(3.0, 3.0), p=1.0), torch.ones_like(x))  # 1.2 clamped to 1
    assert torch.allclose(color_jitter(x, brightness=(0.5, 0.5), p=1.0), torch.full_like(x, 0.2))


def _red_and_blue() -> Tensor:
    """One 1x2 image: a pure red pixel (luma 0.299) and a pure blue one (luma 0.114)."""
    x = torch.zeros(1, 3, 1, 2)
    x[0, 0, 0, 0] = 1.0
    x[0, 2, 0, 1] = 1.0
    return x


def test_contrast_zero_gives_the_mean_luma_everywhere() -> None:
    out = color_jitter(_red_and_blue(), contrast=(0.0, 0.0), p=1.0)
    assert torch.allclose(out, torch.full((1, 3, 1, 2), (0.299 + 0.114) / 2))  # 0.2065
    # contrast 2 on the same image: 2 x - m, clamped: red channel of the red pixel 2 - 0.2065 -> 1, zeros -> 0
    out = color_jitter(_red_and_blue(), contrast=(2.0, 2.0), p=1.0)
    assert torch.allclose(out, _red_and_blue())
    # a gray (1-channel) image blends with its own mean
    gray = torch.tensor([[[[0.2, 0.6]]]])
    assert torch.allclose(color_jitter(gray, contrast=(0.0, 0.0), p=1.0), torch.full_like(gray, 0.4))


def test_saturation_zero_gives_the_luma_per_pixel() -> None:
    out = color_jitter(_red_and_blue(), saturation=(0.0, 0.0), p=1.0)
    expected = torch.tensor([0.299, 0.114]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert torch.allclose(out, expected)
    # 1-channel images have no saturation or hue (as PIL): unchanged
    gray = _rand(c=1)
    assert torch.equal(color_jitter(gray, saturation=(0.0, 0.0), hue=(0.3, 0.3), p=1.0), gray)


def test_hue_shift_zero_is_identity_and_a_third_turns_red_into_green() -> None:
    x = _rand(b=4)
    assert torch.allclose(_adjust_hue(x, torch.zeros(4)), x, atol=1e-6)
    pixels = torch.eye(3).view(3, 3, 1, 1)  # red, green, blue
    out = color_jitter(pixels, hue=(1 / 3, 1 / 3), p=1.0)
    assert torch.allclose(out, pixels[[1, 2, 0]], atol=1e-6)  # red -> green, green -> blue, blue -> red
    back = color_jitter(pixels, hue=(-1 / 3, -1 / 3), p=1.0)
    assert torch.allclose(back, pixels[[2, 0, 1]], atol=1e-6)
    # half a turn: red -> cyan; gray pixels have no hue and stay
    half = _adjust_hue(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1), torch.tensor([0.5]))
    assert torch.allclose(half.flatten(), torch.tensor([0.0, 1.0, 1.0]), atol=1e-6)
    gray = torch.full((1, 3, 2, 2), 0.3)
    assert torch.allclose(_adjust_hue(gray, torch.tensor([0.25])), gray)


@pytest.mark.parametrize(
    ("kwargs", "reference"),
    [
        ({"brightness": (1.3, 1.3)}, lambda img: TF.adjust_brightness(img, 1.3)),
        ({"contrast": (0.6, 0.6)}, lambda img: TF.adjust_contrast(img, 0.6)),
        ({"saturation": (1.4, 1.4)}, lambda img: TF.adjust_saturation(img, 1.4)),
        ({"hue": (0.2, 0.2)}, lambda img: TF.adjust_hue(img, 0.2)),
        ({"hue": (-0.45, -0.45)}, lambda img: TF.adjust_hue(img, -0.45)),
    ],
)
def test_each_jitter_operation_matches_torchvision(kwargs, reference) -> None:
    x = _rand(b=3)
    out = color_jitter(x, **kwargs, p=1.0)
    for i in range(3):  # torchvision's tensor luma uses 0.2989 for red, ours PIL's 0.299: up to ~1e-4 apart
        assert torch.allclose(out[i], reference(x[i]), atol=2e-4)


def _torchvision_jitter(x: Tensor, ranges: list[tuple[float, float]], p: float, seed: int) -> Tensor:
    """RandomApply([ColorJitter], p) with torchvision's functional ops, one image at a time, on the documented draws
    of the same seed: a [B] factor per operation (brightness, contrast, saturation, hue), [B, 4] order keys, [B]
    apply draws."""
    g = _g(seed)
    factors = [lo + (hi - lo) * torch.rand(x.shape[0], generator=g) for lo, hi in ranges]
    order = torch.argsort(torch.rand(x.shape[0], 4, generator=g), dim=1)
    apply = torch.rand(x.shape[0], generator=g) < p
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    out = x.clone()
    for i in range(x.shape[0]):
        if apply[i]:
            for op in order[i].tolist():
                out[i] = ops[op](out[i], float(factors[op][i]))
    return out


def test_color_jitter_matches_torchvision_image_by_image() -> None:
    """The SimCLR jitter (0.4, 0.4, 0.4, 0.1), p = 0.8, against a per-image loop of torchvision's operations in each
    image's own order (torchvision's luma uses 0.2989 for red, ours 0.299: a few 1e-4 apart at most)."""
    x = _rand(b=48, h=6, w=6, seed=3)
    out = color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.8, generator=_g(21))
    expected = _torchvision_jitter(x, [(0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1)], 0.8, seed=21)
    assert torch.allclose(out, expected, atol=5e-4)  # 9e-5 seen
    assert (out - expected).abs().mean() < 5e-5
    assert not torch.allclose(out, x)


def test_order_of_the_four_operations_is_drawn_per_sample() -> None:
    """Half the pixels 0.2, half 0.6 (gray). Brightness 2 then contrast 0: mean(clamp(0.4, 1.2)) = 0.7; contrast 0
    then brightness 2: 2 * 0.4 = 0.8. A batch of 64 holds both orders."""
    x = torch.full((64, 3, 2, 2), 0.2)
    x[:, :, 1] = 0.6
    out = color_jitter(x, brightness=(2.0, 2.0), contrast=(0.0, 0.0), p=1.0, generator=_g(1))
    per_sample = out.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample))  # each image constant
    values = per_sample[:, 0]
    first = torch.isclose(values, torch.tensor(0.7))
    second = torch.isclose(values, torch.tensor(0.8))
    assert bool((first | second).all()) and bool(first.any()) and bool(second.any())


def test_jitter_probability_applies_per_sample() -> None:
    x = torch.full((200, 3, 1, 1), 0.4)
    assert torch.equal(color_jitter(x, brightness=(2.0, 2.0), p=0.0), x)
    out = color_jitter(x, brightness=(2.0, 2.0), p=0.8, generator=_g(2)).flatten(1)[:, 0]
    changed = torch.isclose(out, torch.tensor(0.8))
    assert bool((changed | (out == 0.4)).all())
    assert 0.65 < changed.float().mean().item() < 0.95  # about 80 % of 200 (binomial sd 2.8 %)


# ---------------------------------------------------------------------------------------------- grayscale
def test_random_grayscale_p_one_and_zero() -> None:
    x = _red_and_blue().repeat(3, 1, 1, 1)
    gray = random_grayscale(x, p=1.0)
    assert torch.allclose(gray, torch.tensor([0.299, 0.114]).view(1, 1, 1, 2).expand(3, 3, 1, 2))
    assert torch.equal(random_grayscale(x, p=0.0), x)
    one_channel = _rand(c=1)
    assert torch.equal(random_grayscale(one_channel, p=1.0), one_channel)
    half = random_grayscale(_rand(b=200), p=0.5, generator=_g(3))
    is_gray = (half[:, 0] == half[:, 1]).flatten(1).all(1) & (half[:, 1] == half[:, 2]).flatten(1).all(1)
    assert 0.35 < is_gray.float().mean().item() < 0.65


# ---------------------------------------------------------------------------------------------- random resized crop
def test_resized_crop_of_the_whole_image_is_the_identity() -> None:
    x = _rand(b=4, h=9, w=9)
    out = random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=_g())
    assert out.shape == x.shape and torch.allclose(out, x, atol=1e-5)
    x8 = (x * 255).round().to(torch.uint8)  # uint8 is accepted and rounded back to uint8
    out8 = random_resized_crop(x8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert out8.dtype == torch.uint8 and torch.equal(out8, x8)


def test_fallback_box_and_bilinear_resize_by_hand() -> None:
    """scale = ratio = (.., 2): every candidate is 11 x 6 (w = round(sqrt(64 * 2))), too wide for 8 x 8, so the
    fallback is torchvision's: w = 8, h = round(8 / 2) = 4, centred (top 2). Rows of value i resized 4 -> 8:
    source row (o + 1/2) / 2 - 1/2 clamped to [0, 3], plus 2."""
    boxes = sample_crop_boxes(3, 8, 8, scale=(1.0, 1.0), ratio=(2.0, 2.0), generator=_g())
    assert boxes.tolist() == [[2, 0, 4, 8]] * 3
    x = torch.arange(8.0).view(1, 1, 8, 1).expand(3, 2, 8, 8).contiguous()
    out = random_resized_crop(x, scale=(1.0, 1.0), ratio=(2.0, 2.0))
    rows = torch.tensor([2.0, 2.25, 2.75, 3.25, 3.75, 4.25, 4.75, 5.0])
    assert torch.allclose(out, rows.view(1, 1, 8, 1).expand_as(out))


def _torchvision_boxes(b: int, height: int, width: int, scale, ratio, seed: int) -> list[list[int]]:
    """torchvision's RandomResizedCrop.get_params, one sample at a time, on the documented draws of the same seed
    (areas [B, 10], log ratios [B, 10], top [B], left [B])."""
    g = _g(seed)
    area_u = torch.rand(b, 10, generator=g)
    ratio_u = torch.rand(b, 10, generator=g)
    top_u, left_u = torch.rand(b, generator=g), torch.rand(b, generator=g)
    boxes = []
    for i in range(b):
        for t in range(10):
            target = height * width * (scale[0] + (scale[1] - scale[0]) * float(area_u[i, t]))
            log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * float(ratio_u[i, t])
            w = round(math.sqrt(target * math.exp(log_r)))
            h = round(math.sqrt(target / math.exp(log_r)))
            if 0 < w <= width and 0 < h <= height:
                top = min(int(float(top_u[i]) * (height - h + 1)), height - h)
                left = min(int(float(left_u[i]) * (width - w + 1)), width - w)
                boxes.append([top, left, h, w])
                break
        else:  # torchvision's centre fallback
            if width / height < ratio[0]:
                w, h = width, round(width / ratio[0])
            elif width / height > ratio[1]:
                w, h = round(height * ratio[1]), height
            else:
                w, h = width, height
            boxes.append([(height - h) // 2, (width - w) // 2, h, w])
    return boxes


@pytest.mark.parametrize(("height", "width", "scale"), [(32, 32, (0.2, 1.0)), (10, 24, (0.5, 1.0)), (6, 6, (0.05, 1))])
def test_crop_boxes_are_the_first_valid_of_ten_candidates(height: int, width: int, scale) -> None:
    ratio = (3 / 4, 4 / 3)
    boxes = sample_crop_boxes(64, height, width, scale, ratio, generator=_g(5))
    expected = _torchvision_boxes(64, height, width, scale, ratio, seed=5)  # 10 x 24: some fall back (13 x 10)
    # float32 here, float64 in the loop: a rounding tie may flip one size in a rare sample
    agree = sum(row == exp for row, exp in zip(boxes.tolist(), expected, strict=True))
    assert agree >= 63
    top, left, h, w = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1)).all())
    assert bool(((top + h <= height) & (left + w <= width)).all())
    assert len({tuple(r) for r in boxes.tolist()}) > 10  # per-sample boxes


def test_resized_crop_matches_torchvision_per_sample() -> None:
    x = _rand(b=6, h=16, w=20)
    boxes = sample_crop_boxes(6, 16, 20, generator=_g(4))
    out = resized_crop(x, boxes)
    for i in range(6):
        top, left, h, w = boxes[i].tolist()
        assert torch.allclose(out[i], TF.resized_crop(x[i], top, left, h, w, [16, 20], antialias=True), atol=1e-5)


# ---------------------------------------------------------------------------------------------- the whole view
def test_simclr_views_stay_in_range_differ_per_sample_and_follow_the_generator() -> None:
    x = _rand(b=1, h=16, w=16).expand(32, 3, 16, 16).contiguous()  # one image 32 times
    out = simclr_augment(x, generator=_g(7))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    distinct = {tuple(v.flatten().tolist()) for v in out}
    assert len(distinct) == 32  # each sample drew its own crop / jitter
    assert torch.equal(out, simclr_augment(x, generator=_g(7)))  # same seed, same views
    assert not torch.equal(out, simclr_augment(x, generator=_g(8)))
    for extreme in (torch.zeros_like(x), torch.ones_like(x)):
        y = simclr_augment(extreme, generator=_g(9))
        assert y.min() >= 0.0 and y.max() <= 1.0
    uint8 = simclr_augment((x * 255).to(torch.uint8), generator=_g(7))
    assert uint8.dtype == torch.float32 and uint8.min() >= 0.0 and uint8.max() <= 1.0
    gray = simclr_augment(x[:, :1], flip=False, generator=_g(7))  # 1 channel: crop, brightness, contrast
    assert gray.shape == (32, 1, 16, 16) and gray.min() >= 0.0 and gray.max() <= 1.0
    for fn in (
        lambda g: random_resized_crop(x, generator=g),
        lambda g: color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.8, generator=g),
        lambda g: random_grayscale(x, 0.5, generator=g),
    ):
        assert torch.equal(fn(_g(11)), fn(_g(11)))


def test_device_augmentation_simclr_is_the_recipe_then_normalisation() -> None:
    x = (_rand(b=16, h=8, w=8) * 255).round().to(torch.uint8)
    aug = DeviceAugmentation(CIFAR_MEAN, CIFAR_STD, padding=4, flip=True, view_augment="simclr")
    out = aug(x, train=True, generator=_g(12))
    g = _g(12)
    manual = random_resized_crop(x.float() / 255, (0.2, 1.0), generator=g)
    manual = random_horizontal_flip(manual, 0.5, g)
    manual = color_jitter(manual, 0.4, 0.4, 0.4, 0.1, p=0.8, generator=g)
    manual = random_grayscale(manual, 0.2, generator=g)
    assert torch.allclose(out, normalize(manual, CIFAR_MEAN, CIFAR_STD))
    standard = DeviceAugmentation(CIFAR_MEAN, CIFAR_STD, padding=4, flip=True)
    assert torch.equal(aug(x), standard(x))  # evaluation is the same for both
    explicit = DeviceAugmentation(CIFAR_MEAN, CIFAR_STD, padding=4, flip=True, view_augment="standard")
    assert torch.equal(explicit(x, train=True, generator=_g(1)), standard(x, train=True, generator=_g(1)))
    assert "view_augment='simclr'" in repr(aug)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: random_resized_crop(x, scale=(0.0, 1.0)), "scale must satisfy"),
        (lambda x: random_resized_crop(x, scale=(0.5, 1.5)), "scale must satisfy"),
        (lambda x: random_resized_crop(x, scale=(0.8, 0.2)), "scale must satisfy"),
        (lambda x: random_resized_crop(x, scale=(0.5,)), "scale must be a pair"),
        (lambda x: random_resized_crop(x, ratio=(4 / 3, 3 / 4)), "ratio must be positive and increasing"),
        (lambda x: random_resized_crop(x, ratio=(0.0, 1.0)), "ratio must be positive and increasing"),
        (lambda x: color_jitter(x, brightness=-0.1), "brightness must be a finite number >= 0"),
        (lambda x: color_jitter(x, contrast=-1.0), "contrast must be a finite number >= 0"),
        (lambda x: color_jitter(x, saturation=(0.5, 0.2)), "saturation as a"),
        (lambda x: color_jitter(x, saturation=(-0.5, 1.0)), "saturation as a"),
        (lambda x: color_jitter(x, hue=0.6), r"hue must be in \[0, 0.5\]"),
        (lambda x: color_jitter(x, hue=-0.1), r"hue must be in \[0, 0.5\]"),
        (lambda x: color_jitter(x, hue=(-0.6, 0.1)), "hue as a"),
        (lambda x: color_jitter(x, 0.4, p=1.5), r"p must be a probability in \[0, 1\]"),
        (lambda x: color_jitter(x, 0.4, p=-0.1), r"p must be a probability in \[0, 1\]"),
        (lambda x: color_jitter((x * 255).to(torch.uint8), 0.4), "needs a floating point batch"),
        (lambda x: color_jitter(x.repeat(1, 2, 1, 1), 0.4), "1- or 3-channel"),
        (lambda x: random_grayscale(x, p=2.0), r"p must be a probability in \[0, 1\]"),
        (lambda x: random_grayscale(x[:, :2], p=0.5), "1- or 3-channel"),
        (lambda x: resized_crop(x, torch.zeros(2, 4)), r"boxes must be \[B, 4\]"),
        (lambda x: DeviceAugmentation((0.5,), (0.5,), view_augment="SimCLR"), "view_augment must be one of"),
    ],
)
def test_bad_arguments_raise_value_error(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call(_rand(b=4, h=6, w=6))


# ---------------------------------------------------------------------------------------------- datamodule and CLI
class _Flat(Backbone):
    def __init__(self, in_features: int = 3 * 8 * 8) -> None:
        super().__init__()
        self.num_features = 4
        self.proj = nn.Linear(in_features, 4)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.proj(x.flatten(1))


class _Record(L.Callback):
    def __init__(self) -> None:
        self.batches: list[tuple[Tensor, Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append((batch[0].detach().clone(), batch[1].detach().clone()))


def _fit_batches(tmp: Path, **kwargs) -> tuple[SyntheticLTDataModule, list[tuple[Tensor, Tensor]]]:
    dm = SyntheticLTDataModule(num_classes=3, n_max=16, imbalance_ratio=2, image_size=8, batch_size=8, seed=1, **kwargs)
    dm.crop_padding, dm.horizontal_flip = 1, True
    L.seed_everything(0, verbose=False)
    model = LongTailModule(_Flat(), num_classes=dm.num_classes, class_counts=dm.class_counts)
    record = _Record()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        callbacks=[record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
    )
    trainer.fit(model, datamodule=dm)
    return dm, record.batches


def test_datamodule_simclr_two_views_differ(tmp_path: Path) -> None:
    dm, batches = _fit_batches(tmp_path, views=2, view_augment="simclr")
    assert dm.augmentation.view_augment == "simclr" and len(batches) == 2
    for images, labels in batches:
        assert images.shape == (16, 3, 8, 8)  # [2B, C, H, W], view-major
        assert torch.equal(labels[:8], labels[8:])
        assert not torch.allclose(images[:8], images[8:])
    _, standard = _fit_batches(tmp_path, views=2)
    assert not torch.allclose(batches[0][0], standard[0][0])  # the simclr views are not the crop + flip ones


def test_datamodule_standard_is_the_default_pipeline_exactly(tmp_path: Path) -> None:
    default_dm, default = _fit_batches(tmp_path, views=2)
    standard_dm, standard = _fit_batches(tmp_path, views=2, view_augment="standard")
    assert default_dm.view_augment == standard_dm.view_augment == "standard"
    for (a, la), (b, lb) in zip(default, standard, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_datamodule_rejects_unknown_view_augment() -> None:
    with pytest.raises(ValueError, match="view_augment must be one of 'standard', 'simclr', got 'randaugment'"):
        SyntheticLTDataModule(view_augment="randaugment")
    with pytest.raises(ValueError, match="view_augment must be one of"):
        SyntheticLTDataModule(view_augment=None)  # type: ignore[arg-type]


def test_cli_fit_digits_supcon_with_simclr_views(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main(
        [
            "fit",
            *DIGITS_SUPCON,
            "--data.init_args.view_augment=simclr",
            "--trainer.fast_dev_run=true",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert cli.datamodule.view_augment == "simclr"
    assert cli.datamodule.augmentation.view_augment == "simclr" and not cli.datamodule.augmentation.flip
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
