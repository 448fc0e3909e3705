"""The shared argument checks (``lt_lightning._checks``): what they accept, and the exact messages they write."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lt_lightning._checks import check_bool, check_choice, check_float, check_int, check_probability


@pytest.mark.parametrize(
    ("kwargs", "value"),
    [({}, 0), ({"minimum": 1}, 1), ({"minimum": 0}, 7), ({"or_none": True}, None), ({"numpy": True}, np.int64(3))],
)
def test_check_int_returns_what_it_accepts(kwargs: dict, value) -> None:
    assert check_int("n", value, **kwargs) is value


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({"minimum": 1}, 0, "views must be an integer >= 1, got 0"),
        ({"minimum": 1}, 1.5, "views must be an integer >= 1, got 1.5"),
        ({"minimum": 1}, True, "views must be an integer >= 1, got True"),  # a bool is not a count
        ({"minimum": 1}, np.int64(2), "views must be an integer >= 1, got np.int64(2)"),  # numpy only if asked
        ({"minimum": 1}, None, "views must be an integer >= 1, got None"),
        ({"minimum": 1, "or_none": True}, -1, "views must be an integer >= 1 or None, got -1"),
        ({}, "3", "views must be an integer, got '3'"),
        (
            {"minimum": 1, "or_none": True, "what": "a positive integer or None"},
            0,
            "views must be a positive integer or None, got 0",
        ),
        ({"minimum": 0, "what": ">= 0"}, -2, "views must be >= 0, got -2"),
    ],
)
def test_check_int_messages(kwargs: dict, value, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_int("views", value, **kwargs)
    assert str(info.value) == message


def test_check_float_bounds_and_messages() -> None:
    assert check_float("r", 1, minimum=1) == 1
    assert check_float("r", 0.5, minimum=0, maximum=1) == 0.5
    assert check_float("r", None, or_none=True) is None
    cases = [
        ({"minimum": 1}, 0.5, "r must be a finite number >= 1, got 0.5"),
        ({"minimum": 0, "exclusive_minimum": True}, 0, "r must be a finite number > 0, got 0"),
        ({"minimum": 0, "maximum": 1}, 1.5, "r must be a finite number in [0, 1], got 1.5"),
        ({"maximum": 2}, 3, "r must be a finite number <= 2, got 3"),
        ({}, math.nan, "r must be a finite number, got nan"),
        ({}, math.inf, "r must be a finite number, got inf"),
        ({}, False, "r must be a finite number, got False"),
        ({"or_none": True}, "x", "r must be a finite number or None, got 'x'"),
    ]
    for kwargs, value, message in cases:
        with pytest.raises(ValueError) as info:
            check_float("r", value, **kwargs)
        assert str(info.value) == message


def test_check_probability_bool_and_choice() -> None:
    assert check_probability("p", 1) == 1.0 and isinstance(check_probability("p", 1), float)
    for bad in (-0.1, 1.01, True, "0.5"):
        with pytest.raises(ValueError, match=r"^p must be a probability in \[0, 1\], got "):
            check_probability("p", bad)
    assert check_bool("fsync", False) is False
    with pytest.raises(ValueError, match="^fsync must be a bool, got 1$"):
        check_bool("fsync", 1)
    assert check_choice("on_error", "skip", ("raise", "skip")) == "skip"
    with pytest.raises(ValueError) as info:
        check_choice("on_error", "ignore", ("raise", "skip"))
    assert str(info.value) == "on_error must be one of ('raise', 'skip'), got 'ignore'"
    with pytest.raises(ValueError, match=r"^view_augment must be one of 'a', 'b', got \['a'\]$"):
        check_choice("view_augment", ["a"], ("a", "b"), what="one of 'a', 'b'")
