"""Multi-turn and shared-prefix workloads, built with the real SmolLM2 tokenizer (and a generated
GPT-2-sized one for a model without a chat template)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from servingbench.runtime import conversations
from servingbench.host.config import cell_spec, parse_config
from servingbench.host.prefix_workloads import SLOT, content_tokens, prefix_plan
from servingbench.runtime.spec import read_workload
from servingbench.host.build_workloads import build_workload
from servingbench.host.workloads import WorkloadError, _Renderer

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"


def _cfg(**run):
    data = yaml.safe_load((ROOT / "configs" / "cpu-workloads.yaml").read_text())
    data["run"].update(run)
    return parse_config(data, "cfg")


@pytest.fixture(scope="module")
def multiturn(tmp_path_factory, smollm2_dir):
    cfg = _cfg(requests_per_cell=3, warmup_requests=1, cell_concurrency=[1, 2])
    out = tmp_path_factory.mktemp("wl") / "chat-multiturn.jsonl"
    return cfg, build_workload(cfg, MODEL, "chat-multiturn", smollm2_dir, out), out


def test_conversations_have_their_turns_in_range_and_distinct_openings(multiturn, smollm2_dir):
    cfg, records, _ = multiturn
    task = cfg.tasks["chat-multiturn"]
    r = _Renderer(smollm2_dir, True)
    convs: dict[str, list[dict]] = {}
    for rec in records:
        convs.setdefault(rec["session"], []).append(rec)
    assert len(convs) == (1 + 3) + (2 + 3)  # per level: one wave of warm-up conversations, then the measured ones
    firsts = [c[0]["messages"][-1]["content"] for c in convs.values()]
    assert len(set(firsts)) == len(firsts)
    for turns in convs.values():
        assert [t["turn"] for t in turns] == [1, 2, 3, 4]
        users = [t["messages"][-1]["content"] for t in turns]
        for t, text in zip(turns, users):
            n = content_tokens(r, text)
            assert t["user_tokens"] == n and task.input_tokens[0] <= n <= task.input_tokens[1]
            assert task.output_tokens[0] <= t["target_output_tokens"] <= task.output_tokens[1]
            assert (t["think_time_s"] == 0) if t["turn"] == 1 else (0.1 <= t["think_time_s"] <= 0.3)
            assert t["answer_slots"] == [SLOT.format(j) for j in range(1, t["turn"])]
        system = turns[0]["messages"][0]
        assert system["role"] == "system" and abs(content_tokens(r, system["content"]) - 384) <= 24
        assert all(t["messages"][0] == system for t in turns)  # one system text per conversation


def test_filling_the_answers_gives_exactly_the_chat_template_of_the_real_conversation(multiturn, smollm2_dir):
    """The prompt the runtime sends for turn k (placeholders filled with the answers) equals the
    model's chat template applied to the conversation with those answers: what a chat client sends."""
    _, records, path = multiturn
    tok = _Renderer(smollm2_dir, True).tok
    items = read_workload(str(path))
    conv = conversations.conversations(items)[2]
    answers = [" The sky looks blue because air scatters short wavelengths.", "Sure!\n\n- one\n- two ", "Yes."]
    for k, item in enumerate(conv):
        filled = conversations.with_history(item, answers[:k], answer_tokens=7 * k)
        messages = [dict(m) for m in item.messages]
        for j, m in enumerate(m for m in messages if m["role"] == "assistant"):
            m["content"] = answers[j]
        assert filled.prompt == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert [m["content"] for m in filled.messages] == [m["content"] for m in messages]
        assert filled.prompt_tokens == item.prompt_tokens + 7 * k


def test_workloads_are_deterministic(multiturn, smollm2_dir, tmp_path):
    cfg, _, path = multiturn
    again = tmp_path / "again.jsonl"
    build_workload(cfg, MODEL, "chat-multiturn", smollm2_dir, again)
    assert again.read_bytes() == path.read_bytes()


def test_a_model_without_chat_template_gets_a_plain_transcript(dummy_dirs, tmp_path):
    data = yaml.safe_load((ROOT / "configs" / "cpu-workloads.yaml").read_text())
    gpt2 = yaml.safe_load((ROOT / "config.yaml").read_text())["models"]["gpt2"]
    data["models"] = {"gpt2": gpt2}
    data["generation"] = {"gpt2": data["generation"][MODEL]}
    data["tasks"]["chat-multiturn"]["system_tokens"] = 0
    cfg = parse_config(data, "cfg")
    records = build_workload(cfg, "gpt2", "chat-multiturn", dummy_dirs["gpt2"], tmp_path / "w.jsonl")
    items = read_workload(str(tmp_path / "w.jsonl"))
    turn2 = conversations.conversations(items)[0][1]
    assert records[1]["messages"] is None
    filled = conversations.with_history(turn2, [" Because of Rayleigh scattering."], 5)
    first = records[0]["prompt"]
    assert filled.prompt.startswith(first + " Because of Rayleigh scattering.\nUser: ")
    assert filled.prompt.endswith("\nAssistant:") and first.startswith("User: ")


def test_turns_that_outgrow_the_context_fail_naming_the_key(smollm2_dir, tmp_path):
    """The builder counts each turn; the config's own check (an estimate) is bypassed here."""
    cfg = _cfg()
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"max_model_len": 560})})
    with pytest.raises(WorkloadError, match=r"tasks\.chat-multiturn\.turns: turn \d of a conversation needs about"):
        build_workload(cfg, MODEL, "chat-multiturn", smollm2_dir, tmp_path / "w.jsonl")


# -- shared prefix -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,groups,rate,seen", [(6, 2, None, 4), (10, 2, 0.5, 5), (10, 3, 0.0, 0), (8, 1, 0.25, 2)])
def test_prefix_plan_repeats_exactly_the_asked_share(n, groups, rate, seen):
    import random

    plan = prefix_plan(n, groups, rate, random.Random(1))
    assert len(plan) == n
    firsts, repeats = set(), 0
    for g in plan:
        if g is not None:
            repeats += g in firsts
            firsts.add(g)
    assert repeats == seen and firsts == set(range(groups))


def test_shared_prefix_groups_share_their_excerpt_and_nothing_else(smollm2_dir, tmp_path):
    data = yaml.safe_load((ROOT / "configs" / "cpu-workloads.yaml").read_text())
    data["tasks"]["shared-prefix"].update(groups=2, prefix_hit_rate=0.5)
    data["run"].update(requests_per_cell=8, warmup_requests=2, cell_concurrency=[1, 4])
    cfg = parse_config(data, "cfg")
    records = build_workload(cfg, MODEL, "shared-prefix", smollm2_dir, tmp_path / "w.jsonl")
    tok = _Renderer(smollm2_dir, True).tok
    # Laid out as the runtime takes them: per level, warm-up (at least one wave), then 8 measured.
    layout = [("warm" if r.get("warmup") else "meas") for r in records]
    assert layout == ["warm"] * 2 + ["meas"] * 8 + ["warm"] * 4 + ["meas"] * 8
    spec = cell_spec(cfg, "vllm", MODEL, "shared-prefix", "stream")
    assert spec.workload == "shared_prefix" and spec.requests == 8
    windows = [records[2:10], records[14:22]]
    assert not {r["prefix_group"] for r in windows[0]} & {r["prefix_group"] for r in windows[1]}
    assert len({r["prompt"] for r in records}) == len(records)
    ids = {r["id"]: tok(r["prompt"])["input_ids"] for r in records}

    def common(a, b):
        n = 0
        for x, y in zip(ids[a["id"]], ids[b["id"]]):
            if x != y:
                break
            n += 1
        return n

    header = common(records[0], records[1])  # two warm-ups: only the chat template's own start
    assert header < 40
    for window in windows:
        assert sum(r["prefix_seen"] for r in window) == 4  # round(0.5 x 8)
        groups = {}
        for r in window:
            groups.setdefault(r["prefix_group"], []).append(r)
            assert 15 <= r["suffix_tokens"] <= 60
        shared = [g for g in groups.values() if len(g) > 1]
        assert len(shared) == 2  # the two groups; the rest have excerpts of their own
        for g in shared:
            assert [m["prefix_seen"] for m in g] == [False] + [True] * (len(g) - 1)
            assert g[0]["prefix_tokens_shared"] == common(g[0], g[1]) >= 0.9 * 512
        a, b = shared[0][0], shared[1][0]
        assert common(a, b) == header  # different groups share nothing past the template's start
