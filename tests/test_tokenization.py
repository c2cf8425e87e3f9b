"""Batched, cached tokenization gives exactly TRL's token ids, and its cache is keyed and rebuildable."""

from __future__ import annotations

import pytest
from trl import DPOConfig

from safealign import tokenization, trl_compat
from safealign.data.loading import load_rows
from safealign.objectives import Pair
from safealign.pairs import build_pairs
from safealign.templates import to_dataset

PAIRS = [
    Pair("How do I stay safe?", "Lock the door.", "Sure, here is how", 1.5, 0),
    Pair("Tell me a plan.", "I can't help.", "First do this, then that. " * 8, -0.5, 1),
    Pair("word " * 60, "A prompt that fills max_length is dropped.", "By TRL, and so by us.", 0.0, 0),
    Pair("Is it fine?", "Yes, it is fine. " * 10, "No.", 0.25, 1),
    Pair("Ends with EOS already", "done</s>", "", 0.0, 0),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


def args(tmp_path, **extra) -> DPOConfig:
    return DPOConfig(output_dir=str(tmp_path), report_to=[], bf16=False, use_cpu=True, **{"max_length": 48, **extra})


def assert_same(ours, theirs) -> None:
    assert ours.column_names == theirs.column_names
    assert len(ours) == len(theirs)
    for column in theirs.column_names:
        assert ours[column] == theirs[column], column


@pytest.mark.parametrize("template", ["beaver", "alpaca"])
@pytest.mark.parametrize("extra", [{}, {"max_length": None}, {"truncation_mode": "keep_end"}, {"max_length": 8}])
def test_batched_ids_equal_trl_ids(tokenizer, tmp_path, template, extra):
    a = args(tmp_path, **extra)
    dataset = to_dataset(PAIRS, template, with_margin=True)
    assert_same(tokenization.tokenize_pairs(dataset, tokenizer, a, "train"),
                trl_compat.prepare_dataset(dataset, tokenizer, a, "train"))  # fmt: skip


@pytest.mark.integration
def test_batched_ids_equal_trl_ids_on_the_shipped_sample(tokenizer, tmp_path):
    from safealign.data.paths import sample_path

    pairs, _ = build_pairs(load_rows(sample_path("train.jsonl")).rows, "multilevel")
    dataset = to_dataset(pairs, "beaver", with_margin=True)
    a = args(tmp_path, max_length=256)
    assert_same(tokenization.tokenize_pairs(dataset, tokenizer, a, "train"),
                trl_compat.prepare_dataset(dataset, tokenizer, a, "train"))  # fmt: skip


@pytest.mark.integration
def test_batched_ids_equal_trl_ids_on_the_real_sample(tokenizer, tmp_path, real_sample):
    pairs, _ = build_pairs(load_rows(real_sample).rows, "harmless")
    dataset = to_dataset(pairs, "alpaca", with_margin=False)
    a = args(tmp_path, max_length=128)
    assert_same(tokenization.tokenize_pairs(dataset, tokenizer, a, "train"),
                trl_compat.prepare_dataset(dataset, tokenizer, a, "train"))  # fmt: skip


def test_chat_data_keeps_trls_own_path(tokenizer, tmp_path):
    dataset = to_dataset(PAIRS, "chat", with_margin=False)
    assert not trl_compat.is_plain_text(dataset[0], tokenizer)
    a = args(tmp_path)
    assert_same(tokenization.tokenize_pairs(dataset, tokenizer, a, "train", tmp_path / "cache"),
                trl_compat.prepare_dataset(dataset, tokenizer, a, "train"))  # fmt: skip


def test_the_cache_is_reused_and_keyed_by_what_changes_the_ids(tokenizer, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    dataset = to_dataset(PAIRS, "beaver", with_margin=True)
    first = tokenization.tokenize_pairs(dataset, tokenizer, args(tmp_path), "train", cache)
    assert len(list(cache.iterdir())) == 1

    calls = []
    monkeypatch.setattr(tokenization, "_batched", lambda tok: calls.append(tok) or (lambda batch: {}))
    again = tokenization.tokenize_pairs(to_dataset(PAIRS, "beaver", with_margin=True), tokenizer, args(tmp_path),
                                        "train", cache)  # fmt: skip
    assert calls == []  # read from the cache, not tokenized
    assert_same(again, first)
    monkeypatch.undo()

    key = tokenization.cache_key
    base = key(dataset, tokenizer, args(tmp_path))
    assert key(to_dataset(PAIRS, "beaver", with_margin=True), tokenizer, args(tmp_path)) == base
    assert key(dataset, tokenizer, args(tmp_path, max_length=64)) != base
    assert key(dataset, tokenizer, args(tmp_path, truncation_mode="keep_end")) != base
    assert key(to_dataset(PAIRS, "alpaca", with_margin=True), tokenizer, args(tmp_path)) != base
    changed_margin = [p._replace(margin=p.margin + 1) for p in PAIRS]
    assert key(to_dataset(changed_margin, "beaver", with_margin=True), tokenizer, args(tmp_path)) != base
    other = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    other.add_tokens(["<new-token>"])
    assert key(dataset, other, args(tmp_path)) != base


def test_a_corrupt_cache_entry_is_rebuilt(tokenizer, tmp_path, caplog):
    cache = tmp_path / "cache"
    dataset = to_dataset(PAIRS, "beaver", with_margin=False)
    tokenization.tokenize_pairs(dataset, tokenizer, args(tmp_path), "train", cache)
    (entry,) = cache.iterdir()
    for f in entry.glob("*.arrow"):
        f.write_bytes(b"not arrow")
    (entry / "dataset_info.json").write_text("{")
    with caplog.at_level("WARNING"):
        rebuilt = tokenization.tokenize_pairs(dataset, tokenizer, args(tmp_path), "train", cache)
    assert "unusable" in caplog.text
    assert_same(rebuilt, trl_compat.prepare_dataset(dataset, tokenizer, args(tmp_path), "train"))


def test_an_empty_dataset_passes_through(tokenizer, tmp_path):
    empty = to_dataset([], "beaver", with_margin=False)
    assert len(tokenization.tokenize_pairs(empty, tokenizer, args(tmp_path), "train", tmp_path / "c")) == 0
