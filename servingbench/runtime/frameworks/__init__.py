"""Framework adapters, discovered: every module of this package that defines ``ADAPTER`` (an
instance of ``base.Adapter``) is one arm, named by ``ADAPTER.name``. The other modules are what
adapters share (``base``: the interface; ``openai_api``: OpenAI-protocol requests and streams)
and ``servers/``: programs that run as a server inside a framework's container.

Adding a framework family is one new module here plus its container definition
(``containers/NAME/PROFILE.Dockerfile`` and its ``containers/images.yaml`` entry): the config's
allowed arm and framework names, the rules, provenance (``Adapter.distributions``) and the
server-side timings (``Adapter.server_timing_histograms``) all come from the adapter. A module::

    from servingbench.runtime.frameworks import openai_api

    class EchoAdapter(openai_api.UsagePerEventAdapter):
        name = "echo"                 # the arm name configs use (frameworks: {echo: {framework: echo}})
        framework = "echo"            # the family several arms may share
        distributions = ("echo-server",)   # whose installed version is the framework's version
        def launch(self, server, host, port): ...
        def build_request(self, server, item, gen, output_tokens, force_length, stream): ...

    ADAPTER = EchoAdapter()

tests/test_new_framework.py proves it with a throwaway adapter. Runtime module.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from servingbench.runtime.frameworks.base import Adapter


@functools.lru_cache(maxsize=1)
def adapters() -> dict[str, Adapter]:
    """Arm name -> adapter, for every module of this package that defines ``ADAPTER``."""
    found: dict[str, Adapter] = {}
    for mod in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        if mod.ispkg or mod.name.rpartition(".")[2].startswith("_"):
            continue
        adapter = getattr(importlib.import_module(mod.name), "ADAPTER", None)
        if isinstance(adapter, Adapter):
            if adapter.name in found:
                raise RuntimeError(f"{mod.name}: arm name {adapter.name!r} is taken by another adapter")
            found[adapter.name] = adapter
    return found


def known_arms() -> list[str]:
    """Arm names of every adapter."""
    return sorted(adapters())


def known_frameworks() -> list[str]:
    """The framework families the adapters belong to (``Adapter.framework``)."""
    return sorted({a.framework for a in adapters().values()})


def get_adapter(arm: str) -> Adapter:
    """The adapter of an arm; a clear error for an unknown one."""
    try:
        return adapters()[arm]
    except KeyError:
        raise ValueError(f"unknown framework arm {arm!r}; allowed: {', '.join(known_arms())}") from None
