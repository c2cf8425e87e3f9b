"""Every kind of bad input gets a non-zero exit and one readable message naming the place, no traceback."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from safealign.cli import CONF_DIR
from tests.rows import make_row

REPO = CONF_DIR.parent


def cli(recipe: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run recipes/<recipe>.py in-process, as `python recipes/<recipe>.py ARGS` would; return the exit code."""
    monkeypatch.setattr(sys, "argv", [str(REPO / "recipes" / f"{recipe}.py"), *args])
    try:
        runpy.run_path(str(REPO / "recipes" / f"{recipe}.py"), run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = [make_row((0, 2), 0, 0, prompt=f"Prompt {i}?") for i in range(3)]


def with_row(row: dict | str, line: int = 2) -> Callable[[Path], Path]:
    """A JSON Lines file whose line `line` is `row`, the others valid."""
    return lambda tmp: jsonl(tmp / "data.jsonl", [*GOOD[: line - 1], row, *GOOD[line - 1 :]])


def edited(**changes) -> dict:
    row = make_row((0, 2), 0, 0, prompt="Edited?")
    row.update(changes)
    return row


def missing(column: str) -> dict:
    row = edited()
    del row[column]
    return row


DATA_CASES = [
    ("not-json", with_row('{"prompt": "x",'), ["line 2: not valid JSON"]),
    ("not-an-object", with_row("[1, 2]"), ["line 2: expected a JSON object, got list"]),
    ("not-utf8", lambda tmp: (tmp / "data.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n') and tmp / "data.jsonl",
     ["line 1: not UTF-8"]),
    ("empty-file", lambda tmp: jsonl(tmp / "data.jsonl", []), ["data.jsonl: the file is empty"]),
    ("missing-column", with_row(missing("safer_response_id")), ["line 2, column 'safer_response_id': missing"]),
    ("bool-as-text", with_row(edited(is_response_0_safe="yes")),
     ["line 2, column 'is_response_0_safe': expected true or false, got 'yes'"]),
    ("id-out-of-range", with_row(edited(better_response_id=2)),
     ["line 2, column 'better_response_id': expected 0 or 1, got 2"]),
    ("severity-out-of-range", with_row(edited(response_1_severity_level=7)),
     ["line 2, column 'response_1_severity_level': expected a severity level 0..3, got 7"]),
    ("null-text", with_row(edited(prompt=None)), ["line 2, column 'prompt': expected a string, got None"]),
    ("categories-not-a-mapping", with_row(edited(response_0_harm_category=["Violence"])),
     ["line 2, column 'response_0_harm_category': expected a mapping"]),
    ("unknown-category", with_row(edited(response_1_harm_category={"Violense": True})),
     ["line 2, column 'response_1_harm_category': unknown harm categories ['Violense']"]),
    ("category-not-bool", with_row(edited(response_1_harm_category={"Violence": "yes"})),
     ["column 'response_1_harm_category': expected true/false for every category"]),
    ("empty-response", with_row(edited(response_0="  ")), ["line 2, column 'response_0': expected a non-empty text"]),
    ("contradicting-labels", with_row(edited(is_response_1_safe=True)),
     ["line 2, column 'is_response_1_safe': is_response_1_safe is true but response_1_severity_level is 2"]),
    ("missing-file", lambda tmp: tmp / "nope.jsonl", ["nope.jsonl: no such file or directory (data.path)"]),
    ("empty-after-objective",
     lambda tmp: jsonl(tmp / "data.jsonl", [make_row((0, 0), 0, 0, prompt=f"p{i}") for i in range(3)]),
     ["no pairs left", "objective=harmless", "same_safety: 3"]),
]  # fmt: skip


@pytest.mark.parametrize(("builder", "expected"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
@pytest.mark.integration
def test_bad_data_gets_one_clear_message(builder, expected, tmp_path, monkeypatch, capsys):
    path = builder(tmp_path)
    args = [f"data.path={path}", f"hydra.run.dir={tmp_path / 'out'}"]
    if "same_safety: 3" in expected:
        args += ["objective=harmless", "objective.contrast_only=true"]
    code = cli("pairs", *args, monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("safealign: error: ") and "Traceback" not in err
    for text in expected:
        assert text in err
    assert str(path.name) in err or "no pairs left" in err
    assert not (tmp_path / "out" / "pairs.jsonl").exists()


CONFIG_CASES = [
    ("unknown-key", ["train.betta=0.1"], "train.betta: unknown config key", "Did you mean 'beta'"),
    ("unknown-group-choice", ["objective=multilvel"], "no such objective config", "Did you mean 'multilevel'"),
    ("added-unknown-key", ["+train.betta=0.1"], "train.betta: unknown config key", "Did you mean 'beta'"),
    ("beta", ["train.beta=0"], "train.beta: expected a finite number > 0, got 0", ""),
    ("gamma", ["objective.gamma=-1"], "objective.gamma: expected a value >= 0", ""),
    ("delta", ["objective=safedpo", "objective.delta=-1"], "objective.delta: expected a value >= 0", ""),
    ("loss-weights", ["train.loss_weights=[1,2]"], "train.loss_weights: 2 weights for 1 loss types", ""),
    ("max-length", ["train.max_length=0"], "train.max_length: expected an integer >= 1", ""),
    ("nf4-full-finetune", ["peft=none"], "quant=nf4 with peft=none", "use peft=lora"),
    ("bf16-on-cpu", ["train.bf16=true"], "train.bf16=true: this device has no bf16", ""),
    ("margin-loss", ["train.loss_type=[sft]"], "cannot use the per-pair margins of objective=multilevel", ""),
    ("unknown-loss", ["train.loss_type=[sigmod]"], "unknown loss type (train.loss_type) 'sigmod'", "'sigmoid'"),
]


@pytest.mark.parametrize(("args", "message", "hint"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
@pytest.mark.integration
def test_bad_config_fails_before_anything_loads(args, message, hint, tmp_path, monkeypatch, capsys):
    code = cli("dpo", *args, f"hydra.run.dir={tmp_path}", monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and message in err and hint in err and "Traceback" not in err
    assert not (tmp_path / "status.json").exists()  # nothing was started


@pytest.mark.integration
def test_prompts_longer_than_max_length_are_dropped_and_counted(tmp_path, monkeypatch, capsys):
    rows = [make_row((0, 2), 0, 0, prompt=f"Short {i}?") for i in range(6)]
    rows += [make_row((0, 2), 0, 0, prompt="long " * 200 + f"{i}?") for i in range(2)]
    path = jsonl(tmp_path / "data.jsonl", rows)
    base = [f"data.path={path}", "train.max_length=64", "train.max_steps=1", "train.report_to=[]"]
    assert cli("dpo", *base, f"hydra.run.dir={tmp_path / 'ok'}", monkeypatch=monkeypatch) == 0
    report = json.loads((tmp_path / "ok" / "pair_report.json").read_text())["train"]
    assert report["dropped"]["prompt_too_long"] == 2 and report["kept"] == 6

    only_long = jsonl(tmp_path / "long.jsonl", rows[6:])
    code = cli("dpo", f"data.path={only_long}", "train.max_length=64", f"hydra.run.dir={tmp_path / 'bad'}",
               monkeypatch=monkeypatch)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "every train pair was dropped: all 2 prompts" in err and "train.max_length=64" in err
    assert not (tmp_path / "bad" / "status.json").exists()  # found before the run starts: nothing is written


@pytest.mark.integration
def test_chat_template_needs_a_tokenizer_that_has_one(tiny_path, tmp_path, monkeypatch, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_path, model)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    code = cli("dpo", f"model.name_or_path={model}", "template=chat", f"hydra.run.dir={tmp_path / 'run'}",
               monkeypatch=monkeypatch)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "template=chat: the tokenizer" in err and "has no chat template" in err


@pytest.mark.parametrize(("args", "message"), [
    (["data=pku_saferlhf"], "data.path=/path/to/train.jsonl"),
    pytest.param(["model=alpaca-7b"], "could not load model 'PKU-Alignment/alpaca-7b-reproduced' (model.name_or_path)",
                 marks=pytest.mark.integration),  # imports torch and transformers to try the model
])  # fmt: skip
def test_hub_while_offline_says_how_to_use_a_local_copy(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    code = cli("dpo", *args, f"hydra.run.dir={tmp_path}", monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err


@pytest.mark.integration
def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAFEALIGN_DEBUG", "1")
    code = cli("pairs", f"data.path={tmp_path / 'nope.jsonl'}", f"hydra.run.dir={tmp_path}", monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "safealign.errors.DataError" in err and "no such file" in err
