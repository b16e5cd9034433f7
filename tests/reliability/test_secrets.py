"""A hub token in the environment never reaches a written file or a command line.

A real cell runs on the real naive server with a sentinel ``HF_TOKEN`` (and
``HUGGING_FACE_HUB_TOKEN``) in the environment, launched through a wrapper that first prints
the server's whole environment into its log (standins.EchoEnvAdapter: a server that echoes its
environment). A second cell's server (a stand-in) prints the token as its last line and dies,
so the token would travel through the failure record and the error message. Then the
aggregate and the report run (as the workflow runs them, as commands), and every file under
the results and report folders, every captured command line and every message is searched
for the sentinel: zero hits. The logs that echoed it show ``***`` instead.

Secrets outside HF_TOKEN: a config that puts a credential in an arm's ``server_args`` or
``env`` (or anywhere else) is refused, naming the key and not the value (``CONFIG_SECRETS``).
What reaches the runtime another way (a hand-written ``--spec``) is masked in everything the
kit writes: a real cell, a failing one and a pooled one run with sentinel credentials in
their ``server_args`` and ``env``, then aggregate, report and ``publish`` (of a config that
holds a token in a comment) run, and no file under results/, report/ or in the published
archive, no command line and no message carries any sentinel.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
import yaml

import servingbench.runtime.cell as cell_mod
from servingbench.runtime.cell import CellFailed, run_cell
from servingbench.runtime.providers import fresh_server
from servingbench.host.config import ConfigError, parse_config
from servingbench.runtime.pool import ServerPool, pooled_server
from servingbench.runtime.redaction import MASK, redact, redact_argv
from servingbench.runtime.results import cell_path, failure_path
from tests.reliability.conftest import MODEL, tiny_config_dict
from tests.reliability.standins import EchoArgsAdapter, EchoEnvAdapter, StandinAdapter, find_sentinels

pytestmark = pytest.mark.secrets


def test_hf_token_never_reaches_a_file_or_a_command_line(monkeypatch, cell_spec_for, chat_workload, tmp_path,
                                                        record_property):
    sentinels = [f"hf_SENTINEL{uuid.uuid4().hex}", f"hf_HUBSENTINEL{uuid.uuid4().hex}"]
    monkeypatch.setenv("HF_TOKEN", sentinels[0])
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", sentinels[1])
    results, report = tmp_path / "results", tmp_path / "report"
    texts: dict[str, str] = {}

    # 1. A real cell; its server echoes its environment into its log.
    monkeypatch.setattr(cell_mod, "get_adapter", lambda arm: EchoEnvAdapter())

    def provider(adapter, spec, log):
        handle = fresh_server(adapter, spec, log)
        texts["server process command lines"] = "\n".join(" ".join(p.cmdline()) for p in handle.proc.tree())
        return handle

    out = cell_path(results, "transformers-naive", MODEL, "chat", "stream")
    result = run_cell(cell_spec_for(mode="stream", requests=2), chat_workload, out, results, provider=provider)
    texts["result server.command"] = " ".join(result["server"]["command"])

    # 2. A cell whose server prints the token as its last line, then dies.
    monkeypatch.setattr(cell_mod, "get_adapter", lambda arm: StandinAdapter("secret-then-die"))
    failed = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    with pytest.raises(CellFailed) as err:
        run_cell(cell_spec_for(mode="sync"), chat_workload, failed, results, provider=fresh_server)
    texts["CellFailed message"] = str(err.value)
    assert failure_path(failed).exists() and "HF_TOKEN=***" in failure_path(failed).read_text()

    # 3. Aggregate and report, as the workflow runs them.
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_dict(requests=2)))  # the stream cell's size: not stale
    for cmd in (["aggregate", "--config", str(cfg), "--results", str(results)],
                ["report", "--config", str(cfg), "--results", str(results), "--out", str(report / "index.html")]):
        res = subprocess.run([sys.executable, "-m", "servingbench.cli", *cmd], capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        texts[f"servingbench {cmd[0]} output"] = res.stdout + res.stderr
    assert (results / "summary.csv").exists() and (report / "index.html").exists()

    hits = find_sentinels(sentinels, [results, report], texts)
    record_property("secret_leaks", len(hits))
    assert hits == [], f"the token leaked into: {hits}"

    # The logs did echo the environment, redacted.
    log = Path(result["server"]["log"]).read_text()
    assert "server environment:" in log and "HF_TOKEN=***" in log and "HUGGING_FACE_HUB_TOKEN=***" in log


# -- secrets outside HF_TOKEN ---------------------------------------------------------------------------
def _sentinels() -> dict[str, str]:
    """One sentinel per shape of credential, each unique to this run."""
    h = uuid.uuid4().hex
    return {"api_key_flag": f"sk-SENTINEL{h}", "api_key_eq": f"hf_SENTINELEQ{h}",
            "named_env": f"plainSENTINEL{h}",  # looks like nothing: known only by its variable's name
            "shaped_env": f"ghp_SENTINEL{h}", "password_flag": f"pwSENTINEL{h}",
            "comment": f"glpat-SENTINEL{h}"}


def _secret_server(spec, s: dict[str, str], args: bool = True):
    server_args = ("--api-key", s["api_key_flag"], f"--hf-token={s['api_key_eq']}",
                   "--db-password", s["password_flag"]) if args else ()
    env = (("MY_API_KEY", s["named_env"]), ("EXTRA_OPTS", s["shaped_env"]))
    return dataclasses.replace(spec, server=dataclasses.replace(spec.server, server_args=server_args, env=env))


def test_secrets_in_arm_settings_never_reach_a_file(monkeypatch, cell_spec_for, chat_workload, tmp_path,
                                                   record_property):
    s = _sentinels()
    results, report, published = tmp_path / "results", tmp_path / "report", tmp_path / "publish"
    texts: dict[str, str] = {}

    # 1. A real cell; its server is launched with the flags, prints them and its environment.
    monkeypatch.setattr(cell_mod, "get_adapter", lambda arm: EchoArgsAdapter())

    def provider(adapter, spec, log):
        handle = fresh_server(adapter, spec, log)
        texts["server's recorded command"] = " ".join(handle.proc.command())
        return handle

    out = cell_path(results, "transformers-naive", MODEL, "chat", "stream")
    slow_ok = {"request_timeout_s": 600.0}  # a loaded machine: this test is about files, not speed
    result = run_cell(_secret_server(cell_spec_for(mode="stream", requests=2, **slow_ok), s), chat_workload, out,
                      results, provider=provider)
    log = Path(result["server"]["log"]).read_text()
    assert "server command line:" in log and "server environment:" in log and "--api-key ***" in log

    # 2. A cell whose server prints its command line and environment, then dies.
    monkeypatch.setattr(cell_mod, "get_adapter", lambda arm: StandinAdapter("secret-then-die"))
    failed = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    with pytest.raises(CellFailed) as err:
        run_cell(_secret_server(cell_spec_for(mode="sync"), s), chat_workload, failed, results, provider=fresh_server)
    texts["CellFailed message"] = str(err.value)
    assert failure_path(failed).exists()

    # 3. A pooled server (its keeper is another process, with the real adapter): the pool's state
    #    file records the server's settings while it serves. The naive server takes no extra flags.
    monkeypatch.undo()
    pool_results = tmp_path / "results-pooled"
    pool = ServerPool(pool_results / "servers", idle_timeout_s=60)
    try:
        pooled = cell_path(pool_results, "transformers-naive", MODEL, "chat", "stream")
        run_cell(_secret_server(cell_spec_for(mode="stream", requests=2, **slow_ok), s, args=False), chat_workload,
                 pooled, pool_results, provider=pooled_server(pool))
        states = list((pool_results / "servers").glob("*.json"))
        assert states and all(MASK in p.read_text() for p in states)
        hits = find_sentinels(list(s.values()), [pool_results], {})
    finally:
        pool.stop_all()

    # 4. Aggregate, report and publish; the config carries a token in a comment.
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"# deploy key, do not share: {s['comment']}\n" + yaml.safe_dump(tiny_config_dict()))
    archive = published / "run.tar.gz"
    # --allow-stale: the cells above ran with settings the config does not hold (the secret flags
    # themselves); the staleness check would refuse them, and its message must not leak either.
    for cmd in (["aggregate", "--config", str(cfg), "--results", str(results), "--allow-stale"],
                ["report", "--config", str(cfg), "--results", str(results), "--out", str(report / "index.html"),
                 "--allow-stale"],
                ["publish", "--config", str(cfg), "--results", str(results), "--report", str(report / "index.html"),
                 "--out", str(archive)]):
        res = subprocess.run([sys.executable, "-m", "servingbench.cli", *cmd], capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        texts[f"servingbench {cmd[0]} output"] = res.stdout + res.stderr
    assert "credentials masked in the published copy" in texts["servingbench publish output"]
    with tarfile.open(archive) as tar:
        tar.extractall(published / "extracted", filter="data")
    config_copy = next((published / "extracted").rglob("tiny.yaml")).read_text()
    assert f"# deploy key, do not share: {MASK}" in config_copy

    hits += find_sentinels(list(s.values()), [results, report, published / "extracted"], texts)
    record_property("secret_leaks", len(hits))
    assert hits == [], f"a secret leaked into: {hits}"


# A config holding a credential is refused, naming where (never the value) and what to do instead.
# (what, key path, value, text the message must name)
CONFIG_SECRETS = [
    ("an API key in env", "frameworks.vllm.env", {"OPENAI_API_KEY": "k3y-value-123"}, "frameworks.vllm.env.OPENAI_API_KEY"),
    ("HF_TOKEN in env", "frameworks.vllm.env", {"HF_TOKEN": "hf_" + "a1" * 17}, "frameworks.vllm.env.HF_TOKEN"),
    ("an AWS secret in env", "frameworks.vllm.env", {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG"},
     "env.AWS_SECRET_ACCESS_KEY"),
    ("a password in env", "frameworks.vllm.env", {"DB_PASSWORD": "correct horse"}, "env.DB_PASSWORD"),
    ("a GitHub token in env", "frameworks.vllm.env", {"GITHUB_TOKEN": "whatever-it-is"}, "env.GITHUB_TOKEN"),
    ("a camelCase key name", "frameworks.vllm.env", {"apiKey": "abcdefgh"}, "env.apiKey"),
    ("a GitHub token under an innocent name", "frameworks.vllm.env", {"EXTRA": "ghp_" + "x" * 36}, "env.EXTRA"),
    ("a Bearer header in env", "frameworks.vllm.env", {"HEADERS": "Authorization: Bearer abcdefghij12"}, "env.HEADERS"),
    ("an AWS access key id", "frameworks.vllm.env", {"CREDS_ID": "AKIA" + "ABCDEFGHIJKLMNOP"}, "env.CREDS_ID"),
    ("a Slack bot token", "frameworks.vllm.env", {"NOTIFY": "xoxb-123456789012-abcdefghij"}, "env.NOTIFY"),
    ("an OpenAI project key", "frameworks.vllm.env", {"OPENAI": "sk-proj-" + "Z9" * 12}, "env.OPENAI"),
    ("--api-key VALUE in server_args", "frameworks.vllm.server_args", ["--api-key", "abc12345"],
     "frameworks.vllm.server_args[1]: the value of --api-key"),
    ("--api-key=VALUE in server_args", "frameworks.vllm.server_args", ["--port-offset", "1", "--api-key=abc12345"],
     "server_args[2]: the value of --api-key"),
    ("--hf-token in server_args", "frameworks.vllm.server_args", ["--hf-token", "hf_" + "q" * 34],
     "server_args[1]: the value of --hf-token"),
    ("a password flag", "frameworks.vllm.server_args", ["--ssl-keyfile-password", "hunter2hunter2"],
     "server_args[1]: the value of --ssl-keyfile-password"),
    ("a token as a flag's value", "frameworks.vllm.server_args", ["--revision", "hf_" + "r" * 34],
     "server_args[1]: looks like a credential"),
    ("a Bearer header as a flag's value", "frameworks.vllm.server_args", ["--header", "Authorization: Bearer zzzzzzzzzz"],
     "server_args[1]: looks like a credential"),
    ("a GitLab token in an image name", "frameworks.vllm.image", "registry.example/vllm:glpat-" + "a" * 20,
     "frameworks.vllm.image: looks like a credential"),
    ("a token in a model id", "models.smollm2-135m.hf_id", "HuggingFaceTB/hf_" + "s" * 30,
     "models.smollm2-135m.hf_id: looks like a credential"),
]


def _value_texts(value) -> list[str]:
    if isinstance(value, dict):
        return [v for v in value.values() if len(v) > 3]
    if isinstance(value, list):
        return [v.partition("=")[2] or v for v in value if not v.startswith("--") or "=" in v]
    return [value]


@pytest.mark.bad_config
@pytest.mark.parametrize("what,path,value,needle", CONFIG_SECRETS, ids=[c[0] for c in CONFIG_SECRETS])
def test_a_config_holding_a_credential_is_refused(what, path, value, needle):
    from tests.test_config import _mutate

    data = _mutate(tiny_config_dict(arms=("transformers-naive", "vllm")), path, value)
    with pytest.raises(ConfigError) as err:
        parse_config(data, "tiny.yaml")
    msg = str(err.value)
    assert msg.startswith("tiny.yaml: ") and needle in msg and "export it in the environment" in msg, msg
    leaked = [v for v in _value_texts(value) if v in msg]
    assert leaked == [], f"the message repeats the secret: {msg}"


def test_settings_that_only_mention_tokens_are_accepted():
    """Not credentials: token counts, tokenizer settings, switches named after tokens, key files."""
    data = tiny_config_dict(arms=("transformers-naive", "vllm"))
    data["frameworks"]["vllm"]["env"] = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
                                         "VLLM_CPU_KVCACHE_SPACE": "4"}
    data["frameworks"]["vllm"]["server_args"] = ["--max-num-batched-tokens", "2048", "--tokenizer-mode", "auto",
                                                 "--ssl-keyfile", "/etc/ssl/key.pem"]
    cfg = parse_config(data, "tiny.yaml")
    assert cfg.frameworks["vllm"].server_args[1] == "2048"


# How redaction reads the text a server or a tool writes (log lines, dict reprs, JSON, argv).
REDACT = [
    ("vLLM's non-default args", "non-default args: {'model': 'm', 'api_key': '{s}', 'max_num_seqs': 4}",
     "'max_num_seqs': 4"),
    ("NAME=value", "export OPENAI_API_KEY={s}", "export OPENAI_API_KEY=***"),
    ("JSON", '{"password": "{s}", "port": 8000}', '"port": 8000'),
    ("YAML", "hf_token: {s}", "hf_token: ***"),
    ("an argparse error", "error: unrecognized arguments: --api-key {s} --port 1", "--port 1"),
    ("an Authorization header", "Authorization: Bearer {s}", "Authorization:"),
    ("a token in prose", "logged in as hf_{s}", "logged in as "),
    ("a URL with a token parameter", "GET /v1/models?token={s} 200", "200"),
    ("a counted token stays", "prompt_token_ids=[1, 2, 3] max_tokens=16 {s}", "prompt_token_ids=[1, 2, 3] max_tokens=16"),
]


@pytest.mark.parametrize("what,template,kept", REDACT, ids=[r[0] for r in REDACT])
def test_redaction_masks_credentials_in_text(what, template, kept, monkeypatch, record_property):
    secret = f"SENTINEL{uuid.uuid4().hex}"
    monkeypatch.setenv("MY_SERVICE_TOKEN", secret)  # the last case: a value known only from the environment
    text = template.replace("{s}", secret)
    out = redact(text)
    record_property("secret_leaks", int(secret in out))
    assert secret not in out and kept in out, out


def test_redaction_of_a_command_line_keeps_everything_else():
    argv = ["vllm", "serve", "m", "--api-key", "abc12345", "--hf-token=hf_" + "z" * 34, "--port", "8000",
            "--max-num-batched-tokens", "2048", "--password", "1", "--token", "true"]
    assert redact_argv(argv, []) == ["vllm", "serve", "m", "--api-key", MASK, f"--hf-token={MASK}", "--port", "8000",
                                     "--max-num-batched-tokens", "2048", "--password", "1", "--token", "true"]
