"""The strong recipe's batched augmentations (lt_lightning/data/autoaugment.py): each operation against torchvision's
kernel and against hand-computed pixels, the policies' per-sample draws replayed through torchvision, Cutout's square,
determinism per generator, the default pipeline left as it was, and a run resumed exactly with the overlay."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from lt_lightning.cli import run
from lt_lightning.data import autoaugment as A
from lt_lightning.data.transforms import (
    DeviceAugmentation,
    normalize,
    random_crop_with_padding,
    random_horizontal_flip,
    to_float,
)
from tests.helpers import assert_equal_states

REPO = Path(__file__).resolve().parents[2]
NEAREST = F.InterpolationMode.NEAREST


def _torchvision(img: torch.Tensor, name: str, m: float, fill: int = A.FILL) -> torch.Tensor:
    """torchvision's kernel of AutoAugment's operation ``name`` at the signed magnitude ``m`` on one image, with the
    arguments of ``torchvision.transforms.v2.AutoAugment._apply_image_or_video_transform``."""
    fill_ = [float(fill)] * img.shape[0]
    affine = {"angle": 0.0, "scale": 1.0, "interpolation": NEAREST, "fill": fill_}
    if name == "ShearX":
        return F.affine(img, translate=[0, 0], shear=[math.degrees(math.atan(m)), 0.0], center=[0, 0], **affine)
    if name == "ShearY":
        return F.affine(img, translate=[0, 0], shear=[0.0, math.degrees(math.atan(m))], center=[0, 0], **affine)
    if name == "TranslateX":
        return F.affine(img, translate=[int(m), 0], shear=[0.0, 0.0], **affine)
    if name == "TranslateY":
        return F.affine(img, translate=[0, int(m)], shear=[0.0, 0.0], **affine)
    kernels = {
        "Identity": lambda: img,
        "Rotate": lambda: F.rotate(img, m, interpolation=NEAREST, fill=fill_),
        "Brightness": lambda: F.adjust_brightness(img, 1.0 + m),
        "Color": lambda: F.adjust_saturation(img, 1.0 + m),
        "Contrast": lambda: F.adjust_contrast(img, 1.0 + m),
        "Sharpness": lambda: F.adjust_sharpness(img, 1.0 + m),
        "Posterize": lambda: F.posterize(img, int(m)),
        "Solarize": lambda: F.solarize(img, 255.0 * m),
        "AutoContrast": lambda: F.autocontrast(img),
        "Equalize": lambda: F.equalize(img),
        "Invert": lambda: F.invert(img),
    }
    return kernels[name]()


def _images(b: int = 16, channels: int = 3, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (b, channels, size, size), generator=g, dtype=torch.uint8)
    x[1] = 7  # a flat image (AutoContrast / Equalize leave it)
    x[2] = x[2] // 2 + 40  # a low-contrast one
    return x


@pytest.mark.parametrize("name", A.OPERATIONS)
@pytest.mark.parametrize("channels", [3, 1])
def test_each_operation_is_torchvisions_kernel_at_every_bin(name: str, channels: int) -> None:
    x = _images(channels=channels)
    for level in range(10):
        m = A.operation_magnitude(name, level, 10, 32, 32)
        for sign in (1.0, -1.0) if name in A._SIGNED else (1.0,):
            ops = torch.full((x.shape[0],), A.OPERATIONS.index(name))
            ours = A.apply_operations(x, ops, torch.full((x.shape[0],), sign * m, dtype=torch.float64))
            expected = torch.stack([_torchvision(img, name, sign * m) for img in x])
            assert torch.equal(ours, expected), (name, level, sign)


def test_operations_by_hand() -> None:
    x = torch.tensor([[[[10, 100, 183], [200, 250, 0]]]], dtype=torch.uint8)  # [1, 1, 2, 3]
    index = A.OPERATIONS.index

    def op(name: str, m: float) -> list:
        return A.apply_operations(x, torch.tensor([index(name)]), torch.tensor([m], dtype=torch.float64))[0, 0].tolist()

    # Brightness m = 0.5: trunc(clamp(1.5 x, 0, 255))
    assert op("Brightness", 0.5) == [[15, 150, 255], [255, 255, 0]]
    # Posterize 4 bits: x & 0b11110000 (183 = 0b10110111 -> 0b10110000 = 176)
    assert op("Posterize", 4.0) == [[0, 96, 176], [192, 240, 0]]
    # Solarize m = 0.5: 255 - x where x >= 127.5
    assert op("Solarize", 0.5) == [[10, 100, 72], [55, 5, 0]]
    # TranslateX by 1 pixel: the image moves right, the first column is the fill 128
    assert op("TranslateX", 1.0) == [[128, 10, 100], [128, 200, 250]]
    # Invert; AutoContrast (min 0, max 250): x / float32(250 / 255) truncated -- 100 / 0.98039216 = 101.99999 -> 101
    assert op("Invert", 0.0) == [[245, 155, 72], [55, 5, 255]]
    assert op("AutoContrast", 0.0) == [[10, 101, 186], [203, 254, 0]]


def _replay_autoaugment(x: torch.Tensor, seed: int) -> torch.Tensor:
    """torchvision's AutoAugment(CIFAR10) per image with the draws of :func:`autoaugment` replayed from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    b = x.shape[0]
    k = torch.randint(0, len(A.CIFAR10_POLICY), (b,), generator=g)
    u, v = torch.rand((b, 2), generator=g), torch.rand((b, 2), generator=g)
    out = []
    for i, img in enumerate(x):
        for slot, (name, p, level) in enumerate(A.CIFAR10_POLICY[int(k[i])]):
            if not u[i, slot] <= torch.tensor(p, dtype=torch.float32):
                continue
            m = 0.0 if level is None else A.operation_magnitude(name, level, 10, 32, 32)
            if name in A._SIGNED and v[i, slot] <= 0.5:
                m = -m
            img = _torchvision(img, name, m)
        out.append(img)
    return torch.stack(out)


def test_autoaugment_applies_each_samples_own_draws_as_torchvision() -> None:
    x = _images(64)
    ours = A.autoaugment(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ours, _replay_autoaugment(x, 3))


def test_randaugment_applies_each_samples_own_draws_as_torchvision() -> None:
    x = _images(64)
    ours = A.randaugment(x, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    choice = torch.randint(0, len(A.RANDAUGMENT_OPS), (64, 2), generator=g)
    v = torch.rand((64, 2), generator=g)
    expected = []
    for i, img in enumerate(x):
        for j in range(2):
            name = A.RANDAUGMENT_OPS[int(choice[i, j])]
            m = A.operation_magnitude(name, 9, 31, 32, 32)
            img = _torchvision(img, name, -m if name in A._SIGNED and v[i, j] <= 0.5 else m)
        expected.append(img)
    assert torch.equal(ours, torch.stack(expected))


def test_cutout_zeroes_one_clipped_square_per_sample() -> None:
    x = torch.full((8, 3, 6, 6), 9, dtype=torch.uint8)
    out = A.cutout(x, 4, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    cy, cx = torch.randint(0, 6, (8,), generator=g), torch.randint(0, 6, (8,), generator=g)
    for i in range(8):
        expected = torch.full((3, 6, 6), 9, dtype=torch.uint8)
        y0, y1 = max(int(cy[i]) - 2, 0), min(int(cy[i]) + 2, 6)
        x0, x1 = max(int(cx[i]) - 2, 0), min(int(cx[i]) + 2, 6)
        expected[:, y0:y1, x0:x1] = 0
        assert torch.equal(out[i], expected)
    assert len({tuple(o[0].flatten().tolist()) for o in out}) > 1  # the squares differ between samples
    assert torch.equal(A.cutout(x, 0), x)
    assert int(A.cutout(x, 12, generator=torch.Generator().manual_seed(0)).max()) == 0  # covers every image
    with pytest.raises(ValueError, match="size must be"):
        A.cutout(x, -1)


def test_same_generator_same_batch_and_samples_differ() -> None:
    x = _images(4)[:1].expand(64, -1, -1, -1).contiguous()  # one image, 64 times
    aug = DeviceAugmentation((0.5,) * 3, (0.5,) * 3, padding=4, flip=True, policy="autoaugment", cutout=16)
    a = aug(x, train=True, generator=torch.Generator().manual_seed(0))
    b = aug(x, train=True, generator=torch.Generator().manual_seed(0))
    c = aug(x, train=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(img.flatten().tolist()) for img in a}) > 48  # per-sample parameters, not one set per call
    torch.manual_seed(7)  # the global RNG (what the datamodule re-seeds per training step) drives it just the same
    d = aug(x, train=True)
    torch.manual_seed(7)
    assert torch.equal(d, aug(x, train=True))


def test_default_pipeline_is_unchanged() -> None:
    x = _images(16)
    aug = DeviceAugmentation((0.5,) * 3, (0.25,) * 3, padding=4, flip=True)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    out = aug(x, train=True, generator=g1)
    expected = normalize(to_float(random_horizontal_flip(random_crop_with_padding(x, 4, g2), 0.5, g2)), (0.5,) * 3,
                         (0.25,) * 3)  # fmt: skip
    assert torch.equal(out, expected) and torch.equal(g1.get_state(), g2.get_state())  # no extra draw
    assert "policy" not in repr(aug)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="augment_policy must be one of"):
        DeviceAugmentation((0.5,), (0.5,), policy="autoaugment_cifar100")
    with pytest.raises(ValueError, match="cutout must be"):
        DeviceAugmentation((0.5,), (0.5,), cutout=-2)
    with pytest.raises(ValueError, match="needs uint8"):
        DeviceAugmentation((0.5,), (0.5,), policy="randaugment")(torch.rand(2, 1, 8, 8), train=True)
    with pytest.raises(ValueError, match="magnitude must be"):
        A.randaugment(_images(4), magnitude=31)
    with pytest.raises(ValueError, match="num_ops must be"):
        A.randaugment(_images(4), num_ops=-1)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        A.autoaugment(torch.zeros(2, 2, 8, 8, dtype=torch.uint8))


STRONG = str(REPO / "configs" / "recipe" / "strong.yaml")


def test_strong_overlay_resumes_exactly(tiny_cifar10: Path, tmp_path: Path, monkeypatch) -> None:
    """The policy's draws come from the per-step re-seeding: a run killed after its first epoch and resumed ends with
    the weights of the run that never stopped."""
    monkeypatch.chdir(tmp_path)
    args = ["-c", str(REPO / "configs/data/cifar10_lt.yaml"), "-c", str(REPO / "configs/method/ce.yaml"), "-c", STRONG]
    args += ["--data.init_args.root", str(tiny_cifar10), "--data.init_args.val_per_class", "1"]
    args += ["--data.init_args.batch_size", "16", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches"]
    args += ["1", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.accelerator", "cpu"]
    args += ["--trainer.max_epochs", "2"]
    full = run(["fit", *args, "--trainer.default_root_dir", "full"])
    assert full.datamodule.augmentation.policy == "autoaugment" and full.datamodule.augmentation.cutout == 16
    run(["fit", *args, "--trainer.max_steps", "2", "--trainer.default_root_dir", "part"])
    ckpt = next((tmp_path / "part").rglob("last.ckpt"))
    resumed = run(["fit", *args, "--trainer.default_root_dir", "part2", "--ckpt_path", str(ckpt)])
    assert_equal_states(full.model.state_dict(), resumed.model.state_dict())
