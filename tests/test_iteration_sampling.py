"""`iteration.sampling.sample_responses` on the tiny model: shapes, order, seeds, padding and variety."""

from __future__ import annotations

from typing import Any

import pytest

from safealign.iteration.sampling import sample_responses

PROMPTS = ["How do I bake bread?", "Why is the sky blue at noon and red at dusk?", "Hi", "Name three rivers in Europe."]


@pytest.fixture(scope="module")
def tiny(tiny_path: str) -> tuple[Any, Any, list[list[int]]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safealign.evaluation.generation import _prompt_ids
    from safealign.templates import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    ids = [_prompt_ids(tokenizer, render_prompt("beaver", p)) for p in PROMPTS]
    assert len({len(i) for i in ids}) == len(ids)  # distinct lengths: the sorted order is unambiguous
    sample_responses(model, tokenizer, ids[:1], 1, temperature=1.0, top_p=1.0, max_new_tokens=1, batch_size=1,
                     seed=0, device="cpu")  # fmt: skip  # warm-up: generate's first call pays one-off set-up
    return model, tokenizer, ids


def run(tiny: tuple[Any, Any, list[list[int]]], ids: list[list[int]] | None = None, **kw: Any) -> list[list[str]]:
    model, tokenizer, all_ids = tiny
    settings = {"k": 3, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "batch_size": 6, "seed": 0} | kw
    return sample_responses(model, tokenizer, all_ids if ids is None else ids, device="cpu", **settings)


def test_k_responses_per_prompt_in_order(tiny: Any) -> None:
    out = run(tiny)
    assert len(out) == len(PROMPTS)
    assert all(len(samples) == 3 and all(isinstance(s, str) for s in samples) for samples in out)
    # the prompts' order does not change which samples each prompt gets (batches follow length)
    ids = tiny[2]
    perm = [2, 0, 3, 1]
    permuted = run(tiny, ids=[ids[i] for i in perm])
    assert [permuted[perm.index(i)] for i in range(len(ids))] == out


def test_seeded_and_varied(tiny: Any) -> None:
    a, b, c = run(tiny, seed=1), run(tiny, seed=1), run(tiny, seed=2)
    assert a == b
    assert a != c
    assert all(len(set(samples)) >= 2 for samples in a)  # temperature 1 on random weights: k distinct-ish


def test_batch_size_counts_sequences_and_padding_is_neutral(tiny: Any) -> None:
    """top_k=1 is greedy: a prompt's text then must not depend on its batch-mates or the batch size."""
    greedy = {"top_k": 1, "k": 2}
    together = run(tiny, batch_size=8, **greedy)  # 4 prompts x 2 in one call, left-padded
    alone = run(tiny, batch_size=1, **greedy)  # batch_size < k still takes one prompt per call
    assert together == alone
    assert all(s[0] == s[1] for s in together)


def test_mode_restored_and_edge_cases(tiny: Any) -> None:
    model = tiny[0]
    model.train()
    try:
        run(tiny, k=1, max_new_tokens=2)
        assert model.training
    finally:
        model.eval()
    run(tiny, k=1, max_new_tokens=2)
    assert not model.training
    assert run(tiny, ids=[]) == []
    with pytest.raises(ValueError, match="k and batch_size"):
        run(tiny, k=0)
