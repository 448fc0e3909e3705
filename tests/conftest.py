"""Shared fixtures: a generated CIFAR-10 root (from ``../shared/data``) and a plain copy of LDAM-DRW's selection.

Two tiers (issue 19.5). ``pytest -q`` runs the lean suite: every formula, resume, hostile and contract test, each
method's wiring once (Digits-LT), each dataset once and one 2-process DDP fit (marked ``lean``). Tests marked
``slow`` or ``ddp`` -- the conformance runs: every config fitted on every dataset, the other multi-process DDP runs,
the GPU scripts on the CPU, the long notebook -- are deselected unless
``LT_LIGHTNING_SLOW=1`` is set or the run selects tests itself (``-m``, ``-k`` or a path / node id), e.g.
``pytest -m "(slow or ddp) and not lean"`` (the slow tier alone), ``pytest -k ddp``, ``pytest tests/test_ddp.py``.
``.ci/run`` runs both tiers.

The suite runs on two pytest-xdist workers (``addopts`` in pyproject.toml: ``-n 2 --dist worksteal``, the two
cores of the project's machines; ``-n 0`` runs it in one process, ``-n auto`` on every core). Tests share no files:
each writes under its own ``tmp_path``. Every worker runs on one intra-op thread (``OMP_NUM_THREADS=1`` for
subprocesses, ``torch.set_num_threads(1)`` here): the tiny models of the tests run several times faster on one thread
than on two that compete with other processes on a 2-core machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

#: ``LT_LIGHTNING_SLOW=1``: run the ``slow`` conformance tier with the lean suite
SLOW = os.environ.get("LT_LIGHTNING_SLOW") == "1"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the CLI / DDP subprocesses the tests start
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _selects_tests_itself(config: pytest.Config) -> bool:
    """``-m``, ``-k`` or explicit paths / node ids (anything but the configured ``testpaths``)."""
    if config.option.markexpr or config.option.keyword:
        return True
    root = Path(str(config.rootpath))
    default = {(root / p).resolve() for p in config.getini("testpaths")} | {root.resolve()}
    return any(Path(arg.split("::")[0]).resolve() not in default for arg in config.args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SLOW or _selects_tests_itself(config):
        return
    slow = [item for item in items if in_slow_tier(item)]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not in_slow_tier(item)]


def in_slow_tier(item: pytest.Item) -> bool:
    """``slow`` tests and multi-process ``ddp`` tests, except those marked ``lean`` (one DDP fit stays lean)."""
    marked = item.get_closest_marker("slow") or item.get_closest_marker("ddp")
    return bool(marked) and not item.get_closest_marker("lean")


#: ``<repo>/../shared/data`` -- the offline CIFAR-10 re-encoding and its unpacker (absent on some machines)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MAKE_CIFAR10 = SHARED_DATA / "make_cifar10.py"


def ldam_reference_selection(targets: list[int] | np.ndarray, img_num_per_cls: list[int], rand_number: int = 0):
    """LDAM-DRW's ``IMBALANCECIFAR10.gen_imbalanced_data`` (kaidic/LDAM-DRW ``imbalance_cifar.py``), copied plainly.

    Uses the GLOBAL numpy generator exactly as their code does (``np.random.seed(rand_number)`` in ``__init__``,
    then ``np.random.shuffle`` per class). Returns ``(selected indices in their order, {class: n_selected},
    {class: the rest of its shuffled indices})`` -- the third item is the only addition to their loop. The global
    numpy state is restored afterwards so other tests are not affected.
    """
    state = np.random.get_state()
    try:
        np.random.seed(rand_number)
        new_index = []
        targets_np = np.array(targets, dtype=np.int64)
        classes = np.unique(targets_np)
        num_per_cls_dict = dict()
        rest = {}
        for the_class, the_img_num in zip(classes, img_num_per_cls, strict=False):
            num_per_cls_dict[the_class] = the_img_num
            idx = np.where(targets_np == the_class)[0]
            np.random.shuffle(idx)
            selec_idx = idx[:the_img_num]
            new_index.append(selec_idx)
            rest[int(the_class)] = idx[the_img_num:]
        return np.concatenate(new_index), num_per_cls_dict, rest
    finally:
        np.random.set_state(state)


def ldam_reference_counts(cls_num: int, img_max: int, imb_type: str, imb_factor: float) -> list[int]:
    """LDAM-DRW's ``get_img_num_per_cls``, copied plainly (``imb_factor = 1 / rho``)."""
    img_num_per_cls = []
    if imb_type == "exp":
        for cls_idx in range(cls_num):
            num = img_max * (imb_factor ** (cls_idx / (cls_num - 1.0)))
            img_num_per_cls.append(int(num))
    elif imb_type == "step":
        for _cls_idx in range(cls_num // 2):
            img_num_per_cls.append(int(img_max))
        for _cls_idx in range(cls_num // 2):
            img_num_per_cls.append(int(img_max * imb_factor))
    else:
        img_num_per_cls.extend([int(img_max)] * cls_num)
    return img_num_per_cls


@pytest.fixture(scope="session")
def ldam_selection():
    """:func:`ldam_reference_selection` (LDAM-DRW's ``gen_imbalanced_data`` loop) for tests to call."""
    return ldam_reference_selection


@pytest.fixture(scope="session")
def ldam_counts():
    """:func:`ldam_reference_counts` (LDAM-DRW's ``get_img_num_per_cls``) for tests to call."""
    return ldam_reference_counts


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CIFAR-10 root (``ROOT/cifar-10-batches-py``) written once per session by ``make_cifar10.py`` (~10 s).

    Skips the test when ``../shared/data/make_cifar10.py`` (or its archive) is not on this machine.
    """
    if not MAKE_CIFAR10.is_file() or not (SHARED_DATA / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip(f"{MAKE_CIFAR10} (and cifar10-jpeg.tar.gz beside it) not found: no offline CIFAR-10 here")
    root = tmp_path_factory.mktemp("cifar10")
    result = subprocess.run(
        [sys.executable, str(MAKE_CIFAR10), str(root)], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{MAKE_CIFAR10} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return root


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models run
    many times faster on one thread than on two that compete with other processes on a 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_cifar10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR-10's file layout with 100 random images per class: the configs' head class gets 100, the tail 1 (the
    real CIFAR-10 readers and split are tested in tests/data/test_cifar.py; a one-step run needs no 12,406 images).
    Read-only for the tests that use it."""
    from tests.cifar_files import write_tiny_cifar10

    root = tmp_path_factory.mktemp("cifar10_tiny")
    write_tiny_cifar10(root, train_per_class=100, test_per_class=1)
    return root
