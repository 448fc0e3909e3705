"""Resolve the ``class_path`` strings of Lightning / jsonargparse configs to the objects they name."""

from __future__ import annotations

import importlib
from typing import Any


def import_class_path(class_path: Any) -> Any:
    """The object ``"package.module.Name"`` names, or ``None`` when it is not such a string or does not import."""
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


__all__ = ["import_class_path"]
