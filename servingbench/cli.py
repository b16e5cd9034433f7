"""The ``servingbench`` command. Thin: each subcommand parses arguments and calls one package
function. Host-only modules (pydantic, pandas, Jinja2) are imported inside the commands that
need them, so ``run-cell --spec`` works inside a framework container with the runtime alone.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from servingbench.runtime.errors import UserError
from servingbench.runtime.results import RESULTS, pool_dir, summary_path, workload_path

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_").replace("_", "-")] = fn
    return fn


def _load(path: str):
    from servingbench.host.config import load_config

    return load_config(path)


def _terminate_on_sigterm() -> None:
    """Turn SIGTERM (Snakemake interrupted, a cluster pre-emption) into SystemExit so that
    ``finally`` blocks stop the server tree and no partial file is left."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@command
def cmd_cells(a: argparse.Namespace) -> int:
    from servingbench.host.config import expand_cells

    for cell in expand_cells(_load(a.config)):
        print(json.dumps(cell))
    return 0


@command
def cmd_validate(a: argparse.Namespace) -> int:
    from servingbench.host.config import expand_cells

    cfg = _load(a.config)
    if cfg.weights == "dummy":  # exact special-token ids need transformers: checked here, not at every parse
        from servingbench.host.models import dummy_vocab_problem

        for model in cfg.models:
            problem = dummy_vocab_problem(cfg, model)
            if problem:
                raise ValueError(f"{a.config}: {problem}")
    print(f"{a.config}: ok ({len(expand_cells(cfg))} cells)")
    return 0


def _spec_from_args(a: argparse.Namespace):
    from servingbench.runtime.spec import CellSpec

    if a.spec:
        text = a.spec
        if a.spec.startswith("@"):
            try:
                text = Path(a.spec[1:]).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"--spec {a.spec}: cannot read the spec file "
                                f"({getattr(exc, 'strerror', None) or exc}); give @FILE of an existing file") from None
        try:
            return CellSpec.from_json(text)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            where = a.spec if a.spec.startswith("@") else "the --spec JSON"
            raise UserError(f"--spec: {where} is not a cell spec ({type(exc).__name__}: {exc}); pass the JSON "
                            "the Snakemake rule passes, or --config with --framework, --model, --task "
                            "and --mode") from None
    if not a.config:
        raise UserError("run-cell: give --spec JSON (what the Snakemake rule passes) or --config with the cell names")
    from servingbench.host import config as c

    cfg = _load(a.config)
    if a.sweep and getattr(cfg.sweeps, a.sweep) is None:
        raise UserError(f"--sweep {a.sweep}: {a.config} has no sweeps.{a.sweep} (set it, or measure a cell)")
    if a.sweep == "concurrency":
        return c.concurrency_sweep_spec(cfg, a.framework, a.model)
    if a.sweep == "context":
        return c.context_sweep_spec(cfg, a.framework, a.model)
    if a.sweep == "capacity":
        return c.capacity_sweep_spec(cfg, a.framework, a.model, a.task)
    return c.cell_spec(cfg, a.framework, a.model, a.task, a.mode)


def _default_workload(results: str, spec) -> str:
    name = "context" if spec.kind == "sweep_context" else spec.task
    return str(workload_path(results, spec.model, name))


def _interrupted(spec: Any, out: str, exc: BaseException) -> int:
    """One line for a cell stopped by a signal (Ctrl-C; SIGTERM from Snakemake, a scheduler or
    `kill`): run_cell has already stopped its server and written the failure record."""
    from servingbench.runtime.cell import interrupt_signal
    from servingbench.runtime.results import failure_path

    code, name = interrupt_signal(exc)
    name = name or f"exit {code}"
    try:
        print(f"servingbench: cell {spec.cell_id()} interrupted ({name}): no result written; "
              f"failure record {failure_path(out)}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr went with the interrupted pipeline (`| tee log`)
        pass
    return code


def _measure_cell(a: argparse.Namespace, provider: Any, where: str = "") -> int:
    from servingbench.runtime.cell import CellFailed, run_cell

    _terminate_on_sigterm()
    spec = _spec_from_args(a)
    try:
        run_cell(spec, a.workload or _default_workload(a.results, spec), a.out, a.results, provider=provider)
    except CellFailed as exc:
        print(f"servingbench: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, or SIGTERM via _terminate_on_sigterm
        return _interrupted(spec, a.out, exc)
    print(f"servingbench: {spec.cell_id()}{where} -> {a.out}", file=sys.stderr)
    return 0


@command
def cmd_run_cell(a: argparse.Namespace) -> int:
    """Start (or reuse) a server, measure one cell or sweep, write its result."""
    from servingbench.runtime.pool import provider_from_env

    return _measure_cell(a, provider_from_env())


@command
def cmd_measure(a: argparse.Namespace) -> int:
    """Measure an already-running server (a deployed endpoint): no server is started."""
    from urllib.parse import urlsplit

    from servingbench.runtime.providers import external_server

    url = urlsplit(a.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UserError(f"--url {a.url}: not an http:// or https:// address with a host, e.g. http://127.0.0.1:8000")
    return _measure_cell(a, external_server(a.url), f" at {a.url}")


@command
def cmd_prepare_model(a: argparse.Namespace) -> int:
    from servingbench.host.models import prepare_model

    cfg = _load(a.config)
    from servingbench.runtime.frameworks import get_adapter

    # A server that can only load weights from disk (`transformers serve`): dummy runs write random ones.
    with_weights = cfg.weights == "dummy" and any(get_adapter(arm.adapter or name).dummy_weights_on_disk
                                                  for name, arm in cfg.frameworks.items())
    print(prepare_model(cfg, a.model, a.out, with_weights=with_weights))
    return 0


@command
def cmd_prepare_gguf(a: argparse.Namespace) -> int:
    """The llamacpp arm's GGUF: the model folder's weights, same dtype (servingbench.host.gguf_export)."""
    from servingbench.host.gguf_export import prepare_gguf
    from servingbench.host.models import ModelPrepError

    try:
        print(prepare_gguf(_load(a.config), a.model, a.model_dir or f"models/{a.model}", a.out))
    except ModelPrepError as exc:
        print(f"servingbench: {exc}", file=sys.stderr)
        return 2
    return 0


@command
def cmd_gpu_bandwidth(a: argparse.Namespace) -> int:
    """The GPU's measured copy bandwidth, for the report's bandwidth floor."""
    from servingbench.host.gpu_bandwidth import write

    r = write(a.out, size_mib=a.size_mib, repeats=a.repeats)
    print(f"{r.device_name}: {r.copy_gb_s:.0f} GB/s copy bandwidth (median of {r.repeats}; "
          f"{r.copy_gb_s_min:.0f}-{r.copy_gb_s_max:.0f})")
    return 0


@command
def cmd_build_workload(a: argparse.Namespace) -> int:
    from servingbench.host import build_workloads, workloads

    cfg = _load(a.config)
    model_dir = a.model_dir or f"models/{a.model}"
    if not Path(model_dir, "config.json").is_file():
        raise UserError(f"{model_dir}: not a prepared model folder (no config.json); "
                        f"run `servingbench prepare-model --model {a.model} --out {model_dir}` first")
    if a.task == "context":
        workloads.build_context_workload(cfg, a.model, model_dir, a.out)
    else:
        build_workloads.build_workload(cfg, a.model, a.task, model_dir, a.out)
    return 0


def _results_folder(path: str) -> None:
    if not Path(path).is_dir():
        raise UserError(f"--results {path}: no such folder; give the results folder of a run (default: results)")


@command
def cmd_convert_trace(a: argparse.Namespace) -> int:
    from servingbench.host.trace import convert_mooncake

    print(f"{a.out}: {convert_mooncake(a.src, a.out, a.max_requests)} requests")
    return 0


@command
def cmd_aggregate(a: argparse.Namespace) -> int:
    from servingbench.host.aggregate import aggregate, write_summary

    _results_folder(a.results)
    df = aggregate(_load(a.config), a.results, a.allow_stale, a.config)
    write_summary(df, a.results)
    print(f"{summary_path(a.results)}: {len(df)} rows")
    return 0


@command
def cmd_report(a: argparse.Namespace) -> int:
    from servingbench.host.report import render_report

    _results_folder(a.results)
    out = render_report(_load(a.config), a.results, a.out, allow_stale=a.allow_stale, source=a.config)
    print(out)
    return 0


@command
def cmd_publish(a: argparse.Namespace) -> int:
    from servingbench.host.publish import publish

    print(publish(a.results, a.report, a.config, a.out, overwrite=a.overwrite))
    return 0


@command
def cmd_compare(a: argparse.Namespace) -> int:
    from servingbench.host.compare import compare_main

    print(compare_main(a.run_a, a.run_b))
    return 0


@command
def cmd_stop_servers(a: argparse.Namespace) -> int:
    from servingbench.runtime.pool import ServerPool

    stopped = ServerPool(pool_dir(a.results)).stop_all()
    print(f"stopped {stopped} pooled server(s)")
    return 0


@command
def cmd_schemas(a: argparse.Namespace) -> int:
    from servingbench.host import schema_gen

    if a.write:
        changed = schema_gen.write()
        print("\n".join(f"wrote {p}" for p in changed) or "schemas and docs already match the types")
        return 0
    stale = schema_gen.drifted()
    for p in stale:
        print(f"servingbench: {p} differs from servingbench/runtime/records.py; run `servingbench schemas --write`",
              file=sys.stderr)
    return 1 if stale else 0


def _cell_args(p: argparse.ArgumentParser, need_out: bool = True) -> None:
    p.add_argument("--config", help="config YAML (host side)")
    p.add_argument("--spec", help="resolved cell spec as JSON, or @file (what the Snakemake rule passes)")
    p.add_argument("--framework", help="arm, e.g. vllm, transformers-serve")
    p.add_argument("--model")
    p.add_argument("--task")
    p.add_argument("--mode", choices=["sync", "stream"])
    p.add_argument("--sweep", choices=["concurrency", "context", "capacity"],
                   help="run a sweep instead of a cell (capacity: with --task)")
    p.add_argument("--workload", help="workload JSONL (default: RESULTS/workloads/MODEL/TASK.jsonl)")
    p.add_argument("--results", default=RESULTS, help="results folder (default: results)")
    p.add_argument("--out", required=need_out, help="result file to write")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="servingbench", description="Benchmark LLM serving frameworks.")
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("cells", "validate"):
        p = sub.add_parser(name, help={"cells": "print the expanded matrix, one JSON object per cell",
                                       "validate": "validate a config and exit"}[name])
        p.add_argument("--config", default="config.yaml")
    _cell_args(sub.add_parser("run-cell", help="start a server, measure one cell or sweep, stop it"))
    p = sub.add_parser("measure", help="measure an already-running server (no server is started)")
    _cell_args(p)
    p.add_argument("--url", required=True, help="base URL of the running server, e.g. http://127.0.0.1:8000")
    p = sub.add_parser("prepare-model", help="make models/MODEL ready offline")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("prepare-gguf", help="write models/MODEL.gguf for the llamacpp arm")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--model", required=True)
    p.add_argument("--model-dir", help="the prepared model folder (default: models/MODEL)")
    p.add_argument("--out", required=True)
    p = sub.add_parser("gpu-bandwidth", help="measure the GPU's memory (copy) bandwidth for the report's floor")
    p.add_argument("--out", required=True)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=30)
    p = sub.add_parser("build-workload", help="write a deterministic prompt set")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True, help="a task name, or 'context' for the context-length sweep")
    p.add_argument("--model-dir")
    p.add_argument("--out", required=True)
    p = sub.add_parser("convert-trace", help="convert a Mooncake trace (JSONL) to servingbench's trace format")
    p.add_argument("src", help="Mooncake trace: timestamp, input_length, output_length, hash_ids per line")
    p.add_argument("--out", required=True, help="servingbench trace to write")
    p.add_argument("--max-requests", type=int, help="only the first N lines")
    for name, help_ in (("aggregate", "build results/summary.csv"), ("report", "render report/index.html")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", default="config.yaml")
        p.add_argument("--results", default=RESULTS)
        if name == "report":
            p.add_argument("--out", default="report/index.html")
        p.add_argument("--allow-stale", action="store_true",
                       help="include results measured under other settings than the config, marked as stale "
                            "(default: refuse them, exit 2)")
    p = sub.add_parser("publish", help="write a ready-to-publish folder or .tar.gz")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--results", default=RESULTS)
    p.add_argument("--report", default="report/index.html")
    p.add_argument("--out", default="publish/servingbench-report.tar.gz")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p = sub.add_parser("compare", help="what changed between two results folders")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p = sub.add_parser("schemas", help="generate schemas/*.json and the docs' field tables from the result types")
    p.add_argument("--write", action="store_true", help="rewrite them (default: check, exit 1 if they differ)")
    p = sub.add_parser("stop-servers", help="stop every pooled server of a results folder")
    p.add_argument("--results", default=RESULTS)
    return ap


def _user_message(exc: BaseException) -> str:
    """One line (or one per problem, for configs) for a user's mistake, credentials masked."""
    from servingbench.runtime.redaction import redact

    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # raised by the OS: name the file
        # (a rename names its target second: the temporary file it came from means nothing to a user)
        text = f"{exc.filename2 or exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return redact(text)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user's mistake (UserError; ValueError such as a bad config; OSError
    such as a missing or unreadable file) is one line on stderr and exit code 2, no traceback."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UserError, ValueError, OSError) as exc:
        for line in _user_message(exc).splitlines() or [""]:
            print(f"servingbench: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
