"""The shipped experiments: a dataset's recipe composed with a method, ``-c DATA -c METHOD``.

An experiment is two config files, merged in order by the CLI::

    lt-lightning fit -c configs/data/cifar10_lt.yaml -c configs/method/ldam_drw.yaml

* ``configs/data/<dataset>.yaml``: the dataset and the recipe its papers train with (backbone, classifier init,
  optimizer, schedule, epochs): alone it is the softmax cross-entropy baseline;
* ``configs/method/<method>.yaml``: only what the method changes (loss, head, sampler, callbacks appended with
  ``trainer.callbacks+:``, the authors' own recipe values), written for the CIFAR-LT protocol; where a dataset needs
  other values (Digits-LT's 30-epoch stages, CIFAR-100-LT's tuned ones), ``configs/method/<dataset>/<method>.yaml``
  is used **instead** (complete for that dataset);
* the loggers, the last-epoch checkpoint and the learning-rate monitor are the CLI's defaults
  (:data:`lt_lightning.cli.DEFAULTS`).

Further files go after these two (a budget, ``configs/trainer/fast_bf16.yaml``, your own data:
``configs/data/folder_lt.yaml``), then command-line options. :func:`experiment_configs` gives the files of a
dataset and method, :func:`shipped` every shipped pair (the resolved-config invariant covers them all).

A dataset whose data file only swaps the data of another dataset's recipe (Places-LT: the ImageNet-LT recipe with
Places-LT's split files, ``configs/data/places_lt.yaml``) has several data files (:data:`DATA_FILES`), all before the
method file::

    lt-lightning fit -c configs/data/imagenet_lt.yaml -c configs/data/places_lt.yaml \\
        -c configs/method/places_lt/lift.yaml
"""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: datasets with a recipe in configs/data/ and every method of configs/method/ (``*_paper`` recipes: CIFAR only)
DATASETS: tuple[str, ...] = ("digits_lt", "cifar10_lt", "cifar100_lt")
#: datasets with a recipe and only the methods named here (their data is not on a CPU machine)
SOME_METHODS: dict[str, tuple[str, ...]] = {
    "imagenet_lt": ("ce", "lift"),
    "places_lt": ("ce", "lift"),
    "inat2018": ("ce", "lift"),
}
#: datasets whose data files are several (a recipe, then a data-only overlay), in order; the others have one,
#: ``configs/data/<dataset>.yaml``
DATA_FILES: dict[str, tuple[str, ...]] = {"places_lt": ("imagenet_lt", "places_lt")}
#: ``<method>_paper.yaml``: a paper's own CIFAR recipe where it differs from LDAM-DRW's
PAPER_RECIPE_DATASETS: tuple[str, ...] = ("cifar10_lt", "cifar100_lt")


def method_config(dataset: str, method: str, configs: Path = CONFIGS) -> Path:
    """``configs/method/<dataset>/<method>.yaml`` when it exists, else ``configs/method/<method>.yaml``.

    Raises:
        FileNotFoundError: neither exists (the message lists the methods there are).
    """
    for path in (configs / "method" / dataset / f"{method}.yaml", configs / "method" / f"{method}.yaml"):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no method {method!r} in {configs / 'method'} (methods: {', '.join(methods(dataset, configs)) or 'none'})"
    )


def data_config(dataset: str, configs: Path = CONFIGS) -> Path:
    path = configs / "data" / f"{dataset}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no data config {path} (datasets: {', '.join(sorted(_recipes(configs)))})")
    return path


def data_configs(dataset: str, configs: Path = CONFIGS) -> list[Path]:
    """The data files of ``dataset``, in order: ``[configs/data/D.yaml]``, or those of :data:`DATA_FILES`."""
    data_config(dataset, configs)  # FileNotFoundError naming the datasets
    return [data_config(name, configs) for name in DATA_FILES.get(dataset, (dataset,))]


def experiment_configs(dataset: str, method: str, configs: Path = CONFIGS) -> list[Path]:
    """The config files of ``method`` on ``dataset``, in order: ``[configs/data/D.yaml, <method config>]`` (every
    data file of :data:`DATA_FILES` first, for a dataset that has several)."""
    return [*data_configs(dataset, configs), method_config(dataset, method, configs)]


def experiment_args(dataset: str, method: str, configs: Path = CONFIGS) -> list[str]:
    """``["-c", DATA, "-c", METHOD]`` for ``lt-lightning fit`` / ``test`` / ``predict``."""
    return [arg for path in experiment_configs(dataset, method, configs) for arg in ("-c", str(path))]


def _recipes(configs: Path) -> set[str]:
    return {d for d in (*DATASETS, *SOME_METHODS) if (configs / "data" / f"{d}.yaml").is_file()}


def methods(dataset: str, configs: Path = CONFIGS) -> list[str]:
    """The methods shipped for ``dataset``, sorted."""
    if dataset in SOME_METHODS:
        return sorted(SOME_METHODS[dataset])
    if dataset not in DATASETS:
        return []
    general = [p.stem for p in (configs / "method").glob("*.yaml")]
    general = [m for m in general if not m.endswith("_paper") or dataset in PAPER_RECIPE_DATASETS]
    own = [p.stem for p in (configs / "method" / dataset).glob("*.yaml")]
    return sorted({*general, *own})


def shipped(configs: Path = CONFIGS) -> list[tuple[str, str]]:
    """Every shipped ``(dataset, method)``."""
    return [(d, m) for d in (*DATASETS, *SOME_METHODS) for m in methods(d, configs)]
