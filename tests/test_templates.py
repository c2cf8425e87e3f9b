"""Each template's prompt tokens are an exact prefix of prompt + response, so no prompt token is lost."""

from __future__ import annotations

import pytest

from safealign.data.loading import load_rows
from safealign.data.paths import sample_path
from safealign.errors import ConfigError
from safealign.templates import TEMPLATES, check_template, render_prompt, render_response, to_dataset


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


@pytest.fixture(scope="module")
def texts() -> list[tuple[str, str]]:
    rows = load_rows(sample_path("test.jsonl")).rows
    return [(r["prompt"], r[f"response_{k}"]) for r in rows for k in (0, 1)]


def tokens(tokenizer, template: str, prompt: str, response: str | None = None) -> list[int]:
    rendered = render_prompt(template, prompt)
    if template == "chat":
        messages = rendered + (render_response(template, response) if response is not None else [])
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=response is None, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)
    text = rendered + (response + tokenizer.eos_token if response is not None else "")
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.integration
@pytest.mark.parametrize("template", TEMPLATES)
def test_prompt_tokens_are_a_prefix(tokenizer, texts, template):
    for prompt, response in texts:
        prompt_ids = tokens(tokenizer, template, prompt)
        full_ids = tokens(tokenizer, template, prompt, response)
        assert full_ids[: len(prompt_ids)] == prompt_ids, (template, prompt)
        assert len(full_ids) > len(prompt_ids)


def test_text_templates_render_as_documented():
    assert render_prompt("beaver", "Hi?") == "BEGINNING OF CONVERSATION: USER: Hi? ASSISTANT:"
    assert render_prompt("alpaca", "Hi?").endswith("### Instruction:\nHi?\n\n### Response:\n")
    assert render_prompt("chat", "Hi?") == [{"role": "user", "content": "Hi?"}]


@pytest.mark.integration
def test_chat_needs_a_chat_template(tokenizer):
    from transformers import AutoTokenizer

    check_template("chat", tokenizer)
    bare = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    with pytest.raises(ConfigError, match=r"no chat template.*template=beaver"):
        check_template("chat", bare)


def test_unknown_template_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown template 'bever'.*alpaca, beaver, chat.*Did you mean 'beaver'"):
        check_template("bever")


def test_dataset_is_conversational_for_chat():
    from safealign.objectives import Pair

    ds = to_dataset([Pair("p", "c", "r", 0.0, 0)], "chat")
    assert ds[0]["prompt"] == [{"role": "user", "content": "p"}]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "c"}]
    assert "margin" not in ds.column_names
