"""Absurd values for every numeric hyper-parameter of the Digits-LT experiment configs, through the real CLI parser.

Discovery: every numeric ``init_args`` value of the Digits-LT experiments (``configs/data/digits_lt.yaml`` merged with
each method file) (callbacks, model backbone /
classifier / criterion / optimizer / scheduler, data and its sampler), deduplicated by ``(class, argument)`` (the first
config that has it is used). Each is replaced in turn by ``-1``, ``0``, ``nan``, ``10**12`` (integers) or ``-1.0``,
``0.0``, ``nan``, ``inf``, ``1e12`` (floats); ``10**12`` is left out for sizes that would allocate that many units
(layer widths, depths, channels, queue lengths: an allocation failure says nothing about validation).

Run (the fastest faithful path): the YAML with that one value changed, callbacks other than the one under test and the
loggers removed, goes through the parser of :class:`~lt_lightning.cli.LongTailCLI` (built once) --
``parse_args`` (jsonargparse's type checks) then ``instantiate_classes`` (what ``LongTailCLI(run=False)`` does, the
class-prior links included; only the ``Trainer`` object, whose arguments are not under test, is not built) -- then
``model.configure_optimizers()`` inside ``run_epochs(<the config's max_epochs>)`` (optimizers and schedulers are built
lazily; a fit gives the scheduler the run's length the same way) and ``datamodule.build_train_sampler()``
(so is the sampler). Outcomes:

* ``error``: ``ValueError`` / ``TypeError`` / a parser error whose message names the argument;
* ``accepted``: no error;
* ``crash``: any other exception, or an error that does not name the argument (bad).

:data:`DOMAINS` says, per argument, which values are invalid by the method's definition; for those the outcome must
be ``error``. A legal but absurd value (a huge epoch count) may be ``accepted`` or an ``error``, never a ``crash``.
Cases that fail because the validation belongs in a file this suite's author does not own are ``xfail(strict=True)``
with the fix (:data:`KNOWN_GAPS`). ``test_hostile_hyperparameter_outcome_table`` prints the whole table (``-s``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import math
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from lt_lightning.experiments import experiment_configs, methods
from lt_lightning.schedule import run_epochs
from tests.helpers import composed_yaml

REPO = Path(__file__).resolve().parents[2]
#: every Digits-LT method, by name (its files: ``lt_lightning.experiments.experiment_configs("digits_lt", name)``)
CONFIGS = methods("digits_lt")

HUGE_INT = 10**12
INT_VALUES: tuple[Any, ...] = (-1, 0, math.nan, HUGE_INT)
FLOAT_VALUES: tuple[Any, ...] = (-1.0, 0.0, math.nan, math.inf, 1e12)

#: domain of each argument: which of the absurd values are invalid by the method's definition
#: (``int``/``float`` + bound; ``[0,1]`` etc. are float intervals; ``epoch_or_fraction`` is an epoch or a fraction of
#: ``max_epochs``)
DOMAINS: dict[tuple[str, str], str] = {
    ("ModelCheckpoint", "save_top_k"): "int>=-1",
    ("DigitsLTDataModule", "imbalance_ratio"): "float>=1",
    ("DigitsLTDataModule", "batch_size"): "int>=1",
    ("DigitsLTDataModule", "num_workers"): "int>=0",
    ("DigitsLTDataModule", "views"): "int>=1",
    ("ResNet32", "in_channels"): "int>=1",
    ("SGD", "lr"): "float>=0",
    ("SGD", "momentum"): "[0,1]",
    ("SGD", "weight_decay"): "float>=0",
    ("WarmupCosineLR", "max_epochs"): "epoch_or_fraction",
    ("WarmupCosineLR", "warmup_epochs"): "epoch_or_fraction",
    ("BilateralSampler", "branch_batch_size"): "int>=1",
    ("BBNResNetCifar", "depth"): "int>=1",
    ("BBNResNetCifar", "in_channels"): "int>=1",
    ("BBNResNetCifar", "feature_scale"): "float>0",
    ("CausalHead", "num_heads"): "int>=1",
    ("CausalHead", "tau"): "float>0",
    ("CausalHead", "gamma"): "float>=0",
    ("CausalHead", "alpha"): "float>=0",
    ("CausalHead", "momentum"): "[0,1]",
    ("ClassBalancedLoss", "beta"): "[0,1]",
    ("ClassBalancedLoss", "gamma"): "float>=0",
    ("CosineHead", "scale"): "float>0",
    ("ClassifierRetraining", "epochs"): "epoch_or_fraction",
    ("ClassifierRetraining", "classifier_lr_factor"): "float>0",
    ("MaxNormFinetune", "thresh"): "[0,1]",
    ("BatchMixing", "alpha"): "float>0",
    ("BatchMixing", "prob"): "[0,1]",
    ("BatchMixing", "stop_epoch"): "float",  # an epoch, a fraction, or negative: the last k epochs (or -f) unmixed
    ("BatchMixing", "kappa"): "float>0",
    ("BatchMixing", "tau"): "[0,1]",
    ("DistillationLoss", "temperature"): "float>0",
    ("DistillationLoss", "alpha"): "[0,1]",
    ("DistillationLoss", "teacher_power"): "float>=0",
    ("ResamplingSchedule", "switch_epoch"): "epoch_or_fraction",
    ("DeferredReweighting", "switch_epoch"): "epoch_or_fraction",
    ("DeferredReweighting", "beta"): "[0,1]",
    ("EqualizationLoss", "threshold"): "[0,1]",
    ("EqualizationLoss", "gamma"): "[0,1]",
    ("FocalLoss", "gamma"): "float>=0",
    ("ProjectionHead", "projection_dim"): "int>=1",
    ("SupervisedContrastiveLoss", "temperature"): "float>0",
    ("SupervisedContrastiveLoss", "base_temperature"): "float>0",
    ("SupervisedContrastiveLoss", "k_positives"): "int>=0",
    ("SupervisedContrastiveLoss", "views"): "int>=1",
    ("SupervisedContrastiveLoss", "classifier_weight"): "float>=0",
    ("LADELoss", "alpha"): "float>=0",
    ("LADELoss", "remine_lambda"): "float>=0",
    ("LDAMLoss", "max_m"): "float>=0",
    ("LDAMLoss", "s"): "float>0",
    ("LogitAdjustedLoss", "tau"): "float>=0",
    ("LabelAwareSmoothingLoss", "smooth_head"): "[0,1]",
    ("LabelAwareSmoothingLoss", "smooth_tail"): "[0,1]",
    ("MomentumEncoder", "momentum"): "[0,1]",
    ("MomentumEncoder", "queue_size"): "int>=0",
    ("PaCoLoss", "alpha"): "float>=0",
    ("PaCoLoss", "beta"): "float>=0",
    ("PaCoLoss", "gamma"): "float>=0",
    ("PaCoLoss", "temperature"): "float>0",
    ("WeightedCrossEntropyLoss", "q"): "float>=0",
    ("MultiExpertResNetCifar", "depth"): "int>=1",
    ("MultiExpertResNetCifar", "num_experts"): "int>=1",
    ("MultiExpertResNetCifar", "shared_stages"): "int>=0",
    ("MultiExpertResNetCifar", "in_channels"): "int>=1",
    ("MultiExpertHead", "num_experts"): "int>=1",
    ("RIDELoss", "max_m"): "float>=0",
    ("RIDELoss", "logit_scale"): "float>0",
    ("RIDELoss", "base_loss_factor"): "float>=0",
    ("RIDELoss", "diversity_factor"): "float",  # RIDE's is negative
    ("RIDELoss", "diversity_temperature"): "float>0",
    ("RIDELoss", "reweight_factor"): "float>=0",
    ("ExpertRouterTraining", "epochs"): "epoch_or_fraction",
    ("ExpertRouterLoss", "pos_weight"): "float>0",
    ("RoutedMultiExpertHead", "num_experts"): "int>=1",
    ("RoutedMultiExpertHead", "top_k"): "int>=1",
    ("RoutedMultiExpertHead", "hidden_features"): "int>=1",
    ("RoutedMultiExpertHead", "threshold"): "[0,1]",
    ("TestTimeAggregation", "epochs"): "int>=1",
    ("TestTimeAggregation", "lr"): "float>0",
    ("TestTimeAggregation", "momentum"): "[0,1]",  # SGD momentum of the test-time weights
    ("TestTimeAggregation", "weight_decay"): "float>=0",
    ("TestTimeAggregation", "min_weight"): "[0,1]",
    ("DiverseExpertLoss", "lam"): "float>=0",
    ("SeesawLoss", "p"): "float>=0",
    ("SeesawLoss", "q"): "float>=0",
    ("ProCoLoss", "alpha"): "float>=0",
    ("ProCoLoss", "tau"): "float>=0",
    ("ProCoLoss", "temperature"): "float>0",
    ("ProCoLoss", "views"): "int>=1",
    ("BalancedContrastiveLoss", "alpha"): "float>=0",
    ("BalancedContrastiveLoss", "beta"): "float>=0",
    ("BalancedContrastiveLoss", "tau"): "float>=0",
    ("BalancedContrastiveLoss", "temperature"): "float>0",
    ("GLMCLoss", "label_weighting"): "float>=0",
    ("GLMCHead", "projection_dim"): "int>=1",
    ("PowerBilateralSampler", "branch_batch_size"): "int>=1",
    ("GLMCLoss", "consistency_weight"): "float>=0",
    ("GlobalLocalMixing", "beta"): "float>0",
    ("PowerBilateralSampler", "q"): "[0,1]",
    ("CLIPVisualBackbone", "in_channels"): "int>=1",  # 1 or 3
    ("AdaptFormer", "bottleneck"): "int>=1",
    ("TestTimeCrops", "crop_size"): "int>=1",
    ("TestTimeCrops", "resize_to"): "int>=1",
}

#: sizes whose ``10**12`` would allocate that many units (not a validation question)
ALLOCATING = {
    "in_channels",
    "depth",
    "num_experts",
    "projection_dim",
    "queue_size",
    "hidden_features",
    "num_heads",
    "shared_stages",
    "bottleneck",
}

#: other words an error may use for the argument (torch's optimizers say "learning rate"; ``shared_stages`` fixes
#: how many ``expert_widths`` there must be, and the consistency error names the latter)
ALIASES: dict[str, tuple[str, ...]] = {
    "lr": ("learning rate",),
    "momentum": ("momentum value",),
    "weight_decay": ("weight_decay value",),
    "shared_stages": ("expert_widths",),
}

_SGD_FIX = (
    "torch.optim.SGD accepts NaN/inf (and momentum > 1): LongTailModule.configure_optimizers (lt_lightning/module.py) "
    "should raise ValueError naming any non-finite float in optimizer.defaults, and momentum outside [0, 1]"
)
_INF = "accepts inf (validated with `not x > 0` / `x >= 0`, which inf passes): check math.isfinite too, in "
#: ``(class, argument, value)`` whose outcome is wrong today, the validation being in a file this suite does not own
KNOWN_GAPS: dict[tuple[str, str, str], str] = {}


# ------------------------------------------------------------------------------------------------ discovery
def _walk(node: Any, path: list[Any], found: dict[tuple[str, str], tuple[Path, list[Any], Any]], config: Path) -> None:
    if isinstance(node, dict):
        if "class_path" in node:
            cls = str(node["class_path"]).rsplit(".", 1)[-1]
            for key, value in (node.get("init_args") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found.setdefault((cls, key), (config, [*path, "init_args", key], value))
                _walk(value, [*path, "init_args", key], found, config)
        else:
            for key, value in node.items():
                _walk(value, [*path, key], found, config)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk(value, [*path, i], found, config)


@functools.cache
def _load(config: str) -> dict:
    """The YAML a Digits-LT method's two files say, merged (:func:`tests.helpers.composed_yaml`)."""
    return composed_yaml(experiment_configs("digits_lt", config))


@functools.cache
def discover() -> dict[tuple[str, str], tuple[Path, list[Any], Any]]:
    """``{(class, argument): (first config, path in its YAML, value)}`` of every numeric ``init_args`` value."""
    found: dict[tuple[str, str], tuple[Path, list[Any], Any]] = {}
    for config in CONFIGS:
        _walk(_load(config), [], found, config)
    return found


def _label(value: Any) -> str:
    """``-1``, ``0``, ``nan``, ``10**12`` (integers); ``-1.0``, ``0.0``, ``nan``, ``inf``, ``1e12`` (floats)."""
    if value == HUGE_INT and isinstance(value, int):
        return "10**12"
    return "1e12" if value == 1e12 else str(value)


def is_invalid(domain: str, value: Any) -> bool:
    """Whether ``value`` is outside ``domain`` (NaN always is; ``inf`` is for every bounded or finite domain)."""
    if isinstance(value, float) and math.isnan(value):
        return True
    if domain.startswith("int") and isinstance(value, float):
        return True  # inf (nan above) for an integer argument
    if isinstance(value, float) and math.isinf(value):
        return True  # no domain here admits infinity
    lower = {"int>=-1": -1, "int>=0": 0, "int>=1": 1, "float>=0": 0.0, "float>=1": 1.0, "[0,1]": 0.0}
    if domain in lower:
        return value < lower[domain] or (domain == "[0,1]" and value > 1)
    if domain == "float>0":
        return value <= 0
    if domain == "epoch_or_fraction":
        return value < 0
    if domain in ("int", "float"):
        return False
    raise AssertionError(f"unknown domain {domain!r}")


def cases() -> list[Any]:
    params = []
    for (cls, arg), (_, _, default) in discover().items():
        is_int = isinstance(default, int)
        for value in INT_VALUES if is_int else FLOAT_VALUES:
            if value == HUGE_INT and arg in ALLOCATING:
                continue
            label = _label(value)
            gap = KNOWN_GAPS.get((cls, arg, label))
            marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
            params.append(pytest.param(cls, arg, value, id=f"{cls}.{arg}={label}", marks=marks))
    return params


# ------------------------------------------------------------------------------------------------ running
@functools.cache
def _parser() -> Any:
    """The parser of a :class:`LongTailCLI` (building it parses and instantiates one config once)."""
    from lt_lightning.cli import LongTailCLI

    config = _reduced(CONFIGS[0], None)
    with _quiet():
        cli = LongTailCLI(args=["--config", yaml.safe_dump(config)], run=False)
    return cli.parser


@contextlib.contextmanager
def _quiet():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield out


def _reduced(config: Path, path: list[Any] | None) -> tuple[dict, list[Any] | None]:
    """The config without loggers / progress bar and with only the callback ``path`` points into (if any)."""
    tree = copy.deepcopy(_load(config))
    callbacks = tree.get("trainer", {}).get("callbacks") or []
    keep = []
    if path is not None and path[:2] == ["trainer", "callbacks"]:
        keep = [callbacks[path[2]]]
        path = ["trainer", "callbacks", 0, *path[3:]]
    tree["trainer"] = {"logger": False, "enable_progress_bar": False, "enable_checkpointing": False, "callbacks": keep}
    if path is None:
        return tree
    return tree, path


def _names_argument(message: str, arg: str) -> bool:
    # jsonargparse appends "Given value: Namespace(...)" listing every argument: ignore those lines
    lines = [line for line in message.splitlines() if not line.strip().startswith(("Given value", "Subtypes", "usage"))]
    text = "\n".join(lines)
    return any(re.search(rf"(?<![\w.]){re.escape(word)}\b", text) for word in (arg, *ALIASES.get(arg, ())))


@functools.cache
def outcome(cls: str, arg: str, value: Any) -> tuple[str, str]:
    """``(outcome, message)`` of one case; see the module docstring."""
    config, path, _ = discover()[(cls, arg)]
    tree, path = _reduced(config, path)
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    parser = _parser()
    with _quiet() as out:
        try:
            namespace = parser.parse_args(["--config", yaml.safe_dump(tree)])
            init = parser.instantiate_classes(namespace)
            with run_epochs(_load(config)["trainer"]["max_epochs"]):
                init.model.configure_optimizers()
            init.data.build_train_sampler()
        except SystemExit:
            message = out.getvalue()
            message = message[message.rfind("error:") :]  # jsonargparse: usage, then "error: Parser key ..."
            return ("error" if _names_argument(message, arg) else "crash"), message[-600:]
        except (ValueError, TypeError) as exc:
            message = str(exc)
            return ("error" if _names_argument(message, arg) else "crash"), f"{type(exc).__name__}: {message}"[-600:]
        except Exception as exc:  # noqa: BLE001 -- what the classification is about
            return "crash", f"{type(exc).__name__}: {exc}"[-600:]
    return "accepted", ""


CASES = cases()


def test_hostile_every_discovered_argument_has_a_domain() -> None:
    missing = sorted(set(discover()) - set(DOMAINS))
    assert not missing, f"numeric init_args without a domain in DOMAINS (add them): {missing}"
    assert len(CASES) > 300  # ~80 arguments x 4-5 values


@pytest.mark.parametrize(("cls", "arg", "value"), CASES)
def test_hostile_hyperparameter(cls: str, arg: str, value: Any, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result, message = outcome(cls, arg, value)
    assert result != "crash", f"{cls}.{arg}={value!r}: no clear error naming {arg!r}:\n{message}"
    if is_invalid(DOMAINS[(cls, arg)], value):
        assert result == "error", f"{cls}.{arg}={value!r} is invalid ({DOMAINS[(cls, arg)]}) but was {result}"


def test_hostile_hyperparameter_outcome_table(tmp_path, monkeypatch) -> None:
    """The table of outcomes (printed with ``-s``): per argument, the outcome of each absurd value."""
    monkeypatch.chdir(tmp_path)
    rows: dict[tuple[str, str], dict[str, str]] = {}
    totals: Counter[str] = Counter()
    for param in CASES:
        cls, arg, value = param.values
        result, _ = outcome(cls, arg, value)
        invalid = is_invalid(DOMAINS[(cls, arg)], value)
        status = result if not (invalid and result != "error") else f"{result}!"
        rows.setdefault((cls, arg), {})[_label(value)] = status
        totals[("invalid " if invalid else "legal ") + result] += 1
    print(f"\n{'argument':<48} outcomes (! = invalid value not refused)")
    for (cls, arg), row in rows.items():
        print(
            f"{cls + '.' + arg + ' [' + DOMAINS[(cls, arg)] + ']':<48} " + "  ".join(f"{k}:{v}" for k, v in row.items())
        )
    print("totals:", dict(sorted(totals.items())))
    bad = {(cls, arg, label) for (cls, arg), row in rows.items() for label, status in row.items() if "!" in status}
    bad |= {(c, a, v) for (c, a), row in rows.items() for v, s in row.items() if s.startswith("crash")}
    assert bad == set(KNOWN_GAPS), f"new: {sorted(bad - set(KNOWN_GAPS))}, fixed: {sorted(set(KNOWN_GAPS) - bad)}"
