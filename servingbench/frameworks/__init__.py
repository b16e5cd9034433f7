"""Framework adapters: one module per arm, found by name (``transformers-serve`` ->
``servingbench.frameworks.transformers_serve``). A new framework is one new module that
defines ``ADAPTER``; nothing else in the tree changes."""

from __future__ import annotations

import importlib
import pkgutil

from servingbench.frameworks.base import Adapter

_NOT_ARMS = {"base", "openai_api"}


def known_arms() -> list[str]:
    """Arm names of every adapter module in this package."""
    names = []
    for mod in pkgutil.iter_modules(__path__):
        if not mod.ispkg and mod.name not in _NOT_ARMS and not mod.name.startswith("_"):
            names.append(mod.name.replace("_", "-"))
    return sorted(names)


def get_adapter(arm: str) -> Adapter:
    """The adapter of an arm; a clear error for an unknown one."""
    if arm not in known_arms():
        raise ValueError(f"unknown framework arm {arm!r}; allowed: {', '.join(known_arms())}")
    module = importlib.import_module(f"{__name__}.{arm.replace('-', '_')}")
    return module.ADAPTER
