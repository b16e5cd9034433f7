"""``transformers serve`` with continuous batching's prefix sharing set by servingbench.

Transformers 5 (``ContinuousBatchingConfig.allow_block_sharing``, default True) lets a request
reuse the cached KV blocks of an earlier request with the same prefix: a prefix cache, on by
default, that the ``transformers serve`` command line cannot switch off. Measured on the CPU demo
(Transformers 5.19, SmolLM2-135M): with it, the 2nd-4th turns of a conversation started 4x sooner
than the 1st and a repeated 512-token prefix 6x sooner than its first use. So that prefix caching
is a setting servingbench states (off for the seed's cells) instead of a hidden one, this entry
point sets that default from ``SERVINGBENCH_PREFIX_CACHING`` (0 or 1) and then runs the Transformers
command line exactly as ``python -m transformers.cli.transformers`` would. Transformers without
that setting have no prefix sharing to switch.

Server side (runs in the Transformers image), not part of servingbench's runtime.
"""

from __future__ import annotations

import os
import sys

ENV = "SERVINGBENCH_PREFIX_CACHING"


def set_block_sharing(allow: bool) -> bool:
    """Make ``allow`` the default of ``allow_block_sharing``; False if this Transformers has none."""
    try:
        from transformers import ContinuousBatchingConfig
    except ImportError:
        return False
    if "allow_block_sharing" not in getattr(ContinuousBatchingConfig, "__dataclass_fields__", {}):
        return False
    init = ContinuousBatchingConfig.__init__

    def __init__(self, *args, **kwargs):  # noqa: N807 - replaces the dataclass's __init__
        kwargs.setdefault("allow_block_sharing", allow)
        init(self, *args, **kwargs)

    ContinuousBatchingConfig.__init__ = __init__
    return True


def main() -> None:
    allow = os.environ.get(ENV, "0") == "1"
    if set_block_sharing(allow):
        print(f"servingbench: continuous batching prefix sharing (allow_block_sharing) {'on' if allow else 'off'}",
              file=sys.stderr, flush=True)
    from transformers.cli.transformers import main as cli

    sys.argv[0] = "transformers"
    cli()


if __name__ == "__main__":
    main()
