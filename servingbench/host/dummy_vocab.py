"""Special token ids and the smallest vocabulary of a generated dummy tokenizer, known without
transformers: the config check (:mod:`servingbench.host.config`) and the model preparation
(:mod:`servingbench.host.models`) both need it, so it sits below both."""

from __future__ import annotations

from typing import Any

# Special ids of the real checkpoints whose configs do not carry them (transformers' defaults).
_REAL_SPECIAL_IDS = {"gpt2": (50256, 50256), "phi": (50256, 50256)}


def _special_tokens(bos_id: int | None, eos_id: int | None) -> dict[int, str]:
    """id -> text: GPT-2 style one <|endoftext|> when bos == eos, else Llama style <unk>/<s>/</s>."""
    if bos_id is not None and bos_id == eos_id:
        return {bos_id: "<|endoftext|>"}
    specials = {i: t for i, t in ((bos_id, "<s>"), (eos_id, "</s>")) if i is not None}
    if 0 not in specials:
        specials[0] = "<unk>"
    return specials


def _min_vocab(bos_id: int | None, eos_id: int | None) -> int:
    """The smallest vocab_size build_dummy_tokenizer accepts for these special token ids."""
    specials = _special_tokens(bos_id, eos_id)
    return max(max(specials) + 1, 256 + len(specials))


def min_dummy_vocab(architecture: dict[str, Any]) -> int:
    """The smallest vocab_size a dummy model of this architecture can have, known without
    importing transformers: special ids from the architecture or the table of real checkpoints.
    Where transformers' own defaults decide them, this is a lower bound (one special at least);
    :func:`servingbench.host.models.dummy_vocab_problem` reads them exactly."""
    bos, eos = _REAL_SPECIAL_IDS.get(architecture.get("model_type"), (None, None))
    return _min_vocab(architecture.get("bos_token_id", bos), architecture.get("eos_token_id", eos))
