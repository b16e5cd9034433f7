"""The kit's one error type for a user's mistake. Runtime module: standard library only."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what was asked (a missing file, a bad value, an output that already exists
    or cannot be written), not a fault of the kit: its message says what is wrong and what to
    do. ``servingbench`` prints it as one line and exits with code 2, without a traceback."""
