"""README's "Your own data" section runs as written on a generated folder dataset.

The ``lt-lightning`` commands of the section's ``bash`` blocks are read from README.md and run through the real CLI
(:func:`lt_lightning.cli.run`, the console script's entry point) in a temporary working directory that holds
``configs/`` (a link to the repository's) and the data the commands name: ``data/my_images/train/<class>/*.png`` (tiny
images, no ``val/`` or ``test/``: the hold-out layout), the split files ``data/{train,val,test}.txt`` and
``data/unlabelled/``. The only change made to a command is its budget: ``--trainer.max_epochs N`` becomes 1.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lt_lightning.cli import run

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Your own data"


def readme_commands() -> list[list[str]]:
    """The ``lt-lightning`` commands of the section's ``bash`` blocks, continuation lines joined, split by shlex."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("lt-lightning "):
                commands.append(shlex.split(line))
    return commands


def make_data(cwd: Path) -> None:
    """3 classes of 32x32 PNGs (40, 36, 34 images), the split files of the same images, 2 unlabelled images."""
    rng = np.random.RandomState(0)
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c, n in enumerate([40, 36, 34]):
        folder = cwd / "data" / "my_images" / "train" / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
            split = "val" if i < 3 else "test" if i < 8 else "train"
            rows[split].append(f"train/class_{c}/{i}.png {c}")
    for split, lines in rows.items():
        (cwd / "data" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (cwd / "data" / "unlabelled").mkdir()
    for i in range(2):
        Image.fromarray(rng.randint(0, 256, (40, 30, 3), dtype=np.uint8)).save(cwd / "data" / "unlabelled" / f"{i}.png")


def test_the_section_has_fit_test_and_predict_for_a_folder_and_a_split_file() -> None:
    commands = readme_commands()
    assert [c[1] for c in commands] == ["fit", "test", "predict", "fit", "test"]
    for command in commands:
        configs = [command[i + 1] for i, arg in enumerate(command) if arg == "-c"]
        # the recipe, the method, then the data overlay
        assert len(configs) == 3 and configs[0] == "configs/data/cifar10_lt.yaml"
        assert configs[1].startswith("configs/method/") and configs[2].startswith("configs/data/")
    assert "configs/data/folder_lt.yaml" in commands[0] and "configs/data/split_files.yaml" in commands[3]
    for fit in (commands[0], commands[3]):
        assert "--trainer.max_epochs" in fit and "--data.init_args.cache_images" in fit
        assert "--data.init_args.augmentation_preset" in fit


def _one_epoch(command: list[str]) -> list[str]:
    args = list(command[1:])  # without "lt-lightning"
    if "--trainer.max_epochs" in args:
        args[args.index("--trainer.max_epochs") + 1] = "1"
    return args


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_readme_own_data_commands_run_as_written(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    make_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    results = []
    for command in readme_commands():
        cli = run(_one_epoch(command))
        assert cli.trainer.state.finished, command
        results.append(cli)
    fit_folder, test_folder, _, fit_split, test_split = results
    assert fit_folder.datamodule.class_counts == [10, 6, 4]  # 40 / 36 / 34 minus 10 val and 20 test held out
    assert fit_folder.datamodule.augmentation_preset == "pad_crop" and fit_folder.datamodule.cache_images
    assert fit_folder.datamodule.train_dataset.cache.kind == "output"
    assert fit_split.datamodule.class_counts == [32, 28, 26]  # the split file's training lines
    for cli in (test_folder, test_split):
        assert "test/acc" in cli.trainer.callback_metrics
    predictions = sorted((tmp_path / "logs").rglob("predictions.csv"))
    assert len(predictions) == 1 and len(predictions[0].read_text().strip().splitlines()) == 3  # header + 2 images
