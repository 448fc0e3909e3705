"""Foundation-model backbones and LIFT (Shi et al., ICML 2024) without downloads.

A tiny CLIP (open_clip built from a model config dict, random weights) and a timm ViT (random weights) are saved to
files and loaded through ``pretrained: <path>`` / ``checkpoint_path``, the code path users take; the CLI fits and
tests the Digits-LT LIFT config; trainable-parameter counts per PEFT method are checked against hand counts.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("open_clip")

import open_clip  # noqa: E402

from lt_lightning.backbones.clip import CLIPVisualBackbone, build_clip  # noqa: E402
from lt_lightning.backbones.crops import TestTimeCrops, five_crops  # noqa: E402
from lt_lightning.backbones.peft import VPT, AdaptFormer, BitFit, FullFineTuning, LinearProbe, LoRA  # noqa: E402
from lt_lightning.backbones.timm_backbone import TimmBackbone  # noqa: E402
from lt_lightning.callbacks.text_classifier_init import TextClassifierInit  # noqa: E402
from lt_lightning.cli import run as main  # noqa: E402
from lt_lightning.heads.cosine import CosineHead  # noqa: E402
from tests.helpers import assert_equal_states  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DIGITS = ["-c", str(REPO / "configs/data/digits_lt.yaml"), "-c", str(REPO / "configs/method/digits_lt/lift.yaml")]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
D, LAYERS, MLP = 32, 2, 128  # the tiny tower's width, blocks, MLP width
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": LAYERS, "width": D, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(build_clip("lt-test-tiny-clip", model_config=TINY).state_dict(), path)
    return path


def tiny(weights: Path, **kwargs) -> CLIPVisualBackbone:
    return CLIPVisualBackbone("lt-test-tiny-clip", pretrained=str(weights), model_config=TINY, **kwargs)


def test_pretrained_path_loads_the_saved_weights(tiny_weights: Path) -> None:
    reference = build_clip("lt-test-tiny-clip", model_config=TINY)
    reference.load_state_dict(torch.load(tiny_weights, weights_only=True))
    backbone = tiny(tiny_weights).eval()
    assert backbone.num_features == D  # LIFT's pre-projection features
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        pooled = reference.eval().visual(x)  # open_clip's image features = pooled @ proj
        assert torch.allclose(backbone(x) @ backbone.proj, pooled, atol=1e-5)
        projected = tiny(tiny_weights, project=True).eval()
        assert projected.num_features == 16
        assert torch.allclose(projected(x), reference.encode_image(x), atol=1e-5)


def test_input_is_renormalised_and_resized(tiny_weights: Path) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    backbone = tiny(tiny_weights, input_mean=mean, input_std=std)
    raw = torch.rand(2, 3, 16, 16)
    given = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    clip_mean, clip_std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    expected = (raw - torch.tensor(clip_mean).view(1, 3, 1, 1)) / torch.tensor(clip_std).view(1, 3, 1, 1)
    assert torch.allclose(backbone.prepare_input(given), expected, atol=1e-5)
    assert backbone.prepare_input(torch.rand(2, 3, 32, 32)).shape == (2, 3, 16, 16)


def test_missing_tag_and_offline_download_name_the_file(monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="neither a file nor an open_clip tag.*openai"):
        CLIPVisualBackbone("ViT-B-16", pretrained="no-such-weights")

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("open_clip.factory.download_pretrained", offline)
    with pytest.raises(FileNotFoundError, match="timm/vit_base_patch16_clip_224.openai.*local path as pretrained"):
        CLIPVisualBackbone("ViT-B-16", pretrained="openai")


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="model_name='no-such-model'"):
        CLIPVisualBackbone("no-such-model")
    with pytest.raises(ValueError, match="input_mean"):
        CLIPVisualBackbone("lt-test-tiny-clip", model_config=TINY, input_mean=[0.5])
    with pytest.raises(ValueError, match="in_channels"):
        CLIPVisualBackbone("lt-test-tiny-clip", model_config=TINY, in_channels=2)


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# hand counts for the tiny tower: D = 32, 2 blocks, MLP 128, bottleneck / rank r, prompts of length p
BLOCK_BIASES = D + 3 * D + D + D + MLP + D  # ln_1, in_proj, out_proj, ln_2, c_fc, c_proj
ALL = 31872  # every parameter of the tiny image tower (its projection kept as a buffer)


@pytest.mark.parametrize(
    ("method", "kwargs", "expected"),
    [
        (FullFineTuning, {}, ALL),
        (LinearProbe, {}, 0),
        (BitFit, {}, LAYERS * BLOCK_BIASES),
        (BitFit, {"blocks_only": False}, LAYERS * BLOCK_BIASES + D + D),  # + ln_pre, ln_post; conv1 has no bias
        (VPT, {"length": 3}, LAYERS * 3 * D),
        (VPT, {"length": 3, "deep": False}, 3 * D),
        (LoRA, {"rank": 2}, LAYERS * 4 * D * 2),
        (AdaptFormer, {"bottleneck": 4}, LAYERS * (2 * D + D * 4 + 4 + 4 * D + D + 1)),
        (AdaptFormer, {"bottleneck": 4, "learnable_scale": False}, LAYERS * (2 * D + D * 4 + 4 + 4 * D + D)),
    ],
)
def test_peft_trains_only_its_parameters(tiny_weights: Path, method, kwargs, expected) -> None:
    torch.manual_seed(0)
    backbone = tiny(tiny_weights).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        before = backbone(x)
    peft = method(backbone, **kwargs).eval()
    assert peft.trainable_params == _trainable(peft) == expected
    if method is not VPT:  # every other method starts as the pre-trained network (zero updates)
        with torch.no_grad():
            assert torch.allclose(peft(x), before, atol=1e-5)
    if expected:
        peft(x).square().sum().backward()
        for name, p in peft.named_parameters():
            assert (p.grad is not None) == p.requires_grad, name


def test_peft_on_a_timm_vit_from_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = TimmBackbone("vit_tiny_patch16_224")
    path = tmp_path / "vit.pt"
    torch.save(source.model.state_dict(), path)
    width, blocks, mlp = 192, 12, 768
    biases = width + 3 * width + width + width + mlp + width  # norm1, qkv, proj, norm2, fc1, fc2
    cases = [(BitFit, {}, blocks * biases), (LoRA, {"rank": 4}, blocks * 4 * width * 4), (VPT, {"length": 2}, 0)]
    cases += [(AdaptFormer, {"bottleneck": 8}, blocks * (2 * width + width * 8 + 8 + 8 * width + width + 1))]
    x = torch.rand(1, 3, 224, 224)
    for method, kwargs, expected in cases:
        backbone = TimmBackbone("vit_tiny_patch16_224", checkpoint_path=str(path)).eval()
        peft = method(backbone, **kwargs).eval()
        expected = expected or blocks * 2 * width
        assert peft.trainable_params == _trainable(peft) == expected, method.__name__
        with torch.no_grad():
            out = peft(x)
            if method is not VPT:
                assert torch.allclose(out, source.eval()(x), atol=1e-4), method.__name__


def test_text_initialised_classifier_equals_normalised_text_embeddings(tiny_weights: Path) -> None:
    names = ["golden_retriever", "tabby cat", "0"]
    clip = build_clip("lt-test-tiny-clip", pretrained=str(tiny_weights), model_config=TINY).eval()
    tokens = open_clip.get_tokenizer("lt-test-tiny-clip")(["a photo of a golden retriever.", "a photo of a tabby cat."])
    tokens = torch.cat([tokens, open_clip.get_tokenizer("lt-test-tiny-clip")(["a photo of a 0."])])
    with torch.no_grad():
        text = F.normalize(clip.encode_text(tokens), dim=-1)
    for project, expected in ((True, text), (False, F.normalize(text @ clip.visual.proj.t(), dim=-1))):
        backbone = AdaptFormer(tiny(tiny_weights, project=project), bottleneck=2)
        module = SimpleNamespace(backbone=backbone, classifier=CosineHead(backbone.num_features, 3, scale=25.0))
        trainer = SimpleNamespace(datamodule=SimpleNamespace(class_names=names))
        TextClassifierInit().setup(trainer, module, "fit")
        assert torch.allclose(module.classifier.weight, expected, atol=1e-6)
        assert torch.allclose(module.classifier.weight.norm(dim=1), torch.ones(3), atol=1e-6)


def test_five_crops_average_normalised_features() -> None:
    class Mean(torch.nn.Module):
        num_features = 3

        def forward(self, x):
            return x.mean(dim=(2, 3))

    x = torch.rand(2, 3, 6, 6)
    crops = five_crops(x, 4)
    assert [tuple(c.shape[-2:]) for c in crops] == [(4, 4)] * 5
    assert torch.equal(crops[4], x[..., 1:5, 1:5])
    tte = TestTimeCrops(Mean(), crop_size=4, resize_to=None).eval()
    expected = torch.stack([F.normalize(c.mean(dim=(2, 3)), dim=-1) for c in crops]).mean(0)
    assert torch.allclose(tte(x), expected)
    assert torch.equal(tte.train()(x), x.mean(dim=(2, 3)))  # training: the batch as it is


def test_lift_fits_and_tests_on_digits_through_the_cli(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    limits = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2"]
    cli = main(["fit", *DIGITS, *limits, *QUIET])
    assert cli.trainer.state.finished and "val/acc" in cli.trainer.callback_metrics
    module = cli.model
    assert isinstance(module.backbone.backbone, AdaptFormer)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n or n.startswith("classifier.") for n in trainable)
    ckpt = next(Path(tmp_path).rglob("last.ckpt"))
    test = main(["test", *DIGITS, "--ckpt_path", str(ckpt), "--trainer.limit_test_batches", "2", *QUIET])
    assert "test/acc" in test.trainer.callback_metrics


def test_resumed_peft_run_equals_the_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    limits = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"]
    lora = ["--model.init_args.backbone.init_args.backbone.class_path", "lt_lightning.backbones.peft.LoRA"]
    lora += ["--model.init_args.backbone.init_args.backbone.init_args.rank", "2"]
    args = [*DIGITS, *lora, *limits, *QUIET, "--trainer.logger", "false"]
    for name in ("whole", "stopped"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "whole")
    whole = main(["fit", *args])
    assert isinstance(whole.model.backbone.backbone, LoRA)
    monkeypatch.chdir(tmp_path / "stopped")
    main(["fit", *args, "--trainer.max_steps", "3"])  # stops after epoch 0 (3 batches)
    ckpt = next((tmp_path / "stopped").rglob("last.ckpt"))
    resumed = main(["fit", *args, "--ckpt_path", str(ckpt)])
    assert resumed.trainer.global_step == whole.trainer.global_step == 6
    assert_equal_states(whole.model.state_dict(), resumed.model.state_dict())
