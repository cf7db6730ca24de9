"""The public surface of `headwater.sdk`."""

from __future__ import annotations

from types import ModuleType

import headwater.sdk


def test_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name, value in vars(headwater.sdk).items()
        if name.isidentifier() and not name.startswith("_") and not isinstance(value, ModuleType)
    }
    exported = set(headwater.sdk.__all__) - {"__version__"}
    assert headwater.sdk.__all__ == sorted(headwater.sdk.__all__, key=_isort_order)
    assert exported == public


def _isort_order(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions (ruff's RUF022 order)."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name
