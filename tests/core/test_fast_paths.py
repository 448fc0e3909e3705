"""Fast paths of LongTailModule on CPU (channels_last, bf16-mixed, torch.compile) against the plain path.

A few SGD steps of a CIFAR ResNet-8 on CIFAR-sized (3x32x32) synthetic long-tailed images, crop + flip
augmentation, from the same seed with and without each option: channels_last within 1e-5 (float32), bf16-mixed
within a bfloat16 tolerance, torch.compile within 1e-4. The compiled paths use the ``aot_eager`` backend (Dynamo graph
capture + AOTAutograd, no code generation: seconds) except one inductor test on a one-convolution backbone, which is
skipped, with the reason, when inductor cannot compile on the machine.
"""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from lt_lightning.backbones.base import Backbone
from lt_lightning.backbones.resnet_cifar import ResNetCifar
from lt_lightning.callbacks.classifier_retraining import ClassifierRetraining
from lt_lightning.data.synthetic import SyntheticLTDataModule
from lt_lightning.heads.cosine import CosineHead
from lt_lightning.heads.lws import LWSHead
from lt_lightning.losses.base import LongTailLoss
from lt_lightning.losses.cross_entropy import CrossEntropyLoss
from lt_lightning.losses.ldam import LDAMLoss
from lt_lightning.losses.logit_adjustment import BalancedSoftmaxLoss, LogitAdjustedLoss
from lt_lightning.module import COMPILED_PREFIX, LongTailModule, is_compiled
from lt_lightning.output import ModelOutput
from tests.checkpointing.python_built import trusting
from tests.helpers import quiet_trainer

AOT_EAGER = {"backend": "aot_eager"}
SGD = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9)
CL = torch.channels_last


class TinyConv(Backbone):
    """``Conv(3, 8) -> BatchNorm -> ReLU -> global average pool``: the smallest convolutional backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 8
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x).flatten(1)


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


class PrecisionProbeLoss(LongTailLoss):
    """Cross-entropy that records the dtype of the logits it gets and whether CPU autocast is on."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.dtype, bool]] = []

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        self.seen.append((output.logits.dtype, torch.is_autocast_enabled("cpu")))
        return nn.functional.cross_entropy(output.logits, target)


def cifar_sized(**kwargs) -> SyntheticLTDataModule:
    """4 classes (32, 20, 12, 8 training images) of 3x32x32 uint8 images, batch 16, pad-4 crop + flip."""
    args = {"num_classes": 4, "n_max": 32, "imbalance_ratio": 4, "image_size": 32, "channels": 3, "batch_size": 16}
    args |= {"val_per_class": 4, "test_per_class": 4, "seed": 0}
    return SyntheticLTDataModule(**(args | kwargs))


def build(backbone: type[nn.Module] | None = None, **kwargs) -> LongTailModule:
    torch.manual_seed(0)
    kwargs.setdefault("optimizer", SGD)
    net = ResNetCifar(depth=8) if backbone is None else backbone()
    return LongTailModule(net, num_classes=4, class_counts=[32, 20, 12, 8], **kwargs)


def fit(
    tmp_path: Path, steps: int = 4, precision: str = "32-true", callbacks=(), data=None, **kwargs
) -> tuple[LongTailModule, list[float], L.Trainer]:
    """``steps`` training steps (then one validation batch) of :func:`build` ``(**kwargs)`` from seed 0."""
    L.seed_everything(0, verbose=False)
    module = build(**kwargs)
    recorder = LossRecorder()
    trainer = quiet_trainer(
        tmp_path, [recorder, *callbacks], max_steps=steps, precision=precision, limit_val_batches=1,
        num_sanity_val_steps=0, val_check_interval=steps,
    )  # fmt: skip
    trainer.fit(module, datamodule=data if data is not None else cifar_sized())
    return module, recorder.losses, trainer


def float_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().float().clone() for k, v in module.state_dict().items()}


def assert_states_close(a: dict[str, Tensor], b: dict[str, Tensor], atol: float, rtol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=rtol, msg=lambda m, k=key: f"{k}: {m}")


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> tuple[list[float], dict[str, Tensor]]:
    """Losses and final state of the plain path (float32, default memory format, eager)."""
    module, losses, _ = fit(tmp_path_factory.mktemp("plain"))
    return losses, float_state(module)


# ---------------------------------------------------------------------------------------------------- arguments
def test_fast_path_options_are_keyword_arguments_with_defaults_and_are_checked() -> None:
    module = build()
    assert module.channels_last is False and module.compile_options is None
    assert build(compile=True).compile_options == {}
    assert build(compile={"mode": "max-autotune"}).compile_options == {"mode": "max-autotune"}
    assert build(channels_last=True, compile=True).hparams["channels_last"] is True
    with pytest.raises(ValueError, match="channels_last must be a bool, got 'yes'"):
        build(channels_last="yes")
    with pytest.raises(ValueError, match="compile must be a bool or a dict.*got 'max-autotune'"):
        build(compile="max-autotune")
    with pytest.raises(ValueError, match="compile must be a bool or a dict"):
        build(compile={1: "x"})


# ---------------------------------------------------------------------------------------------------- channels_last
def test_channels_last_trains_like_the_default_memory_format(tmp_path: Path, plain) -> None:
    module, losses, _ = fit(tmp_path, channels_last=True)
    assert module.backbone.conv1.weight.is_contiguous(memory_format=CL)
    assert not module.backbone.conv1.weight.is_contiguous()  # really NHWC (not a 1x1 or 1-channel edge case)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(plain[0]), atol=1e-5, rtol=0)
    assert_states_close(float_state(module), plain[1], atol=1e-5)


def test_every_batch_reaches_the_backbone_in_channels_last(tmp_path: Path) -> None:
    """Training (two augmented views, after a batch transform that returns a default-format tensor), validation,
    test and predict batches all enter the backbone NHWC-contiguous, and the labels are left alone."""
    module = build(channels_last=True)
    seen: list[tuple[str, tuple[int, ...], bool]] = []

    def probe(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0]
        seen.append((module.trainer.state.stage.value, tuple(x.shape), x.is_contiguous(memory_format=CL)))

    module.backbone.register_forward_pre_hook(probe)
    module.train_batch_transform = lambda x, y: (x.contiguous(), y)  # e.g. a mixing transform
    labels: list[Tensor] = []
    module.training_step = functools.partial(record_labels, module.training_step, labels)
    data = cifar_sized(views=2)
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    trainer.validate(module, datamodule=data)
    trainer.test(module, datamodule=data)
    trainer.predict(module, datamodule=data)
    stages = {stage for stage, _, _ in seen}
    assert {"train", "validate", "test", "predict"} <= stages
    assert all(len(shape) == 4 and shape[1:] == (3, 32, 32) and nhwc for _, shape, nhwc in seen), seen
    assert seen[0][1][0] == 32  # 2 views of a batch of 16
    assert labels[0].dtype == torch.long and labels[0].shape == (32,)


def record_labels(step, labels: list[Tensor], batch, batch_idx):
    labels.append(batch[1])
    return step(batch, batch_idx)


def test_the_module_does_not_override_on_after_batch_transfer() -> None:
    """Lightning calls only the datamodule's ``on_after_batch_transfer`` when both override it (with a warning):
    the module converts its input in ``forward`` instead, so the datamodule's augmentation keeps running."""
    assert not is_overridden("on_after_batch_transfer", build(channels_last=True), parent=L.LightningModule)
    assert is_overridden("on_after_batch_transfer", cifar_sized(), parent=L.LightningDataModule)


def test_configure_model_is_idempotent() -> None:
    module = build(channels_last=True, compile=AOT_EAGER)
    module.configure_model()
    compiled = module.backbone._compiled_call_impl
    weight = module.backbone.conv1.weight
    module.configure_model()
    assert module.backbone._compiled_call_impl is compiled  # not compiled twice
    assert module.backbone.conv1.weight is weight and weight.is_contiguous(memory_format=CL)


# ---------------------------------------------------------------------------------------------------- bf16-mixed
def test_bf16_mixed_trains_like_float32_within_bfloat16_tolerance(tmp_path: Path, plain) -> None:
    module, losses, trainer = fit(tmp_path, precision="bf16-mixed")
    assert all(torch.isfinite(torch.tensor(losses)))
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(plain[0]), atol=0, rtol=1e-2)
    assert all(p.dtype == torch.float32 for p in module.parameters())  # float32 master weights
    assert_states_close(float_state(module), plain[1], atol=2e-2, rtol=1e-2)
    results = module.last_val_results
    for key in ("acc", "acc_balanced", "acc_many", "acc_medium", "acc_few"):
        value = float(results[key])
        assert value != value or 0.0 <= value <= 1.0, (key, value)  # NaN: no class in that group
    assert module.val_metric.correct.dtype == torch.long and int(module.val_metric.total.sum()) == 0  # reset
    assert float(trainer.callback_metrics["val/acc"]) == float(results["acc"])


LOSSES_AND_HEADS = {
    "ldam_cosine": (LDAMLoss, functools.partial(CosineHead)),
    "balanced_softmax": (BalancedSoftmaxLoss, None),
    "logit_adjusted": (LogitAdjustedLoss, None),
    "cosine_head": (CrossEntropyLoss, functools.partial(CosineHead, scale=16.0)),
    "lws_head": (CrossEntropyLoss, LWSHead),
}


@pytest.mark.parametrize("name", list(LOSSES_AND_HEADS))
def test_bf16_mixed_with_each_loss_and_head(tmp_path: Path, name: str) -> None:
    """Same weights, same batches: the first loss differs from float32 only by the bfloat16 forward pass."""
    criterion, head = LOSSES_AND_HEADS[name]
    kwargs = {} if head is None else {"classifier": head}
    runs = {}
    for precision in ("32-true", "bf16-mixed"):
        module, losses, _ = fit(tmp_path / precision, steps=2, precision=precision, criterion=criterion(), **kwargs)
        runs[precision] = losses
        assert all(torch.isfinite(torch.tensor(losses))), (precision, losses)
        acc = float(module.last_val_results["acc"])
        assert 0.0 <= acc <= 1.0
    torch.testing.assert_close(runs["bf16-mixed"][0], runs["32-true"][0], atol=0, rtol=2e-2)


def test_bf16_mixed_loss_runs_in_float32_outside_autocast(tmp_path: Path) -> None:
    criterion = PrecisionProbeLoss()
    fit(tmp_path, steps=2, precision="bf16-mixed", criterion=criterion)
    assert criterion.seen == [(torch.float32, False)] * 2


def test_test_time_rules_run_in_float32_under_autocast() -> None:
    """A post-hoc offset ``tau log pi`` is subtracted in float32 (not rounded to bfloat16) and predictions are float32
    probabilities."""
    module = build().eval()
    offset = torch.tensor([0.1234567, -1.7654321, 2.5, 0.0])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain_logits = module(x).logits
        module.test_logit_offset = offset
        adjusted = module.test_logits(x)
        probabilities = module.predict_step((x, None), 0)
    assert plain_logits.dtype == torch.bfloat16 and adjusted.dtype == torch.float32
    torch.testing.assert_close(adjusted, plain_logits.float() - offset, atol=0, rtol=0)
    assert probabilities.dtype == torch.float32
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(4))


# ---------------------------------------------------------------------------------------------------- compile
def test_compile_trains_like_eager(tmp_path: Path, plain) -> None:
    module, losses, _ = fit(tmp_path, compile=AOT_EAGER)
    assert is_compiled(module.backbone)
    assert not any(COMPILED_PREFIX in k for k in module.state_dict())
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(plain[0]), atol=1e-4, rtol=0)
    assert_states_close(float_state(module), plain[1], atol=1e-4)


@pytest.fixture(scope="module")
def inductor() -> None:
    """Skip unless torch.compile's default backend (inductor: C++ code generation on CPU) works on this machine."""
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(4))
    except Exception as error:  # noqa: BLE001 - any failure means the backend is unusable here
        pytest.skip(f"torch.compile with inductor cannot run on this machine: {type(error).__name__}: {error}")


@pytest.mark.slow  # inductor's C++ code generation: ~10 s on an idle 2-core machine, ~30 s on a busy one
def test_compile_with_inductor_trains_like_eager(tmp_path: Path, inductor) -> None:
    eager, eager_losses, _ = fit(tmp_path / "eager", steps=3, backbone=TinyConv)
    compiled, losses, _ = fit(tmp_path / "compiled", steps=3, backbone=TinyConv, compile=True)
    assert is_compiled(compiled.backbone)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses), atol=1e-4, rtol=0)
    assert_states_close(float_state(compiled), float_state(eager), atol=1e-4)


@pytest.mark.parametrize("method", ["crt", "lws"])
def test_compile_with_classifier_retraining(tmp_path: Path, method: str) -> None:
    """cRT re-initialises the classifier, LWS wraps it; both freeze the compiled backbone in eval mode mid-fit."""
    runs = {}
    for name, options in (("eager", False), ("compiled", AOT_EAGER)):
        L.seed_everything(0, verbose=False)
        module = build(compile=options)
        stage = ClassifierRetraining(method=method, start_epoch=1)
        trainer = quiet_trainer(
            tmp_path / name, [stage], max_epochs=2, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0
        )
        trainer.fit(module, datamodule=cifar_sized())
        assert stage.active and not module.backbone.training
        assert not any(p.requires_grad for p in module.backbone.parameters())
        runs[name] = module
    assert is_compiled(runs["compiled"].backbone)
    assert isinstance(runs["compiled"].classifier, LWSHead) == (method == "lws")
    assert_states_close(float_state(runs["compiled"]), float_state(runs["eager"]), atol=1e-4)


# ---------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoints_move_between_compiled_and_plain_modules(tmp_path: Path) -> None:
    """Resume and ``init_from`` work across compile=True / False: the state-dict keys are the same."""
    ckpt = {}
    for name, options in (("plain", False), ("compiled", AOT_EAGER)):
        module, _, trainer = fit(tmp_path / name, steps=2, compile=options)
        ckpt[name] = tmp_path / f"{name}.ckpt"
        trainer.save_checkpoint(ckpt[name])
    state = {name: torch.load(path, weights_only=False)["state_dict"] for name, path in ckpt.items()}
    assert state["compiled"].keys() == state["plain"].keys()
    build().load_state_dict(state["compiled"])  # strict

    resumed = {}
    for name, options, source in (("plain", False, "compiled"), ("compiled", AOT_EAGER, "plain")):
        module = build(compile=options)
        trainer = quiet_trainer(tmp_path / f"resume_{name}", max_steps=3, limit_val_batches=0)
        trainer.fit(module, datamodule=cifar_sized(), ckpt_path=ckpt[source], weights_only=False)
        assert trainer.global_step == 3
        resumed[name] = float_state(module)
    assert_states_close(resumed["plain"], resumed["compiled"], atol=1e-4)

    for name, options, source in (("plain", False, "compiled"), ("compiled", AOT_EAGER, "plain")):
        module = build(compile=options)
        stage = ClassifierRetraining(init_from=str(ckpt[source]))
        trainer = quiet_trainer(tmp_path / f"init_{name}", [stage], max_epochs=1, limit_train_batches=1)
        with trusting():  # a module built in Python pickles its parts: init_from reads weights_only=True only
            trainer.fit(module, datamodule=cifar_sized())
        assert stage.active and is_compiled(module.backbone) == bool(options)
        torch.testing.assert_close(module.backbone.conv1.weight.detach(), state[source]["backbone.conv1.weight"])


def test_a_checkpoint_of_a_torch_compile_wrapped_backbone_loads() -> None:
    """``module.backbone = torch.compile(module.backbone)`` saves ``backbone._orig_mod.*`` keys: they load."""
    source = build()
    source.backbone = torch.compile(source.backbone, backend="eager")
    checkpoint = {"state_dict": source.state_dict()}
    assert any(k.startswith("backbone._orig_mod.") for k in checkpoint["state_dict"])
    target = build()
    with torch.no_grad():
        for p in target.parameters():
            p.zero_()
    target.on_load_checkpoint(checkpoint)
    target.load_state_dict(checkpoint["state_dict"])  # strict
    assert_states_close(float_state(target), float_state(build()), atol=0)  # build() draws source's weights
