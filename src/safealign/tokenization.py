"""Tokenize preference pairs once: TRL's preprocessing in batches, cached on disk.

Every run of a sweep, and the held-out evaluation after each, used to tokenize the same
pairs with the same tokenizer again (TRL's `_prepare_dataset`, one example at a time).
`tokenize_pairs` gives the same token ids (`tests/test_tokenization.py` compares them with
TRL's) from batched tokenizer calls, and keeps the result under
`$SAFEALIGN_CACHE/tokenized/KEY`, where KEY hashes everything the ids depend on: the
tokenizer (its full state), the rendered text and margins of every pair, `max_length`,
`truncation_mode`, and the TRL and transformers versions. The cache is derived data: a
folder that does not load is rebuilt, and deleting the folder is always safe.

What TRL does per example, done here per batch: append the EOS token to both responses
(where missing), tokenize prompt, prompt + chosen and prompt + rejected, start each
completion where the prompt's ids and the full ids diverge, and, with `keep_start`
truncation, drop pairs whose prompt alone fills `max_length`. Conversational (chat) data
and multimodal processors keep TRL's own per-example code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from . import io

log = logging.getLogger(__name__)

BATCH = 1000  # pairs per tokenizer call: large enough for the fast tokenizer's batching to pay
TEXT_COLUMNS = ("prompt", "chosen", "rejected")


def table_hash(dataset: Any) -> str:
    """sha256 of every column of an Arrow-backed dataset, read straight from its buffers."""
    digest = hashlib.sha256()
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    for name in sorted(table.column_names):
        digest.update(name.encode())
        for buffer in table.column(name).combine_chunks().buffers():
            if buffer is not None:
                digest.update(memoryview(buffer))
    return digest.hexdigest()


def tokenizer_hash(tokenizer: Any) -> str:
    """A hash of the tokenizer's full state (vocabulary, merges, normalizer, special tokens)."""
    from datasets.fingerprint import Hasher

    return Hasher.hash(tokenizer)


def cache_key(dataset: Any, tokenizer: Any, args: Any) -> str:
    import transformers
    import trl

    parts = [trl.__version__, transformers.__version__, tokenizer_hash(tokenizer), table_hash(dataset),
             args.max_length, args.truncation_mode]  # fmt: skip
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _batched(tokenizer: Any) -> Any:
    """The per-batch version of TRL's `add_eos` + `tokenize_fn` for plain-text pairs."""
    from .trl_compat import common_prefix_length

    eos = tokenizer.eos_token

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        chosen = [c if c.endswith(eos) else c + eos for c in batch["chosen"]]
        rejected = [r if r.endswith(eos) else r + eos for r in batch["rejected"]]
        prompts = batch["prompt"]
        prompt_ids = tokenizer(text=prompts)["input_ids"]
        with_chosen = tokenizer(text=[p + c for p, c in zip(prompts, chosen, strict=True)])["input_ids"]
        with_rejected = tokenizer(text=[p + r for p, r in zip(prompts, rejected, strict=True)])["input_ids"]
        out: dict[str, list[Any]] = {"chosen": chosen, "rejected": rejected,
                                     "prompt_ids": [], "chosen_ids": [], "rejected_ids": []}  # fmt: skip
        for p, c, r in zip(prompt_ids, with_chosen, with_rejected, strict=True):
            n = min(common_prefix_length(p, c), common_prefix_length(p, r))
            if n < len(p):
                log.warning("a tokenized prompt is not a prefix of prompt + response (the template's end merges "
                            "with the response's first token): the response starts where they diverge")  # fmt: skip
            out["prompt_ids"].append(p[:n])
            out["chosen_ids"].append(c[n:])
            out["rejected_ids"].append(r[n:])
        return out

    return tokenize


def tokenize_pairs(dataset: Any, tokenizer: Any, args: Any, name: str, cache: str | Path | None = None) -> Any:
    """`dataset` (prompt/chosen/rejected, optional margin) as TRL's tokenized preference dataset.

    With `cache` (a folder), the result is read from there when an identical tokenization was
    saved before, and saved there otherwise.
    """
    from datasets import load_from_disk

    from .trl_compat import is_plain_text, prepare_dataset

    if len(dataset) == 0:
        return dataset
    if not is_plain_text(dataset[0], tokenizer):
        return prepare_dataset(dataset, tokenizer, args, name)
    path = Path(cache) / cache_key(dataset, tokenizer, args) if cache is not None else None
    if path is not None and path.is_dir():
        try:
            return load_from_disk(str(path))
        except Exception as err:  # a derived file: rebuild it
            log.warning("tokenized-pairs cache %s is unusable (%s); tokenizing again", path, err)
            io.remove(path)
    out = dataset.map(_batched(tokenizer), batched=True, batch_size=BATCH, num_proc=args.dataset_num_proc,
                      desc=f"Tokenizing {name} pairs")  # fmt: skip
    if args.max_length is not None and args.truncation_mode == "keep_start":
        out = out.filter(
            lambda lengths: [len(p) < args.max_length for p in lengths],
            input_columns="prompt_ids",
            batched=True,
            batch_size=BATCH,
            desc=f"Dropping {name} pairs whose prompt fills max_length",
        )
    if path is not None:
        with io.atomic_dir(path) as tmp:
            out.save_to_disk(str(tmp))
        out = load_from_disk(str(path))  # memory-mapped, like a hit: no copy of the pairs in memory
    return out
