"""The strong-recipe overlay (configs/recipe/strong.yaml) composes with every CIFAR method config: each shipped
CIFAR-10-LT / CIFAR-100-LT run fits one ``fast_dev_run`` step with it as a third ``-c`` (the slow tier; the lean tier
fits ``cifar10_lt/ce`` with it through tests/test_configs.py's COMPOSITIONS) and resolves to the recipe's values."""

from __future__ import annotations

import pytest

from lt_lightning.cli import run as main
from tests.test_configs import CONFIGS, RUNS, _run, tiny_cifar100  # noqa: F401 (the fixture, for _run)

STRONG = CONFIGS / "recipe" / "strong.yaml"
CIFAR_RUNS = sorted(name for name in RUNS if name.startswith(("cifar10_lt/", "cifar100_lt/")))


@pytest.mark.slow
@pytest.mark.parametrize("name", CIFAR_RUNS)
def test_strong_overlay_fits_every_cifar_method(name: str, request, tmp_path, monkeypatch) -> None:
    _run([*(CONFIGS / f for f in RUNS[name]), STRONG], request, tmp_path, monkeypatch)


def test_strong_overlay_sets_the_recipe(capsys) -> None:
    files = [CONFIGS / "data" / "cifar100_lt.yaml", CONFIGS / "method" / "ldam_drw.yaml", STRONG]
    with pytest.raises(SystemExit):
        main(["fit", *(x for f in files for x in ("-c", str(f))), "--print_config"])
    printed = capsys.readouterr().out
    assert "max_epochs: 400" in printed
    assert "augment_policy: autoaugment" in printed and "cutout: 16" in printed
    assert "weight_decay: 0.0005" in printed
