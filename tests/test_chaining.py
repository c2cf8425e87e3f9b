"""End to end on the tiny model: SFT, then DPO from the SFT adapter (it is the reference), then SACPO's two stages."""

from __future__ import annotations

import json

import pytest

from safealign.cli import compose
from safealign.jobs.dpo import run as dpo
from safealign.jobs.sft import run as sft

FEW = ["train.per_device_train_batch_size=4", "train.logging_steps=1", "train.report_to=[]"]
NO_EVAL = ["eval.after_train=false"]


def first_step_rewards(metrics):
    first = metrics["log_history"][0]
    assert first["step"] == 1
    return first["rewards/chosen"], first["rewards/rejected"]


def max_difference(a, b):
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """An SFT run on the harmless objective's chosen responses (a few steps)."""
    out = tmp_path_factory.mktemp("sft")
    metrics = sft(compose("sft", ["objective=harmless", "train.max_steps=4", *FEW]), out)
    return out, metrics


@pytest.mark.integration
def test_sft_trains_on_the_completion_and_leaves_a_run(sft_run):
    from safetensors.torch import load_file

    out, metrics = sft_run
    assert json.loads((out / "status.json").read_text()) == {"status": "done"}
    for name in ("config.yaml", "pair_report.json", "metrics.json", "versions.json", "data_fingerprint.json"):
        assert (out / name).is_file(), name
    assert metrics["global_step"] == 4 and metrics["train"]["train_loss"] > 0 and "eval" in metrics
    lora_b = [w for k, w in load_file(out / "adapter" / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b), "SFT must move the adapter away from the base model"
    report = json.loads((out / "pair_report.json").read_text())
    assert report["train"]["kept"] > 200 and report["test"]["kept"] > 50


@pytest.mark.integration
def test_sft_loss_is_on_the_completion_only(tmp_path):
    from safealign.jobs.sft import build_trainer
    from safealign.jobs.training import load_pairs
    from safealign.settings import parse_sft
    from safealign.trainer import sft_config

    s = parse_sft(compose("sft", ["objective=harmless"]))
    pairs = load_pairs(s)
    trainer = build_trainer(s, sft_config(s.train, tmp_path), pairs, [])
    prompt = trainer.processing_class("BEGINNING OF CONVERSATION: USER: " + pairs.train[0].prompt + " ASSISTANT:")
    n = len(prompt["input_ids"])
    labels = trainer.train_dataset[0]["labels"]  # TRL's: -100 where a token adds no loss
    assert labels[:n] == [-100] * n and all(t != -100 for t in labels[n:]) and len(labels) > n


@pytest.mark.integration
def test_dpo_from_sft_uses_the_sft_model_as_reference(sft_run, tmp_path):
    """At step 1 the policy equals the reference, so the implicit rewards are 0: the reference is the SFT model
    (against the base model they would not be, since SFT moved the adapter), in training and in evaluation."""
    import torch

    from safealign.evaluation.report import load_run
    from safealign.evaluation.scoring import load_policy
    from safealign.modeling import load_model

    start, _ = sft_run
    metrics = dpo(compose("dpo", ["objective=helpful", f"model.adapter={start}", "train.max_steps=1", *FEW, *NO_EVAL]),
                  tmp_path)  # fmt: skip
    chosen, rejected = first_step_rewards(metrics)
    assert abs(chosen) < 1e-3 and abs(rejected) < 1e-3, (chosen, rejected)
    # TRL's frozen "ref" copy of the starting adapter, saved beside the trained one, is the SFT adapter.
    assert max_difference(start / "adapter" / "adapter_model.safetensors",
                          tmp_path / "adapter" / "ref" / "adapter_model.safetensors") == 0  # fmt: skip

    chained = load_policy(tmp_path, load_run(tmp_path))
    sft_model = load_model(chained_model(tmp_path, start), "nf4", load_run(tmp_path).peft).model.eval()  # the SFT model
    ids = chained.tokenizer("BEGINNING OF CONVERSATION: USER: How do I stay safe? ASSISTANT: Carefully.",
                            return_tensors="pt").input_ids  # fmt: skip
    with torch.no_grad():
        with chained.reference() as reference:
            ref_logits = reference(input_ids=ids).logits
        sft_logits = sft_model(input_ids=ids).logits
        with sft_model.disable_adapter():
            base_logits = sft_model(input_ids=ids).logits
    assert torch.allclose(ref_logits, sft_logits, atol=1e-4)  # evaluation's reference: the SFT model
    assert not torch.allclose(ref_logits, base_logits, atol=1e-4)  # ... which is not the base model


def chained_model(run, start):
    """The model config of the chained run, continuing from `start` (what `load_model` loads for it)."""
    import dataclasses

    from safealign.evaluation.report import load_run

    return dataclasses.replace(load_run(run).model, adapter=str(start))


@pytest.mark.integration
def test_sacpo_chains_a_harmless_stage_on_a_helpful_one(tmp_path):
    """SACPO: DPO for helpfulness, then DPO for safety from it (a DPO run continued by another)."""
    small = ["model=tiny", "data=sample", "train.gradient_accumulation_steps=1", "train.max_length=256",
             "train.gradient_checkpointing=false", "train.max_steps=2", *FEW]  # fmt: skip
    helpful, harmless = tmp_path / "helpful", tmp_path / "harmless"
    dpo(compose("dpo", ["experiment=sacpo_helpful", "train.learning_rate=5e-3", *small, *NO_EVAL]), helpful)
    metrics = dpo(compose("dpo", ["experiment=sacpo_safety", f"model.adapter={helpful}", *small]), harmless)
    chosen, rejected = first_step_rewards(metrics)
    assert abs(chosen) < 1e-3 and abs(rejected) < 1e-3, (chosen, rejected)
    assert metrics["train"]["train_loss"] > 0 and "heldout" in metrics  # the end-of-training evaluation ran
    saved = (harmless / "config.yaml").read_text()
    assert f"adapter: {helpful}" in saved and "beta: 0.025" in saved and "name: harmless" in saved
    assert max_difference(helpful / "adapter" / "adapter_model.safetensors",
                          harmless / "adapter" / "ref" / "adapter_model.safetensors") == 0  # fmt: skip
    assert max_difference(helpful / "adapter" / "adapter_model.safetensors",
                          harmless / "adapter" / "adapter_model.safetensors") > 0  # fmt: skip


@pytest.mark.integration
def test_chained_run_evaluates_the_same_from_anywhere_and_without_its_start(tmp_path, monkeypatch):
    """A relative model.adapter is saved absolute, and the chained run keeps TRL's copy of its starting adapter
    (adapter/ref/), which its evaluation uses: evaluating it from another directory, where the same relative
    path names another run, with the starting run deleted, gives the same numbers."""
    import shutil

    import yaml

    from safealign.evaluation.report import evaluate_run
    from safealign.settings import parse_eval
    from tests.runs import fake_run

    small = ["model=tiny", "quant=none", "data=sample", "train.gradient_accumulation_steps=1", "train.max_length=256",
             "train.gradient_checkpointing=false", "train.max_steps=2", *FEW]  # fmt: skip
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    monkeypatch.chdir(project)
    dpo(compose("dpo", ["objective=helpful", "train.learning_rate=5e-3", *small, *NO_EVAL]), project / "start")
    chained = project / "chained"
    dpo(compose("dpo", ["objective=harmless", "model.adapter=start", *small, *NO_EVAL]), chained)
    assert yaml.safe_load((chained / "config.yaml").read_text())["model"]["adapter"] == str(project / "start")
    assert max_difference(project / "start" / "adapter" / "adapter_model.safetensors",
                          chained / "adapter" / "ref" / "adapter_model.safetensors") == 0  # fmt: skip
    ev = parse_eval(compose("dpo", ["eval.max_pairs=24", "eval.bootstrap=20"]).eval)
    before = evaluate_run(chained, ev)["dimensions"]

    fake_run(elsewhere / "start", ["objective=helpful"], seed=3)  # what `start` names from there: another adapter
    shutil.rmtree(project / "start")
    monkeypatch.chdir(elsewhere)
    after = evaluate_run(chained, ev)["dimensions"]
    assert after == before
    assert json.loads((chained / "eval.json").read_text())["dimensions"] == before
