"""Does an arm's server start for one model with other model-only arguments? (GPU machine)

    python3 scripts/device/probe_server.py CONFIG ARM MODEL [--timeout S] [-- ARG ...]

Starts the server exactly as a cell would (the kit's adapter, the config's settings), with the
arguments after ``--`` in place of the config's ``model_server_args`` for MODEL, waits for
readiness (SGLang's ``/health`` answers only after its own warm-up generation, so ready means it
generated), then stops it. Prints one JSON line (ready, start-up seconds, the command, or the
failure's category and the log's tail) and exits 0 when it served, 1 when not. Used to try a
configuration before a lease's cells use it (start.sh's BEFORE hook); the cells then record the
arguments they ran with.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from servingbench.host.config import load_config, server_spec  # noqa: E402
from servingbench.runtime.frameworks import get_adapter  # noqa: E402
from servingbench.runtime.lifecycle import ServerStartError, read_tail, start_server  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("arm")
    ap.add_argument("model")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--log", default=None, help="server log (default: probe-ARM-MODEL.log here)")
    argv = sys.argv[1:] if argv is None else argv
    # Split at "--" here: argparse cannot take an empty list after it, nor values that look like flags.
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    a.model_args = argv[cut + 1:]
    cfg = load_config(a.config)
    # As server_spec builds them: the arm's arguments, then the model's (here, the ones to try).
    model_args = tuple(a.model_args)
    spec = dataclasses.replace(server_spec(cfg, a.arm, a.model), model_server_args=model_args,
                               server_args=tuple(cfg.frameworks[a.arm].server_args) + model_args)
    log = Path(a.log or f"probe-{a.arm}-{a.model}.log")
    t0 = time.monotonic()
    out: dict[str, object] = {"arm": a.arm, "model": a.model, "model_server_args": list(a.model_args)}
    try:
        proc = start_server(get_adapter(spec.adapter_name), spec, log, a.timeout)
    except ServerStartError as exc:
        out.update(ready=False, category=exc.category, error=str(exc)[:500], waited_s=round(time.monotonic() - t0, 1),
                   log_tail=read_tail(log, 3000))
        print(json.dumps(out))
        return 1
    out.update(ready=True, startup_s=proc.startup_s, command=proc.command())
    proc.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
