"""Every YAML under configs/ runs through the real CLI (`fast_dev_run`) on tiny data.

Every shipped run (:data:`RUNS`: each ``-c configs/data/D.yaml -c <method config>`` of
:func:`lt_lightning.experiments.shipped`, ``quickstart.yaml``, ``pretext/*``) runs as it is; the overlays (``budget/``,
``trainer/fast_bf16.yaml``, the data-only ``data/`` files) run in the compositions listed in :data:`COMPOSITIONS`. A
new YAML that is in neither fails :func:`test_every_config_is_exercised`.

Tiers (tests/conftest.py): the lean suite fits each method's wiring once (every Digits-LT config), each dataset once
(:data:`LEAN`: one run per other dataset and data-only file) and parses every config
(:func:`test_config_resolves_as_its_baseline`, :func:`test_every_composition_parses`); the fits of every CIFAR /
ImageNet config are the ``slow`` conformance tier (``LT_LIGHTNING_SLOW=1`` or ``pytest -m slow``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lt_lightning.cli import run as main
from tests import resolved_configs
from tests.cifar_files import write_tiny_cifar100

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
#: every shipped run: ``D/M`` experiments (``-c configs/data/D.yaml -c <method config>``) and the stand-alone configs,
#: as files relative to configs/
RUNS: dict[str, list[str]] = {
    name: [Path(a).relative_to(CONFIGS).as_posix() for a in args if a != "-c"]
    for name, args in resolved_configs.shipped_runs().items()
}
#: overlays on shipped runs (a budget, the fast path, data-only files after a recipe and a method)
COMPOSITIONS: list[tuple[str, ...]] = [
    ("data/digits_lt.yaml", "trainer/fast_bf16.yaml"),
    ("data/digits_lt.yaml", "method/ldam_drw.yaml", "optimizer/sam.yaml"),
    ("data/digits_lt.yaml", "method/ldam_drw.yaml", "optimizer/imbsam.yaml"),
    ("data/cifar10_lt.yaml", "method/ce.yaml", "recipe/strong.yaml"),  # every CIFAR method: tests/test_strong_recipe.py
    ("data/cifar10_lt.yaml", "method/ce.yaml", "budget/ldam_drw_10ep.yaml"),
    ("data/cifar10_lt.yaml", "method/ce.yaml", "budget/ldam_drw_40ep.yaml"),
    *(
        ("data/cifar10_lt.yaml", f"method/{m}.yaml", "budget/ldam_drw_10ep.yaml")
        for m in ("mislas", "kcl", "ssp", "distill")  # staged and pre-staged recipes scale with the budget alone
    ),
    ("data/cifar10_lt.yaml", "method/ldam_drw.yaml", "data/folder_lt.yaml"),
    ("data/cifar10_lt.yaml", "method/ldam_drw.yaml", "data/split_files.yaml"),
]
#: the runs fitted in the lean tier besides every Digits-LT one: one per other dataset (and datamodule config)
LEAN = {
    "quickstart.yaml",
    "cifar10_lt/ce",
    "cifar100_lt/ce",
    "imagenet_lt/ce",
    "places_lt/ce",  # -c data/imagenet_lt.yaml -c data/places_lt.yaml -c method/ce.yaml
    "inat2018/ce",
    "data/cifar10_lt.yaml+method/ce.yaml+recipe/strong.yaml",
    "data/cifar10_lt.yaml+method/ldam_drw.yaml+data/folder_lt.yaml",
    "data/cifar10_lt.yaml+method/ldam_drw.yaml+data/split_files.yaml",
}


def _tiered(value, name: str, files: Sequence[str]):
    """``value`` as a parameter, marked ``slow`` unless the run is fitted in the lean tier (:data:`LEAN`, Digits-LT)."""
    lean = name in LEAN or all("digits_lt" in f for f in files if f.startswith(("pretext/", "data/")))
    return pytest.param(value, id=name, marks=() if lean else pytest.mark.slow)


#: configs whose method acts at test time (a sweep on validation, a replaced head, the TDE effect)
TEST_TIME = re.compile(
    r"TauNormalization|NearestClassMean|PostHocLogitAdjustment|CausalHead|TestTimeAggregation|ComputePerImage"
)
FAST = ["--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu"]


def _rel(path: Path) -> str:
    return path.relative_to(CONFIGS).as_posix()


def _data_class(files: list[Path]) -> str:
    text = "\n".join(f.read_text() for f in files)
    found = re.findall(r"class_path:\s*(lt_lightning\.data\.[\w.]+DataModule)\b", text)
    return found[-1] if found else ""


@pytest.fixture(scope="module")
def tiny_split_tree(tmp_path_factory) -> Path:
    """3 classes of 16x16 JPEGs with ImageNet-LT-style split files (``train/<wnid>/<name>.JPEG label``) and their class
    names in each format of ``SplitFileDataModule.class_names_format`` (``names_<format>.{txt,json}``)."""
    root = tmp_path_factory.mktemp("split_tree")
    rng = np.random.RandomState(0)
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for split, per_class in (("train", [6, 3, 2]), ("val", [1, 1, 1]), ("test", [2, 2, 2])):
        for c, n in enumerate(per_class):
            folder = root / split / f"n0000000{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{c}_{i}.JPEG")
                lines[split].append(f"{split}/n0000000{c}/{c}_{i}.JPEG {c}")
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    names = ["tench", "goldfish", "great_white_shark"]
    (root / "names_lines.txt").write_text("\n".join(names) + "\n")
    (root / "names_id_name.txt").write_text("".join(f"n0000000{c} {n}\n" for c, n in enumerate(names)))
    (root / "names_json.json").write_text(json.dumps([{"id": c, "name": n} for c, n in enumerate(names)]))
    return root


@pytest.fixture(scope="module")
def tiny_folder_tree(tmp_path_factory) -> Path:
    """``root/train/<class>/*.png``: 3 classes of 16x16 images, 40 / 35 / 32 per class, no val/ or test/."""
    root = tmp_path_factory.mktemp("folder_tree")
    rng = np.random.RandomState(1)
    for c, n in enumerate([40, 35, 32]):
        folder = root / "train" / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_cifar100(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar100_configs")
    write_tiny_cifar100(root, train_per_class=100, test_per_class=1)
    return root


def _data_overrides(data_class: str, request, text: str = "") -> list[str]:
    """The tiny data of ``data_class`` as ``--data.init_args`` options (``text``: the configs, for what they set)."""
    if data_class.endswith("CIFAR10LTDataModule"):
        root = request.getfixturevalue("tiny_cifar10")
        return ["--data.init_args.root", str(root), "--data.init_args.val_per_class", "1"]
    if data_class.endswith("CIFAR100LTDataModule"):
        root = request.getfixturevalue("tiny_cifar100")
        return ["--data.init_args.root", str(root), "--data.init_args.val_per_class", "1"]
    if data_class.endswith("SplitFileDataModule"):
        root = request.getfixturevalue("tiny_split_tree")
        args = {"root": root, "train_file": root / "train.txt", "test_file": root / "test.txt"}
        if not re.search(r"^\s*val_file:\s*null\b", text, re.MULTILINE):  # else the config's val_per_class hold-out
            args["val_file"] = root / "val.txt"
        args |= {"num_classes": 3, "image_size": 16, "resize_size": 18, "batch_size": 4, "num_workers": 0}
        formats = re.findall(r"^\s*class_names_format:\s*(\w+)", text, re.MULTILINE)
        if re.search(r"^\s*class_names_file:", text, re.MULTILINE):  # the dataset's class-name file, in its format
            fmt = formats[-1] if formats else "lines"
            args["class_names_file"] = root / f"names_{fmt}.{'json' if fmt == 'json' else 'txt'}"
        return [x for k, v in args.items() for x in (f"--data.init_args.{k}", str(v))]
    if data_class.endswith("ImageFolderLTDataModule"):
        root = request.getfixturevalue("tiny_folder_tree")
        args = {"root": root, "imbalance_ratio": 2.0, "image_size": 16, "resize_size": 18, "num_workers": 0}
        return [x for k, v in args.items() for x in (f"--data.init_args.{k}", str(v))]
    return []


def _tiny_clip_overlay() -> dict:
    """A LIFT config's CLIP tower (``TestTimeCrops`` > PEFT wrapper > ``CLIPVisualBackbone``) swapped for the tiny
    random one of configs/method/digits_lt/lift.yaml (its crops and tower arguments, read from that file): the shipped
    ViT-B/16 weights would be downloaded (tests never download)."""
    digits_lift = yaml.safe_load((CONFIGS / "method" / "digits_lt" / "lift.yaml").read_text())
    crops = digits_lift["model"]["init_args"]["backbone"]
    tower = crops["init_args"]["backbone"]["init_args"]["backbone"]["init_args"]
    tiny = {k: tower[k] for k in ("model_name", "pretrained", "model_config")}
    sizes = {k: crops["init_args"][k] for k in ("crop_size", "resize_to")}
    inner = {"init_args": {"backbone": {"init_args": {"backbone": {"init_args": tiny}}}, **sizes}}
    return {"model": {"init_args": {"backbone": inner}}}


def _model_overrides(files: list[Path], tmp_path: Path) -> list[str]:
    text = "\n".join(f.read_text() for f in files)
    if "CLIPVisualBackbone" not in text or re.search(r"pretrained:\s*null", text):
        return []
    overlay = tmp_path / "tiny_clip.yaml"
    overlay.write_text(yaml.safe_dump(_tiny_clip_overlay()))
    return ["-c", str(overlay)]


def _run(files: list[Path], request, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*(x for f in files for x in ("-c", str(f))), *_model_overrides(files, tmp_path)]
    text = "\n".join(f.read_text() for f in files)
    cli = main(["fit", *args, *FAST, *_data_overrides(_data_class(files), request, text)])
    assert cli.trainer.state.finished
    assert cli.model.class_counts.tolist() == cli.datamodule.class_counts
    assert "val/acc" in cli.trainer.callback_metrics
    if re.search(r"^\s*class_names_file:", text, re.MULTILINE):  # read in the config's format, used by the prompts
        assert cli.datamodule.class_names == ["tench", "goldfish", "great_white_shark"]
    if TEST_TIME.search("\n".join(f.read_text() for f in files)):
        # the config changes the prediction rule at test time: run `test` through it as well (fast_dev_run saved
        # no checkpoint: the initial weights, on purpose)
        overrides = _data_overrides(_data_class(files), request, text)
        cli = main(["test", *args, "--ckpt_path", "untrained", *FAST, *overrides])
        assert "test/acc" in cli.trainer.callback_metrics


@pytest.mark.parametrize("run", [_tiered(name, name, files) for name, files in RUNS.items()])
def test_shipped_run_fits(run: str, request, tmp_path, monkeypatch) -> None:
    _run([CONFIGS / f for f in RUNS[run]], request, tmp_path, monkeypatch)


@pytest.mark.parametrize("files", [_tiered(fs, "+".join(fs), fs) for fs in COMPOSITIONS])
def test_composed_overlays_run(files: tuple[str, ...], request, tmp_path, monkeypatch) -> None:
    _run([CONFIGS / f for f in files], request, tmp_path, monkeypatch)


@pytest.mark.parametrize("files", [list(fs) for fs in COMPOSITIONS], ids=lambda fs: "+".join(fs))
def test_every_composition_parses(files: list[str], capsys) -> None:
    """Every overlay composition parses (class paths, argument names and types) in the lean tier (every shipped run
    is parsed by :func:`test_config_resolves_as_its_baseline`); the slow tier fits each."""
    printed = _printed_config([x for f in files for x in ("-c", str(CONFIGS / f))], capsys)
    assert "class_path: lt_lightning." in printed


def test_every_config_is_exercised() -> None:
    covered = {f for files in RUNS.values() for f in files} | {f for files in COMPOSITIONS for f in files}
    # configs/study/*.yaml are study YAMLs (lt_lightning.study), not Lightning configs: see tests/study/
    lightning = [p for p in CONFIGS.rglob("*.yaml") if not _rel(p).startswith("study/")]
    missing = sorted(_rel(p) for p in lightning if _rel(p) not in covered)
    assert not missing, f"configs not run by any test (add them to COMPOSITIONS): {missing}"


def _printed_config(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def resolved_baseline() -> dict:
    return json.loads(resolved_configs.BASELINE.read_text())


@pytest.mark.parametrize("run", sorted(resolved_configs.shipped_runs()))
def test_config_resolves_as_its_baseline(run: str, resolved_baseline: dict) -> None:
    """The invariant of issue 19 (tests/resolved_configs.py): refactors leave every shipped run as it was."""
    expected = resolved_baseline["configs"].get(run)
    assert expected is not None, f"{run} is not in the baseline: python tests/resolved_configs.py --write"
    got = resolved_configs.section_hashes(resolved_configs.resolve(resolved_configs.shipped_runs()[run]))
    same_libraries = resolved_baseline["versions"] == resolved_configs.versions()
    checked = resolved_configs.SECTIONS if same_libraries else ("model", "data")
    changed = [key for key in checked if got[key] != expected[key]]
    assert not changed, (
        f"{run} resolves differently in {changed}: if on purpose, rewrite the baseline "
        "(python tests/resolved_configs.py --write) and say why in the commit"
    )
