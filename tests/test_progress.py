"""Progress lines of long steps: measured requests, warm-ups, prompt building (issue 19, class 7)."""

from __future__ import annotations

import io

from servingbench.runtime.cell import Progress


def test_a_log_gets_a_line_at_the_end_with_what_is_counted():
    out = io.StringIO()
    p = Progress("workload m/chat", 3, out, unit="prompts")
    for _ in range(3):
        p.step()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[workload m/chat] 1/3 prompts, ETA")  # the first, then every 5 s
    assert lines[-1].startswith("[workload m/chat] 3/3 prompts, ETA")  # and the last
    assert "errors" not in out.getvalue()


def test_requests_show_their_errors():
    out = io.StringIO()
    p = Progress("a/m/chat/stream warm-up", 2, out)
    p.step(ok=True)
    p.step(ok=False)
    assert "2/2 requests, 1 errors" in out.getvalue()


def test_a_short_step_stays_quiet():
    """after_s: a warm-up or a prompt set that finishes within it prints nothing at all."""
    out = io.StringIO()
    p = Progress("x", 2, out, after_s=60.0)
    p.step()
    p.step()
    p.show(" (10 candidates tried)")
    p.close()
    assert out.getvalue() == ""


def test_a_note_while_nothing_advances():
    out = io.StringIO()
    p = Progress("workload m/chat", 10, out, unit="prompts")
    p.show(" (140000 candidates tried)")
    assert "0/10 prompts (140000 candidates tried), ETA unknown" in out.getvalue()
