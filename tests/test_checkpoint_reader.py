"""The one checkpoint reader (:mod:`lt_lightning.checkpoint_reader`) and its one safety rule, rule by rule.

``weights_only=True`` always; ``pathlib`` paths and NumPy scalars are the allow-listed extras; any other pickled type
is refused naming it and the file (its code never runs); a missing file, a file of another kind, a truncated file and
a checkpoint without ``state_dict`` are clear errors. An ``ast`` test checks that every ``torch.load`` and
``load_from_checkpoint`` of the package is in the reader.
"""

from __future__ import annotations

import ast
import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lt_lightning.checkpoint_reader import (
    ALLOWED_TYPES,
    UnsafeCheckpointError,
    checkpoint_file_problem,
    load_module,
    read_checkpoint,
)
from lt_lightning.cli_errors import check_checkpoint_file
from lt_lightning.module import LongTailModule
from tests.helpers import TinyBackbone

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "lt_lightning"
READER = PACKAGE_ROOT / "checkpoint_reader.py"
RAN: list[str] = []


def _record(message: str) -> None:
    RAN.append(message)


class Arbitrary:
    """An object whose unpickling would run code (``_record``): a weights_only load must never call it."""

    def __reduce__(self):
        return (_record, ("unpickled",))


def _state() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(4.0)}


def test_tensors_plain_values_paths_and_numpy_scalars_load(tmp_path: Path) -> None:
    extras = {
        "root": pathlib.Path("data/cifar"),
        "pure": pathlib.PurePosixPath("a/b"),
        "ratio": np.float64(100.0),
        "n_max": np.int64(500),
        "flag": np.bool_(True),
        "half": np.float32(0.5),
        "plain": [1, 2.5, "x", None, (3, 4)],
    }
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": _state(), "datamodule_hyper_parameters": extras, "epoch": 3}, path)
    for mmap in (False, True):
        loaded = read_checkpoint(path, mmap=mmap)
        assert torch.equal(loaded["state_dict"]["w"], torch.arange(4.0)) and loaded["epoch"] == 3
        assert loaded["datamodule_hyper_parameters"] == extras
        assert isinstance(loaded["datamodule_hyper_parameters"]["ratio"], np.float64)
    assert pathlib.PosixPath in ALLOWED_TYPES and np.dtype in ALLOWED_TYPES


def test_a_legacy_non_zip_checkpoint_loads_with_and_without_mmap(tmp_path: Path) -> None:
    path = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": _state()}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(path, mmap=True)["state_dict"]["w"], torch.arange(4.0))
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.arange(4.0))


def test_a_pickled_arbitrary_object_is_refused_naming_its_type_and_never_runs(tmp_path: Path) -> None:
    path = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": _state(), "callbacks": {"x": Arbitrary()}}, path)
    RAN.clear()
    with pytest.raises(UnsafeCheckpointError, match=r"init_from: .*hostile\.ckpt holds Python objects") as caught:
        read_checkpoint(path, purpose="ClassifierRetraining: init_from")
    assert caught.value.types == [f"{__name__}._record"]
    assert f"{__name__}._record" in str(caught.value) and "add_safe_globals" in str(caught.value)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(path, mmap=True, require_state_dict=False)
    assert RAN == []  # refused, not retried with weights_only=False


def test_a_python_built_module_checkpoint_is_refused_unless_its_classes_are_trusted(tmp_path: Path) -> None:
    """A LongTailModule built in Python pickles its backbone and head into the hyper-parameters: code, refused; the
    user trusts the classes explicitly with PyTorch's own safe_globals, still weights_only=True."""
    model = LongTailModule(TinyBackbone(), num_classes=3, class_counts=[5, 3, 1])
    path = tmp_path / "python_built.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    with pytest.raises(UnsafeCheckpointError, match="tests.helpers.TinyBackbone") as caught:
        read_checkpoint(path, purpose="KnowledgeDistillation: teacher")
    assert {"tests.helpers.TinyBackbone", "lt_lightning.heads.linear.LinearHead"} <= set(caught.value.types)
    trusted = [TinyBackbone, torch.nn.Linear, type(model.classifier)]
    with torch.serialization.safe_globals(trusted):
        loaded = read_checkpoint(path)
    assert isinstance(loaded["hyper_parameters"]["backbone"], TinyBackbone)


def test_a_text_file_an_empty_file_and_a_truncated_checkpoint_are_not_checkpoints(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("epoch=3 accuracy=0.71\n")
    with pytest.raises(ValueError, match=r"SelfSupervisedInit: .*notes\.ckpt is not a checkpoint \(it starts with"):
        read_checkpoint(text, purpose="SelfSupervisedInit")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"is not a checkpoint \(it is empty"):
        read_checkpoint(empty)
    assert checkpoint_file_problem(text) is not None and checkpoint_file_problem(empty) == "it is empty"
    with pytest.raises(ValueError, match="--ckpt_path .* is not a checkpoint"):
        check_checkpoint_file(str(text))  # the CLI's check is the reader's
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": _state()}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.ckpt is not a readable checkpoint \(truncated or corrupt"):
        read_checkpoint(truncated)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ExpertRouterTraining: init_from checkpoint '.*nowhere\.ckpt' does"):
        read_checkpoint(tmp_path / "nowhere.ckpt", purpose="ExpertRouterTraining: init_from")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path)  # a directory is not a checkpoint file


def test_a_checkpoint_without_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    torch.save(_state(), path)  # a bare state_dict (backbone weights): fine where asked for
    with pytest.raises(ValueError, match=r"bare\.pt is not a Lightning checkpoint \(no 'state_dict'\)"):
        read_checkpoint(path)
    assert torch.equal(read_checkpoint(path, require_state_dict=False)["w"], torch.arange(4.0))


def test_load_module_follows_the_same_rule(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="teacher checkpoint"):
        load_module(LongTailModule, tmp_path / "none.ckpt", purpose="KnowledgeDistillation: teacher")
    path = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": _state(), "hyper_parameters": {"backbone": Arbitrary()}}, path)
    RAN.clear()
    with pytest.raises(UnsafeCheckpointError, match="_record"):
        load_module(LongTailModule, path)
    assert RAN == []


# ---------------------------------------------------------------------------------------------- one reader
def _calls(path: Path) -> list[tuple[int, str, list[ast.keyword]]]:
    """``(line, dotted callee, keywords)`` of every call in ``path`` whose callee ends in ``load`` or
    ``load_from_checkpoint``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        parts = []
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        if isinstance(func, ast.Name):
            parts.append(func.id)
        name = ".".join(reversed(parts))
        if name.endswith(("torch.load", "load_from_checkpoint")) or name in ("pl_load", "_load_checkpoint"):
            found.append((node.lineno, name, node.keywords))
    return found


def test_every_checkpoint_load_of_the_package_is_in_the_reader() -> None:
    outside = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        for line, name, _ in _calls(path):
            if path != READER:
                outside.append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{line}: {name}")
    assert outside == [], "read checkpoints with lt_lightning.checkpoint_reader: " + ", ".join(outside)
    inside = _calls(READER)
    assert inside, "the reader itself loads with torch.load / load_from_checkpoint"
    for line, name, keywords in inside:
        weights_only = [k.value for k in keywords if k.arg == "weights_only"]
        assert len(weights_only) == 1, f"checkpoint_reader.py:{line}: {name} without an explicit weights_only"
        assert isinstance(weights_only[0], ast.Constant) and weights_only[0].value is True, f"line {line}"


def test_no_weights_only_false_anywhere_in_the_package() -> None:
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.keyword) and node.arg == "weights_only":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is False), (
                    f"{path}:{node.value.lineno}: weights_only=False"
                )
