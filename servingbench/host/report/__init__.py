"""The HTML report: one self-contained page rendered from a results folder and its config."""

from __future__ import annotations

from typing import Any

__all__ = ["render_report"]


def __getattr__(name: str) -> Any:
    # Lazy, so that light users of the package (compare's number formatting) skip altair and vl-convert.
    if name == "render_report":
        from servingbench.host.report.render import render_report

        return render_report
    raise AttributeError(name)
