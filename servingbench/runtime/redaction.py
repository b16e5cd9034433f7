"""What a credential looks like, and the one place that hides it wherever the kit writes.

Three signs of a credential:

- a known token prefix: ``hf_``, ``sk-``, ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``,
  ``github_pat_``, ``xoxb-`` (and Slack's other ``xox?-``), ``AKIA``/``ASIA`` (AWS),
  ``glpat-``, and ``Bearer <token>``;
- a name that says so: an environment variable, a flag or a JSON key with a ``TOKEN``,
  ``KEY``, ``SECRET``, ``PASSWORD``, ``CREDENTIAL(S)`` or ``AUTHORIZATION`` word in it
  (``HF_TOKEN``, ``--api-key``, ``"password"``; not ``max_tokens`` or ``TOKENIZERS_PARALLELISM``);
- the value of such a variable in this process's environment, whatever it looks like.

A config that holds one is refused (``find_credentials``, called by ``config.parse_config``):
a config is copied into every result and into what ``publish`` writes. Everything the kit
writes still goes through ``redact`` (result files, failure records, server logs, messages,
the published config), for what reaches it another way (a hand-written ``--spec``, a server
that echoes its environment). Runtime module: standard library only.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

MASK = "***"

_PREFIXED = re.compile(
    r"(?<![A-Za-z0-9_])(?:"
    r"hf_[A-Za-z0-9]{16,}"
    r"|sk-(?:[A-Za-z]+-)?[A-Za-z0-9_\-]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|glpat-[A-Za-z0-9_\-]{20,}"
    r")"
)
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=\-]{8,}", re.I)
# name=value, name: value, "name": "value", 'name': 'value' (dict reprs, JSON, YAML, logs).
_ASSIGN = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<sep>['\"]?[ \t]*[=:][ \t]*)"
    r"(?:(?P<q>['\"])(?P<qv>[^'\"\n]*)(?P=q)|(?P<v>[^\s'\",;}\])]+))")
# --flag value, as a server prints its own command line.
_FLAG = re.compile(r"(?<!\S)(?P<name>--?[A-Za-z][A-Za-z0-9_\-]*)(?P<sep>[ \t]+)(?P<v>[^\s\-][^\s]*)")
_WORDS = {"TOKEN", "KEY", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS",
          "AUTHORIZATION", "APIKEY"}
_SUFFIXES = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "APIKEY")
_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# Values that name a setting, not a secret (HF_HUB_DISABLE_IMPLICIT_TOKEN=1, api_key=None).
_HARMLESS = {"", "0", "1", "true", "false", "yes", "no", "on", "off", "none", "null", MASK}
_NOT_SECRET = re.compile(r"[\[{(]|[-+]?\d+(?:\.\d+)?$")
_KNOWN = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # the hub token: masked however short


def is_secret_name(name: str) -> bool:
    """Does this variable, flag or key name say that its value is a credential?"""
    for part in _SPLIT.split(name.strip("-")):
        word = part.upper()
        if word in _WORDS or (len(word) > 5 and word.endswith(_SUFFIXES)):
            return True
    return False


def _harmless(value: str) -> bool:
    return value.strip().lower() in _HARMLESS


def looks_like_token(value: str) -> bool:
    """Does this text carry something shaped like a credential (a known prefix, Bearer)?"""
    return bool(_PREFIXED.search(value) or _BEARER.search(value))


_REMEMBERED: set[str] = set()


def _argv_values(argv: Iterable[str]) -> set[str]:
    """Values given to credential-named flags: ``--api-key X`` and ``--api-key=X``."""
    found, args = set(), list(argv)
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not arg.startswith("-") or not is_secret_name(name):
            continue
        if not eq and i + 1 < len(args):
            value = args[i + 1]
        if value and not _harmless(value):
            found.add(value)
    return found


def secret_values(env: Mapping[str, str] | None = None, argv: Iterable[str] = ()) -> list[str]:
    """Values of the credential-named variables of ``env`` (default: this process's) and flags
    of ``argv``, and every value ``remember`` was given; longest first."""
    env = os.environ if env is None else env
    found = {v for k, v in env.items()
             if v and not _harmless(v) and (k in _KNOWN and len(v) >= 4 or is_secret_name(k) and len(v) >= 8)}
    return sorted(found | _argv_values(argv) | _REMEMBERED, key=len, reverse=True)


def remember(env: Mapping[str, str], argv: Iterable[str] = ()) -> None:
    """Mask the credential values of a server's own settings (its spec's ``env`` and flags) in
    everything this process writes from now on, whatever they look like."""
    _REMEMBERED.update(v for v in secret_values(env, argv) if len(v) >= 4)


def _mask_named(m: re.Match[str]) -> str:
    g = m.groupdict()
    q = g.get("q")
    value = g["qv"] if q else g["v"]
    # In free text a number or a bracket after "token" is a count or a list (prompt_token_ids=[1, 2]),
    # and a word after "token:" is prose ("first token: start"); quoted values, NAME=value and
    # --flag value are settings, masked whatever they look like.
    if value is None or _harmless(value) or _NOT_SECRET.match(value) or not is_secret_name(g["name"]):
        return m.group(0)
    if not q and g["sep"].strip() == ":" and (len(value) < 8 or value.isalpha()):
        return m.group(0)
    return f"{g['name']}{g['sep']}{q}{MASK}{q}" if q else f"{g['name']}{g['sep']}{MASK}"


def redact(text: str, values: Iterable[str] | None = None) -> str:
    """``text`` with every credential masked: known values (default: this environment's),
    token-shaped strings, and the value of every credential-named assignment or flag."""
    for value in (secret_values() if values is None else values):
        if value:
            text = text.replace(value, MASK)
    if not text:
        return text
    text = _PREFIXED.sub(MASK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _ASSIGN.sub(_mask_named, text)
    return _FLAG.sub(_mask_named, text)


def redact_bytes(line: bytes, values: Iterable[str] | None = None) -> bytes:
    """``redact`` for raw bytes of unknown encoding (a server's log line)."""
    return redact(line.decode("utf-8", "surrogateescape"), values).encode("utf-8", "surrogateescape")


def redact_argv(argv: Iterable[str], values: Iterable[str] | None = None) -> list[str]:
    """A command line with credentials masked: the value after a credential-named flag
    (``--api-key X``), ``--flag=X``, and anything ``redact`` finds in each word."""
    values = secret_values() if values is None else list(values)
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not _harmless(arg):
            out.append(MASK)
            hide_next = False
            continue
        hide_next = False
        name, eq, value = arg.partition("=")
        if arg.startswith("-") and is_secret_name(name):
            if eq:
                out.append(f"{name}={MASK}" if not _harmless(value) else arg)
                continue
            hide_next = True
        out.append(redact(arg, values))
    return out


def redact_env(pairs: Iterable[tuple[str, str]] | Mapping[str, str],
               values: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """Environment entries with the values of credential-named ones masked."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    values = secret_values() if values is None else list(values)
    return [(k, MASK if is_secret_name(k) and not _harmless(v) else redact(v, values)) for k, v in items]


def redact_data(data: Any, values: Iterable[str] | None = None) -> Any:
    """A copy of JSON-like data with ``redact`` applied to every string, keys included."""
    values = secret_values() if values is None else list(values)

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return redact(x, values)
        if isinstance(x, dict):
            return {walk(k): walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        return x

    return walk(data)


def redact_server(server: Mapping[str, Any], values: Iterable[str] | None = None) -> dict[str, Any]:
    """A ServerSpec as a dict (``dataclasses.asdict``), fit to be written: its ``server_args``
    (and ``model_server_args``) and ``env`` masked as command lines and an environment, every
    other string redacted."""
    values = secret_values() if values is None else list(values)
    out = redact_data(dict(server), values)
    for key in ("server_args", "model_server_args"):
        if key in server:
            out[key] = redact_argv(server[key], values)
    if "env" in server:
        out["env"] = [list(kv) for kv in redact_env([tuple(kv) for kv in server["env"]], values)]
    return out


def find_credentials(data: Any, where: str = "") -> list[str]:
    """Where ``data`` (a parsed config) holds a credential: one ``key.path: why`` per finding,
    never the value itself. Lists of strings are read as command lines (``--api-key X``)."""
    found: list[str] = []

    def at(path: str, key: Any) -> str:
        return f"{path}.{key}" if path else str(key)

    def walk(x: Any, path: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if isinstance(v, str) and is_secret_name(str(k)) and not _harmless(v):
                    found.append(f"{at(path, k)}: its name says it holds a credential")
                else:
                    walk(v, at(path, k))
        elif isinstance(x, list):
            args = [str(a) for a in x] if all(isinstance(a, str) for a in x) else None
            for i, v in enumerate(x):
                if args is not None and i > 0 and args[i - 1].startswith("-") and "=" not in args[i - 1] \
                        and is_secret_name(args[i - 1]) and not _harmless(v):
                    found.append(f"{path}[{i}]: the value of {args[i - 1]} is a credential")
                elif isinstance(v, str) and v.startswith("-") and "=" in v and is_secret_name(v.partition("=")[0]) \
                        and not _harmless(v.partition("=")[2]):
                    found.append(f"{path}[{i}]: the value of {v.partition('=')[0]} is a credential")
                else:
                    walk(v, f"{path}[{i}]")
        elif isinstance(x, str) and looks_like_token(x):
            found.append(f"{path}: looks like a credential (a token prefix such as hf_, sk-, ghp_ or Bearer)")

    walk(data, where)
    return found
