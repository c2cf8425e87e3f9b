"""k sampled responses per prompt from the current policy: the first phase of an iterative-DPO round.

Thin over `model.generate` through `safealign.evaluation.generation.generate_batched` (left padding,
the KV cache, the run's autocast), so sampling and evaluation share one code path. What this module
adds is the shape of the work, chosen for speed (`benchmarks/iterate_sampling.py` measures it against a plain
batched `model.generate`):

- **k per prompt with `num_return_sequences=k`.** transformers expands each prompt k times before
  the prefill, so this costs the same as repeating the prompt ids k times, but it keeps a prompt's k
  samples adjacent in the output and needs no copy of the ids.
- **Prompts sorted by length** (longest first) before batching, and the results put back in the
  caller's order: a batch then pads its prompts to similar lengths, and the longest batch runs first
  so an out-of-memory error shows at once, not after most of the round.
- **`batch_size` counts sequences** (prompts × k) per `generate` call, since memory grows with the
  sequences, not the prompts: a call takes `max(1, batch_size // k)` prompts.
- **One seed** (`torch.manual_seed`) before the first batch: the same prompts, settings and seed on
  the same device give the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def sampling_kwargs(k: int, temperature: float, top_p: float, top_k: int | None, max_new_tokens: int) -> dict[str, Any]:
    """The `generate` keywords of sampling; `top_k=None` turns off transformers' default top-k of 50.

    Every sampling setting is passed explicitly, so neither the model's own `generation_config`
    (a hub chat model often ships temperature 0.6, top_p 0.9) nor transformers' defaults change
    what the config says.
    """
    return {
        "do_sample": True,
        "num_return_sequences": k,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_new_tokens": max_new_tokens,
    }


def sample_responses(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[list[int]],
    k: int,
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    device: Any,
    top_k: int | None = None,
) -> list[list[str]]:
    """k sampled responses for each prompt (decoded new text, special tokens skipped), in the prompts' order.

    `prompt_ids` are token ids with the template applied, as `evaluation.generation._prompt_ids`
    makes them. The model is put in eval mode for the call (dropout would change the samples) and
    returned to its previous mode.
    """
    import torch

    from ..evaluation.generation import generate_batched

    if k < 1 or batch_size < 1:
        raise ValueError(f"sample_responses: k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
    if not prompt_ids:
        return []
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))  # stable: ties keep their order
    was_training = model.training
    model.eval()
    try:
        torch.manual_seed(seed)
        flat = generate_batched(
            model,
            tokenizer,
            [prompt_ids[i] for i in order],
            max(1, batch_size // k),
            device,
            f"sampling ({k} per prompt)",
            **sampling_kwargs(k, temperature, top_p, top_k, max_new_tokens),
        )
    finally:
        model.train(was_training)
    out: list[list[str]] = [[] for _ in prompt_ids]
    for rank, i in enumerate(order):
        out[i] = flat[rank * k : (rank + 1) * k]
    return out
