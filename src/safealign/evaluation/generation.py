"""Responses sampled from the policy and the reference to held-out prompts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ..data.loading import Rows
from ..pairs import Filters, categories_of
from ..settings import GenerationConfig
from .dimensions import NO_CATEGORY
from .scoring import PolicyModels


def heldout_prompts(rows: Rows, filters: Filters, max_prompts: int, seed: int) -> list[tuple[str, tuple[str, ...]]]:
    """Distinct held-out prompts (a seeded random subset of at most `max_prompts`) with their harm
    categories: the union of the categories flagged on any of the prompt's responses."""
    categories: dict[str, set[str]] = {}
    for row in rows.rows:
        if filters.reason(row) is None:
            categories.setdefault(row["prompt"], set()).update(categories_of(row))
    prompts = list(categories)
    if len(prompts) > max_prompts:
        prompts = [
            prompts[i] for i in sorted(random.Random(f"{seed}:prompts").sample(range(len(prompts)), max_prompts))
        ]
    return [(p, tuple(sorted(categories[p])) or (NO_CATEGORY,)) for p in prompts]


def _prompt_ids(tokenizer: Any, rendered: str | list[dict[str, str]]) -> list[int]:
    """The prompt's token ids as TRL tokenizes it (a conversation gets the generation prompt)."""
    if isinstance(rendered, list):
        return list(
            tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
    return list(tokenizer(text=rendered)["input_ids"])


def generate_batched(
    model: Any, tokenizer: Any, prompt_ids: Sequence[list[int]], batch_size: int, device: Any, desc: str, **kwargs: Any
) -> list[str]:
    """Left-padded batched generation; returns the decoded new text of each prompt."""
    import torch
    from tqdm.auto import tqdm

    from ..devices import training_precision
    from ..trl_compat import pad

    texts: list[str] = []
    for start in tqdm(range(0, len(prompt_ids), batch_size), desc=desc, unit="batch"):
        chunk = [torch.tensor(ids) for ids in prompt_ids[start : start + batch_size]]
        input_ids = pad(chunk, padding_value=tokenizer.pad_token_id, padding_side="left").to(device)
        attention_mask = pad([torch.ones_like(t) for t in chunk], padding_value=0, padding_side="left").to(device)
        with torch.no_grad(), training_precision(device):
            out = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, pad_token_id=tokenizer.pad_token_id, **kwargs
            )
        texts += tokenizer.batch_decode(out[:, input_ids.size(1) :], skip_special_tokens=True)
    return texts


def generate_responses(
    models: PolicyModels, prompts: Sequence[str], template: str, gen: GenerationConfig, seed: int
) -> dict[str, list[str]]:
    """Responses of the policy and of the reference (adapter disabled) to the same prompts."""
    import torch

    from ..templates import render_prompt

    ids = [_prompt_ids(models.tokenizer, render_prompt(template, p)) for p in prompts]
    kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample}
    if gen.do_sample:
        kwargs |= {"temperature": gen.temperature, "top_p": gen.top_p}
    else:  # unset the model's own sampling defaults, which greedy decoding would warn about
        kwargs |= {"temperature": None, "top_p": None, "top_k": None}
    out = {}
    torch.manual_seed(seed)
    out["policy"] = generate_batched(
        models.policy, models.tokenizer, ids, gen.batch_size, models.device, "generating (policy)", **kwargs
    )
    torch.manual_seed(seed)
    with models.reference() as reference_model:
        out["reference"] = generate_batched(
            reference_model, models.tokenizer, ids, gen.batch_size, models.device, "generating (reference)", **kwargs
        )
    return out


