"""Ordinary mistakes on the command line get one line saying what is wrong and what to do,
exit code 2, and no traceback: a missing or broken ``--spec``, a missing workload, config or
results folder, ``publish`` over an existing path or without its inputs, ``compare`` with a
folder that is not a run, ``prepare-model`` for a hub model while offline, and more.

Each case calls ``servingbench.cli.main`` in this process, as the ``servingbench`` command
does; an exception escaping it would be the traceback a user sees, and fails the case.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Callable

import pytest
import yaml

from servingbench import cli
from tests.reliability.conftest import tiny_config_dict

pytestmark = pytest.mark.bad_config


def _spec(tmp: Path, **changes) -> str:
    from servingbench.host.config import cell_spec, parse_config

    spec = json.loads(cell_spec(parse_config(tiny_config_dict()), "transformers-naive", "smollm2-135m", "chat",
                                "sync").to_json())
    spec.update(changes)
    return json.dumps(spec)


def _cfg(tmp: Path, **changes) -> str:
    data = tiny_config_dict()
    data.update(changes)
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _file(tmp: Path, name: str, text: str = "x") -> str:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _folder(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _publish(tmp: Path, *, report: bool = True, summary: bool = True, config: bool = True, out_exists: bool = False,
             report_text: str = "<html></html>") -> list[str]:
    results = tmp / "results"
    results.mkdir()
    if summary:
        _file(tmp, "results/summary.csv", "a,b\n")
        _file(tmp, "results/summary.parquet", "PAR1")
    if report:
        _file(tmp, "report/index.html", report_text)
    if config:
        _cfg(tmp)
    if out_exists:
        (tmp / "out").mkdir()
    return ["publish", "--results", str(results), "--report", str(tmp / "report/index.html"),
            "--config", str(tmp / "cfg.yaml"), "--out", str(tmp / "out")]


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


OUT = ["--out", "o.json"]
# what -> (argv from a tmp folder, text the one line must contain, set-up needing monkeypatch or None)
CASES: dict[str, tuple[Callable[[Path], list[str]], str, Callable | None]] = {
    "--spec @missing-file": (lambda t: ["run-cell", "--spec", f"@{t}/missing.json", *OUT],
                             "cannot read the spec file (No such file or directory)", None),
    "--spec @a-folder": (lambda t: ["run-cell", "--spec", f"@{t}", *OUT], "cannot read the spec file (Is a directory)",
                         None),
    "--spec @file with invalid JSON": (lambda t: ["run-cell", "--spec", f"@{_file(t, 's.json', '{oops')}", *OUT],
                                       "s.json is not a cell spec (JSONDecodeError", None),
    "--spec invalid JSON": (lambda t: ["run-cell", "--spec", '{"server": ', *OUT],
                            "the --spec JSON is not a cell spec (JSONDecodeError", None),
    "--spec a JSON list": (lambda t: ["run-cell", "--spec", "[1, 2]", *OUT], "is not a cell spec", None),
    "--spec missing keys": (lambda t: ["run-cell", "--spec", '{"task": "chat"}', *OUT], "is not a cell spec (KeyError",
                            None),
    "--spec an unknown key": (lambda t: ["run-cell", "--spec", _spec(t, colour="red"), *OUT],
                              "unexpected keyword argument 'colour'", None),
    "--spec an unknown mode": (lambda t: ["run-cell", "--spec", _spec(t, mode="batch"), *OUT],
                               "mode: 'batch' is not one of", None),
    "--spec zero requests": (lambda t: ["run-cell", "--spec", _spec(t, requests=0), *OUT], "requests must be >= 1",
                             None),
    "run-cell with neither --spec nor --config": (lambda t: ["run-cell", *OUT], "give --spec JSON", None),
    "run-cell with a missing config file": (lambda t: ["run-cell", "--config", f"{t}/nope.yaml", *OUT],
                                            "nope.yaml: cannot read config (No such file or directory)", None),
    "run-cell with an unknown arm": (lambda t: ["run-cell", "--config", _cfg(t), "--framework", "vlm", "--model",
                                                "smollm2-135m", "--task", "chat", "--mode", "sync", *OUT],
                                     "unknown framework 'vlm'", None),
    "run-cell without --task": (lambda t: ["run-cell", "--config", _cfg(t), "--framework", "transformers-naive",
                                           "--model", "smollm2-135m", "--mode", "sync", *OUT],
                                "unknown task None", None),
    "a sweep the config has not": (lambda t: ["run-cell", "--config", _cfg(t), "--framework", "transformers-naive",
                                              "--model", "smollm2-135m", "--sweep", "context", *OUT],
                                   "has no sweeps.context", None),
    "run-cell with a missing workload": (lambda t: ["run-cell", "--spec", _spec(t), "--workload", f"{t}/w.jsonl",
                                                    "--out", f"{t}/o.json"],
                                         "w.jsonl: cannot read the workload (No such file or directory)", None),
    "run-cell with a corrupt workload": (lambda t: ["run-cell", "--spec", _spec(t), "--workload",
                                                    _file(t, "w.jsonl", '{"id": "p0", "prompt": \n'), "--out",
                                                    f"{t}/o.json"], "w.jsonl:1: not a workload record", None),
    "measure a URL without a scheme": (lambda t: ["measure", "--url", "localhost:8000", "--spec", _spec(t), *OUT],
                                       "not an http:// or https:// address with a host", None),
    "measure a URL without a host": (lambda t: ["measure", "--url", "http://", "--spec", _spec(t), *OUT],
                                     "not an http:// or https:// address with a host", None),
    "publish to an existing path": (lambda t: _publish(t, out_exists=True), "already exists; pass --overwrite", None),
    "publish with no summary": (lambda t: _publish(t, summary=False),
                                "summary.csv: not found, cannot publish (run `servingbench aggregate` first)", None),
    "publish with no report": (lambda t: _publish(t, report=False),
                               "index.html: not found, cannot publish (run `servingbench report` first)", None),
    "publish with a missing config": (lambda t: _publish(t, config=False), "cfg.yaml: not found, cannot publish",
                                      None),
    "publish a report that holds a token": (lambda t: _publish(t, report_text="<p>hf_" + "Ab1" * 12 + "</p>"),
                                            "holds something that looks like a credential; not published", None),
    "compare with a missing folder": (lambda t: ["compare", f"{t}/run-a", f"{t}/run-b"],
                                      "run-a: does not exist; expected a run folder with a summary", None),
    "compare a folder without a summary": (lambda t: ["compare", str(t), str(t)],
                                           "no summary.parquet or summary.csv (run `servingbench aggregate`)", None),
    "compare a CSV that is not a summary": (lambda t: ["compare", _file(t, "a.csv", "x,y\n1,2\n"), str(t)],
                                            "not a servingbench summary", None),
    "prepare-model for a hub model while offline": (
        lambda t: ["prepare-model", "--config", str(Path(__file__).parents[2] / "config.yaml"), "--model",
                   "llama-2-7b-chat", "--out", f"{t}/models/llama-2-7b-chat"],
        "cannot download meta-llama/Llama-2-7b-chat-hf from the Hugging Face hub", _offline),
    "prepare-model for an unknown model": (lambda t: ["prepare-model", "--config", _cfg(t), "--model", "gpt5",
                                                      "--out", f"{t}/m"], "unknown model 'gpt5'", None),
    "validate a missing config file": (lambda t: ["validate", "--config", f"{t}/config.yaml"],
                                       "config.yaml: cannot read config (No such file or directory)", None),
    "validate a folder as a config": (lambda t: ["validate", "--config", str(t)], "cannot read config (Is a directory)",
                                      None),
    "validate a config that is not YAML": (lambda t: ["validate", "--config", _file(t, "c.yaml", "a: [1\n")],
                                           "not valid YAML", None),
    "cells of an empty config": (lambda t: ["cells", "--config", _file(t, "c.yaml", "")], "empty or not a mapping",
                                 None),
    "aggregate a missing results folder": (lambda t: ["aggregate", "--config", _cfg(t), "--results", f"{t}/results"],
                                           "no such folder; give the results folder of a run", None),
    "report on a file, not a results folder": (lambda t: ["report", "--config", _cfg(t), "--results",
                                                          _file(t, "results.txt")], "no such folder", None),
    "aggregate with a folder where a result file belongs": (
        lambda t: ["aggregate", "--config", _cfg(t), "--results", str(_folder(
            t, "results/cells/transformers-naive/smollm2-135m/chat/sync.json").parents[4])],
        "sync.json: Is a directory", None),
    "report --out a folder": (lambda t: ["report", "--config", _cfg(t), "--results", str(_folder(t, "results")),
                                         "--out", str(_folder(t, "report/index.html"))],
                              "report/index.html: Is a directory", None),
    "build-workload without a prepared model": (
        lambda t: ["build-workload", "--config", _cfg(t), "--model", "smollm2-135m", "--task", "chat",
                   "--model-dir", f"{t}/models/smollm2-135m", "--out", f"{t}/w.jsonl"],
        "not a prepared model folder (no config.json); run `servingbench prepare-model", None),
    "build-workload for an unknown task": (lambda t: ["build-workload", "--config", _cfg(t), "--model",
                                                      "smollm2-135m", "--task", "poetry", "--model-dir",
                                                      str(Path(_file(t, "m/config.json", "{}")).parent),
                                                      "--out", f"{t}/w.jsonl"], "unknown task 'poetry'", None),
}


@pytest.fixture
def run_cli(capsys, monkeypatch, tmp_path):
    """Call ``servingbench ARGV`` in this process; return (exit code, stderr, stdout)."""
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGTERM)

    def run(argv: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = cli.main(argv)
        finally:
            signal.signal(signal.SIGTERM, before)  # run-cell turns SIGTERM into SystemExit
        out = capsys.readouterr()
        return code, out.err, out.out

    return run


@pytest.mark.parametrize("what", list(CASES))
def test_an_ordinary_mistake_is_one_line_and_exit_2(what, run_cli, tmp_path, monkeypatch):
    make_argv, needle, setup = CASES[what]
    if setup is not None:
        setup(monkeypatch)
    code, err, out = run_cli(make_argv(tmp_path))
    lines = err.strip().splitlines()
    assert code == 2, (code, err, out)
    assert len(lines) == 1 and lines[0].startswith("servingbench: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err + out


def test_publish_overwrite_replaces_the_folder(run_cli, tmp_path):
    argv = _publish(tmp_path, out_exists=True)
    code, err, out = run_cli([*argv, "--overwrite"])
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["MANIFEST", "cfg.yaml", "index.html",
                                                                   "summary.csv", "summary.parquet"]
