"""Optional packages in tests: skip where a user has not installed the extra, fail under CI=true.

A module of its own, not ``conftest``: ``tests/data/conftest.py`` shadows ``import conftest``
depending on collection order.
"""

import os

import pytest


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def need(module: str, extra: str):
    """Import an optional package, or skip — and fail under ``CI=true``, where `make test` installed it."""
    try:
        return __import__(module)
    except ImportError:
        reason = f"{module} is not installed (pip install 'resnetlab[{extra}]'; `make test` installs it)"
        if on_ci():
            pytest.fail(f"{reason}; with CI=true this test must run, not skip", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
