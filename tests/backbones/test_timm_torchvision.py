"""timm and torchvision adapters: offline construction, feature sizes, local weights round trips, clear errors.

Nothing here may touch the network: every test runs with ``HF_HUB_OFFLINE=1`` and with socket connections
refused, so an accidental download fails loudly instead of passing on a machine that happens to be online.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torchvision

from lt_lightning.backbones import ResNet50, ResNeXt50, TimmBackbone, TorchvisionBackbone


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hugging Face hub offline, and any socket connection an error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hf_constants

        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)
    except ImportError:  # pragma: no cover - timm without the hub
        pass

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _features(backbone: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    backbone.eval()
    with torch.no_grad():
        return backbone(x)


# ---------------------------------------------------------------------------------------------------------- timm
def test_timm_resnet18_builds_offline() -> None:
    backbone = TimmBackbone("resnet18")
    assert backbone.num_features == 512
    assert backbone.model_name == "resnet18"
    assert _features(backbone, torch.randn(2, 3, 64, 64)).shape == (2, 512)
    # no classifier left in the timm model
    assert not any(key.startswith("fc.") for key in backbone.model.state_dict())


def test_timm_grey_scale_input() -> None:
    backbone = TimmBackbone("resnet18", in_channels=1)
    assert backbone.model.conv1.weight.shape[1] == 1
    assert _features(backbone, torch.randn(1, 1, 32, 32)).shape == (1, 512)


def test_timm_bad_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="resnt18") as info:
        TimmBackbone("resnt18")
    assert "resnet18" in str(info.value)


def test_timm_name_fragment_lists_models_containing_it() -> None:
    with pytest.raises(ValueError, match="close matches") as info:
        TimmBackbone("resnet1")
    assert "resnet18" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, argument",
    [({"in_channels": 0}, "in_channels"), ({"drop_rate": 1.0}, "drop_rate"), ({"drop_rate": -0.1}, "drop_rate")],
)
def test_timm_bad_arguments(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        TimmBackbone("resnet18", **kwargs)  # type: ignore[arg-type]


def test_timm_pretrained_and_checkpoint_path_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pretrained.*checkpoint_path"):
        TimmBackbone("resnet18", pretrained=True, checkpoint_path=str(tmp_path / "weights.pt"))


def test_timm_checkpoint_path_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = TimmBackbone("resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save(source.model.state_dict(), path)
    torch.manual_seed(1)
    fresh = TimmBackbone("resnet18")
    x = torch.randn(2, 3, 64, 64)
    assert not torch.allclose(_features(fresh, x), _features(source, x))
    loaded = TimmBackbone("resnet18", checkpoint_path=str(path))
    torch.testing.assert_close(_features(loaded, x), _features(source, x))


def test_timm_checkpoint_with_classifier_and_lightning_prefix(tmp_path: Path) -> None:
    """A timm model saved with its classifier, wrapped as a Lightning checkpoint under ``backbone.model.``."""
    import timm

    torch.manual_seed(0)
    full = timm.create_model("resnet18", pretrained=False, num_classes=7)
    wrapped = {"state_dict": {f"backbone.model.{k}": v for k, v in full.state_dict().items()}}
    wrapped["state_dict"]["classifier.fc.weight"] = torch.zeros(7, 512)
    path = tmp_path / "lightning.ckpt"
    torch.save(wrapped, path)
    loaded = TimmBackbone("resnet18", checkpoint_path=str(path))
    full.reset_classifier(0)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_features(loaded, x), _features(full, x))


def test_timm_checkpoint_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint_path"):
        TimmBackbone("resnet18", checkpoint_path=str(tmp_path / "absent.pt"))


def test_timm_checkpoint_missing_weights(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pt"
    torch.save(TimmBackbone("resnet18").model.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit resnet34: missing keys: layer1.2"):
        TimmBackbone("resnet34", checkpoint_path=str(path))


def test_timm_checkpoint_wrong_shapes(tmp_path: Path) -> None:
    path = tmp_path / "resnet50.pt"
    torch.save(TimmBackbone("resnet50").model.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit resnet18"):
        TimmBackbone("resnet18", checkpoint_path=str(path))


def test_timm_checkpoint_extra_weights_warn(tmp_path: Path) -> None:
    """Extra tensors (here resnet34's deeper blocks) are ignored with a warning naming them."""
    path = tmp_path / "resnet34.pt"
    torch.save(TimmBackbone("resnet34").model.state_dict(), path)
    with pytest.warns(UserWarning, match="ignored unexpected keys: layer1.2"):
        TimmBackbone("resnet18", checkpoint_path=str(path))


def test_timm_checkpoint_adapts_first_conv_to_grey_scale(tmp_path: Path) -> None:
    """An RGB checkpoint loaded into a 1-channel model: the stem weights are summed over RGB (timm)."""
    torch.manual_seed(0)
    source = TimmBackbone("resnet18")
    path = tmp_path / "rgb.pt"
    torch.save(source.model.state_dict(), path)
    grey = TimmBackbone("resnet18", in_channels=1, checkpoint_path=str(path))
    torch.testing.assert_close(grey.model.conv1.weight, source.model.conv1.weight.sum(dim=1, keepdim=True))
    # a grey image seen by the grey model equals the same image repeated on RGB seen by the source model
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(_features(grey, x), _features(source, x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------- torchvision
@pytest.mark.parametrize("cls, arch", [(ResNet50, "resnet50"), (ResNeXt50, "resnext50_32x4d")])
def test_torchvision_2048_features(cls: type[TorchvisionBackbone], arch: str) -> None:
    backbone = cls()
    assert backbone.arch == arch
    assert backbone.num_features == 2048
    assert isinstance(backbone.model.fc, torch.nn.Identity)


def test_resnet50_forward_shape() -> None:
    assert _features(ResNet50(), torch.randn(1, 3, 64, 64)).shape == (1, 2048)


def test_torchvision_weights_path_round_trip(tmp_path: Path) -> None:
    """A torchvision-format file (with its ``fc``, like ``resnet50-0676ba61.pth``) gives the source's features."""
    torch.manual_seed(0)
    source = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = ResNet50(weights_path=str(path))
    source.fc = torch.nn.Identity()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_features(loaded, x), _features(source, x))


def test_torchvision_round_trip_from_lightning_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = TorchvisionBackbone("resnet18")
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["classifier.fc.weight"] = torch.zeros(3, 512)
    path = tmp_path / "module.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = TorchvisionBackbone("resnet18", weights_path=str(path))
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(_features(loaded, x), _features(source, x))


def test_torchvision_missing_weights_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "resnet50.pth"
    with pytest.raises(FileNotFoundError, match="weights_path") as info:
        ResNet50(weights_path=str(missing))
    assert str(missing) in str(info.value)


def test_torchvision_weights_of_another_arch(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit resnet34"):
        TorchvisionBackbone("resnet34", weights_path=str(path))


def test_torchvision_file_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, path)
    with pytest.raises(ValueError, match="weights_path"):
        TorchvisionBackbone("resnet18", weights_path=str(path))


def test_torchvision_bad_arch() -> None:
    with pytest.raises(ValueError, match="arch.*resnet5"):
        TorchvisionBackbone("resnet5")  # type: ignore[arg-type]


def test_file_with_pickled_objects_is_refused_clearly(tmp_path: Path) -> None:
    """A checkpoint whose hyper-parameters hold a module is never unpickled (no code runs): a clear error instead."""
    source = TorchvisionBackbone("resnet18")
    path = tmp_path / "with_objects.ckpt"
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"backbone": torch.nn.Linear(2, 2)}}, path)
    with pytest.raises(ValueError, match="weights_path=.*Python objects besides tensors"):
        TorchvisionBackbone("resnet18", weights_path=str(path))
    with pytest.raises(ValueError, match="checkpoint_path=.*weights_only=False"):
        TimmBackbone("resnet18", checkpoint_path=str(path))


def test_safetensors_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = TorchvisionBackbone("resnet18", weights_path=str(path))
    source.fc = torch.nn.Identity()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(_features(loaded, x), _features(source, x))
