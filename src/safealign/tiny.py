"""The embedded tiny model: a small Llama with random weights and a BPE tokenizer trained on the sample.

It exists so that everything, the quantized path included, runs offline on a CPU. It is
built deterministically and cached on disk under a name that hashes its build inputs, so
a change of size or sample gives a new model instead of silently reusing an old one. The
cache is derived data: a copy that fails to load is rebuilt, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from . import io

log = logging.getLogger(__name__)

TINY = "tiny"
TINY_FORMAT = 1  # bump when the build below changes, so old caches are not reused
TINY_SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "user": "<|user|>", "assistant": "<|assistant|>"}
# A minimal chat template, so that `template=chat` works on the tiny model too.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}</s>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TINY_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def cache_dir() -> Path:
    """Where built models and derived caches live: $SAFEALIGN_CACHE, else ~/.cache/safealign."""
    return Path(os.environ.get("SAFEALIGN_CACHE", Path.home() / ".cache" / "safealign"))


def _sample_texts() -> list[str]:
    from .data.loading import load_rows
    from .data.paths import sample_path

    rows = load_rows(sample_path("train.jsonl")).rows
    return [t for r in rows for t in (r["prompt"], r["response_0"], r["response_1"])]


def _problem(target: Path) -> str | None:
    """Why a cached tiny model cannot be used, or None when it looks whole."""
    missing = [name for name in TINY_FILES if not (target / name).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        from safetensors import safe_open

        json.loads((target / "config.json").read_text(encoding="utf-8"))
        json.loads((target / "tokenizer.json").read_text(encoding="utf-8"))
        with safe_open(str(target / "model.safetensors"), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                weights.get_slice(key)
    except Exception as err:  # truncated or garbled files raise many types
        return f"unreadable ({type(err).__name__}: {err})"
    return None


def build_tiny(size: dict[str, int], vocab_size: int = 2048, root: Path | None = None) -> Path:
    """Build (once) and return the directory of the tiny model and tokenizer.

    Written to a temporary directory and renamed, so a crash or a concurrent sweep run
    never sees half a model.
    """
    texts = _sample_texts()
    key = hashlib.sha256(
        json.dumps([TINY_FORMAT, size, vocab_size, hashlib.sha256("\0".join(texts).encode()).hexdigest()]).encode()
    ).hexdigest()[:16]
    target = (root or cache_dir()) / f"tiny-llama-{key}"
    if target.exists():
        problem = _problem(target)
        if problem is None:
            return target
        log.warning("the cached tiny model %s is %s; building it again", target, problem)
        io.remove(target)
    log.info("building the tiny model in %s", target)
    with io.atomic_dir(target) as tmp:
        _write_tiny(tmp, texts, size, vocab_size)
    return target


def _write_tiny(out: Path, texts: list[str], size: dict[str, int], vocab_size: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TINY_SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=TINY_SPECIAL["bos"],
        eos_token=TINY_SPECIAL["eos"],
        pad_token=TINY_SPECIAL["pad"],
        additional_special_tokens=[TINY_SPECIAL["user"], TINY_SPECIAL["assistant"]],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **size,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_path(model_cfg: Any) -> str:
    """The model's path or hub id; `tiny` is built locally on first use."""
    if model_cfg.name_or_path == TINY:
        from accelerate import PartialState

        # Under a multi-process launch, rank 0 builds and the others then find it cached
        # (transformers' save_pretrained writes weights from the main process only).
        with PartialState().main_process_first():
            return str(build_tiny(dict(model_cfg.tiny), vocab_size=model_cfg.tiny_vocab_size))
    return model_cfg.name_or_path
