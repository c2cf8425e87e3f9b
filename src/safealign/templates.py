"""Prompt templates: how a raw PKU-SafeRLHF prompt is shown to the model.

`beaver` is safe-rlhf's conversation format, which the PKU-Alignment Alpaca models were
trained with; the response follows `ASSISTANT:` directly, as in safe-rlhf. `alpaca` is the
Stanford Alpaca instruction format. `chat` hands TRL conversational pairs, so the
tokenizer's own chat template renders them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, unknown_name
from .objectives import Pair

if TYPE_CHECKING:  # `datasets` is imported where a dataset is built: config checks stay light
    from datasets import Dataset

TEXT_TEMPLATES = {
    "beaver": "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:",
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\n{prompt}\n\n### Response:\n"
    ),
}
TEMPLATES = (*TEXT_TEMPLATES, "chat")


def check_template(name: str, tokenizer: Any | None = None) -> None:
    """Fail early on an unknown template, or on `chat` with a tokenizer that has no chat template."""
    if name not in TEMPLATES:
        raise unknown_name("template", name, TEMPLATES)
    if name == "chat" and tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"template=chat: the tokenizer of this model ({getattr(tokenizer, 'name_or_path', '?')}) has no chat "
            "template. Use template=beaver or template=alpaca, or a model whose tokenizer defines one."
        )


def render_prompt(name: str, prompt: str) -> str | list[dict[str, str]]:
    """The prompt as the model sees it: text, or a one-turn conversation for `chat`."""
    if name == "chat":
        return [{"role": "user", "content": prompt}]
    return TEXT_TEMPLATES[name].format(prompt=prompt)


def render_response(name: str, response: str) -> str | list[dict[str, str]]:
    return [{"role": "assistant", "content": response}] if name == "chat" else response


def to_dataset(pairs: Sequence[Pair], template: str, with_margin: bool | None = None) -> Dataset:
    """The pairs in TRL's preference format, with a `margin` column when `with_margin`.

    By default the column is added when some margin is non-zero; leaving it out for
    margin-free objectives keeps training on TRL's own path.
    """
    from datasets import Dataset

    columns: dict[str, list[Any]] = {
        "prompt": [render_prompt(template, p.prompt) for p in pairs],
        "chosen": [render_response(template, p.chosen) for p in pairs],
        "rejected": [render_response(template, p.rejected) for p in pairs],
    }
    if with_margin if with_margin is not None else any(p.margin for p in pairs):
        columns["margin"] = [p.margin for p in pairs]
    return Dataset.from_dict(columns)
