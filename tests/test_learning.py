"""Every training setting learns: the loss moves, gradients are non-zero at step 1, every trained matrix changes.

A run that finishes is not a run that learns: a LoRA setting once trained nothing (every
gradient 0) and still ended `done`. The matrix below covers the settings that decide whether
gradients reach the adapter, pairwise rather than as a full product (each row is a real run
of a few steps on the embedded default). The other tests check the guard itself: a run that
cannot learn (gradients cut by bitsandbytes' CPU repacking without the fix; a learning rate of
0) ends `failed`, naming the likely setting, and its adapter is not saved.
"""

from __future__ import annotations

import json
import shutil

import pytest

from safealign.cli import compose
from safealign.errors import SafealignError
from safealign.jobs.dpo import run as dpo
from safealign.jobs.sft import run as sft

FEW = ["train.max_steps=3", "train.per_device_train_batch_size=4", "train.logging_steps=1", "train.report_to=[]",
       "eval.after_train=false", "data.test_split=null"]  # fmt: skip
QV = "peft.target_modules=[q_proj,v_proj]"
MLP = "peft.target_modules=[gate_proj,up_proj,down_proj]"

# (id, overrides, reference cache: "cold" (emptied first), "warm" (filled by the row before), or None (not used)).
# Pairwise over: target modules x precompute (cold / warm / off) x quant x gradient checkpointing x objective.
MATRIX = [
    ("qv-precompute-cold-nf4-harmless", [QV, "objective=harmless"], "cold"),
    ("qv-precompute-warm-nf4-gc-harmless", [QV, "objective=harmless", "train.gradient_checkpointing=true"], "warm"),
    ("qv-no-precompute-none-multilevel", [QV, "quant=none", "train.precompute_ref=false"], None),
    ("default-precompute-cold-none-gc-multilevel", ["quant=none", "train.gradient_checkpointing=true"], "cold"),
    ("default-no-precompute-nf4-harmless", ["objective=harmless", "train.precompute_ref=false"], None),
    ("mlp-no-precompute-none-harmless", [MLP, "quant=none", "objective=harmless", "train.precompute_ref=false"], None),
    ("all-linear-precompute-cold-nf4-gc-multilevel", ["peft.target_modules=all-linear",
                                                      "train.gradient_checkpointing=true"], "cold"),
    ("all-linear-no-precompute-none-harmless", ["peft.target_modules=all-linear", "quant=none", "objective=harmless",
                                                "train.precompute_ref=false"], None),
    ("mlp-precompute-cold-nf4-multilevel", [MLP], "cold"),
    ("mlp-precompute-warm-nf4-gc-multilevel", [MLP, "train.gradient_checkpointing=true"], "warm"),
    ("qv-gate-precompute-cold-nf4-harmless", ["peft.target_modules=[q_proj,v_proj,gate_proj]", "objective=harmless"],
     "cold"),
]


def empty_reference_cache() -> None:
    """No reference log-probs for any data or model: safealign's cache and TRL's own (beside the tokenized data)."""
    from safealign.tiny import cache_dir

    for name in ("ref_logps", "tokenized"):
        shutil.rmtree(cache_dir() / name, ignore_errors=True)


def assert_learnt(metrics: dict, adapter_dir, start=None) -> None:
    """The loss moved, the gradient at step 1 was non-zero, and every trained LoRA matrix changed."""
    from safetensors.torch import load_file

    history = [h for h in metrics["log_history"] if "loss" in h]
    assert history[0]["step"] == 1 and history[0]["grad_norm"] > 0, history[0]
    assert len({round(h["loss"], 6) for h in history}) > 1, f"the loss did not move: {history}"
    learning = metrics["learning"]
    assert learning["first_grad_norm_clipped"] > 0
    assert learning["trainable_tensors"] > 0 and learning["changed_tensors"] == learning["trainable_tensors"], learning
    adapter = load_file(adapter_dir / "adapter_model.safetensors")
    lora = {k: v for k, v in adapter.items() if "lora_" in k}
    assert lora, f"no LoRA matrices in {adapter_dir}"
    if start is None:  # LoRA B starts at 0: every one must have moved
        assert all(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)
    else:  # continued from `start`: every matrix differs from where it started
        begin = load_file(start / "adapter_model.safetensors")
        assert begin.keys() == adapter.keys()
        unchanged = [k for k in lora if (lora[k].float() - begin[k].float()).abs().max() == 0]
        assert not unchanged, f"matrices that did not change: {unchanged}"


@pytest.mark.integration
@pytest.mark.parametrize(("overrides", "cache"), [row[1:] for row in MATRIX], ids=[row[0] for row in MATRIX])
def test_every_setting_learns(tmp_path, overrides, cache):
    if cache == "cold":
        empty_reference_cache()
    metrics = dpo(compose("dpo", [*overrides, *FEW]), tmp_path)
    if cache is not None:
        assert ("train" in metrics["ref_cache_hits"]) == (cache == "warm"), metrics["ref_cache_hits"]
    assert_learnt(metrics, tmp_path / "adapter")
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "done"


@pytest.fixture
def avx512bf16_cpu(monkeypatch):
    """This CPU as bitsandbytes sees one with AVX512-BF16: 4-bit layers repack their weights for the fused CPU
    inference kernel on their first forward in eval mode without gradients, and from then on that kernel's output
    passes no gradient back to the input (a native op without an autograd kernel: torch's fallback gives it a
    gradient of 0). Here the portable kernel runs, its gradient cut the same way."""
    import bitsandbytes
    import torch

    original = bitsandbytes.functional.gemv_4bit

    def fused_kernel(A, *args, **kwargs):
        with torch.no_grad():
            out = original(A, *args, **kwargs)
        return out + 0 * A.sum()  # connected to the graph, with a gradient of 0

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: True)
    monkeypatch.setattr(bitsandbytes.functional, "gemv_4bit", fused_kernel)


@pytest.mark.integration
def test_reference_precompute_does_not_repack_4bit_layers_on_avx512bf16_cpus(tmp_path, avx512bf16_cpu):
    """The root cause of `[q_proj,v_proj]` training nothing with the reference precomputed: TRL's precompute is
    a no-grad forward of the policy in eval mode, after which bitsandbytes' 4-bit layers (on an AVX512-BF16 CPU)
    return outputs with no gradient, so nothing below a frozen quantized layer learns."""
    empty_reference_cache()
    metrics = dpo(compose("dpo", [QV, "objective=harmless", *FEW]), tmp_path)
    assert metrics["ref_cache_hits"] == []  # the precompute ran
    assert_learnt(metrics, tmp_path / "adapter")


@pytest.mark.integration
def test_without_the_fix_that_cpu_trains_nothing_and_the_run_fails(tmp_path, avx512bf16_cpu, monkeypatch):
    import safealign.modeling

    monkeypatch.setattr(safealign.modeling, "keep_4bit_differentiable", lambda model: None)
    empty_reference_cache()
    expected = r"gradient norm was 0 at every logged step.*peft.target_modules=\['q_proj', 'v_proj'\].*not saved"
    with pytest.raises(SafealignError, match=expected):
        dpo(compose("dpo", [QV, "objective=harmless", *FEW]), tmp_path)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and "did not learn" in status["error"]
    assert not (tmp_path / "adapter").exists()
    learning = json.loads((tmp_path / "metrics.json").read_text())["learning"]  # kept, to see what happened
    assert learning["first_grad_norm_clipped"] == 0 and learning["changed_tensors"] == 0


def test_bitsandbytes_still_has_the_cpu_repacking_switch():
    """`modeling.keep_4bit_differentiable` turns this attribute off; if bitsandbytes renames it, look again."""
    import bitsandbytes as bnb

    assert hasattr(bnb.nn.Linear4bit(8, 8), "support_avx512bf16_for_cpu")
    assert "support_avx512bf16_for_cpu" in __import__("inspect").getsource(bnb.nn.Linear4bit.forward)


@pytest.fixture(scope="module")
def sft_start(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    return out, sft(compose("sft", ["objective=harmless", QV, *FEW[:-2], "data.test_split=null"]), out)


@pytest.mark.integration
def test_sft_learns(sft_start):
    out, metrics = sft_start
    history = [h for h in metrics["log_history"] if "loss" in h]
    assert history[0]["grad_norm"] > 0 and len({h["loss"] for h in history}) > 1
    assert_learnt(metrics, out / "adapter")


@pytest.mark.integration
@pytest.mark.parametrize("precompute", [True, False])
def test_dpo_from_an_adapter_learns(sft_start, tmp_path, precompute):
    start, _ = sft_start
    overrides = ["objective=harmless", f"model.adapter={start}", f"train.precompute_ref={str(precompute).lower()}"]
    metrics = dpo(compose("dpo", [*overrides, *FEW]), tmp_path)
    assert_learnt(metrics, tmp_path / "adapter", start=start / "adapter")


@pytest.mark.integration
@pytest.mark.parametrize("overrides", [["train.learning_rate=0"], ["train.warmup_steps=10"]], ids=["lr0", "warmup"])
def test_a_run_whose_weights_do_not_move_fails(tmp_path, overrides):
    with pytest.raises(SafealignError, match=r"none of the \d+ trainable tensors changed.*train.learning_rate"):
        dpo(compose("dpo", ["objective=harmless", *FEW, "train.max_steps=1", *overrides]), tmp_path)
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"
    assert "in 1 step:" in json.loads((tmp_path / "status.json").read_text())["error"]
