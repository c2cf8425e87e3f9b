"""recipes/merge.py: PEFT's add_weighted_adapter over finished runs, checked before anything loads,
and the merged LoRA update equal to the weighted combination computed by hand."""

from __future__ import annotations

import inspect
import json
import typing

import pytest

from safealign.cli import compose
from safealign.errors import ConfigError
from safealign.settings.runs import COMBINATIONS, parse_merge
from tests.runs import fake_run


def merge_cfg(*overrides: str):
    return compose("merge", list(overrides))


def bare_run(path, *overrides: str, r: int = 4):
    """A finished run with only an adapter_config.json: enough for the checks, which load nothing."""
    run = fake_run(path, list(overrides), adapter=False)
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"r": r}))
    return run


def test_combination_types_are_peft_s():
    from peft import LoraModel

    hint = typing.get_type_hints(LoraModel.add_weighted_adapter)["combination_type"]
    assert set(COMBINATIONS) == set(typing.get_args(hint))
    assert "density" in inspect.signature(LoraModel.add_weighted_adapter).parameters


def test_q_gives_the_weights_of_two_runs(tmp_path):
    a, b = bare_run(tmp_path / "a"), bare_run(tmp_path / "b")
    s = parse_merge(merge_cfg(f"runs=[{a},{b}]", "q=0.25"))
    assert s.weights == [0.25, 0.75] and s.combination_type == "cat"
    s = parse_merge(merge_cfg(f"runs=[{a},{b},{a}]", "weights=[0.5,0.3,0.2]", "combination_type=svd"))
    assert s.weights == [0.5, 0.3, 0.2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["q=0.5", "weights=[0.5,0.5]"], "give exactly one"),
        ([], "give exactly one"),
        (["q=1.5"], r"q: expected a number in \[0, 1\]"),
        (["weights=[1.0]"], "weights: 1 weights for 2 runs"),
        (["q=0.5", "combination_type=linaer"], "unknown combination type.*Did you mean 'linear'"),
        (["q=0.5", "combination_type=ties"], r"density: combination_type=ties needs a density in \(0, 1\]"),
    ],
)
def test_merge_settings_errors(tmp_path, overrides, message):
    a, b = bare_run(tmp_path / "a"), bare_run(tmp_path / "b")
    with pytest.raises(ConfigError, match=message):
        parse_merge(merge_cfg(f"runs=[{a},{b}]", *overrides))


def test_merge_refuses_runs_it_cannot_merge(tmp_path):
    a = bare_run(tmp_path / "a")
    with pytest.raises(ConfigError, match="runs: expected a list of two or more"):
        parse_merge(merge_cfg(f"runs=[{a}]", "q=0.5"))
    other = bare_run(tmp_path / "other", "model.tiny_vocab_size=999")
    with pytest.raises(ConfigError, match=r"runs\[1\]=.*the base model differs"):
        parse_merge(merge_cfg(f"runs=[{a},{other}]", "q=0.5"))
    no_adapter = fake_run(tmp_path / "no_adapter", adapter=False)
    with pytest.raises(ConfigError, match=r"runs\[1\]=.*no LoRA adapter"):
        parse_merge(merge_cfg(f"runs=[{a},{no_adapter}]", "q=0.5"))
    with pytest.raises(ConfigError, match=r"runs\[0\]=.*no such directory"):
        parse_merge(merge_cfg(f"runs=[{tmp_path / 'gone'},{a}]", "q=0.5"))
    r8 = bare_run(tmp_path / "r8", r=8)
    with pytest.raises(ConfigError, match=r"combination_type=linear: PEFT needs adapters of one LoRA rank.*r=\[4, 8\]"):
        parse_merge(merge_cfg(f"runs=[{a},{r8}]", "q=0.5", "combination_type=linear"))
    assert parse_merge(merge_cfg(f"runs=[{a},{r8}]", "q=0.5")).combination_type == "cat"  # cat takes any ranks


def lora_deltas(adapter_dir):
    """Each LoRA module's update ΔW = scaling·B·A, from a saved adapter."""
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    scaling = config["lora_alpha"] / config["r"]
    return {k.replace(".lora_A.weight", ""): scaling * weights[k.replace("lora_A", "lora_B")] @ weights[k]
            for k in weights if "lora_A" in k}  # fmt: skip


def lora_factors(adapter_dir):
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    scaling = config["lora_alpha"] / config["r"]
    return {k.replace(".lora_A.weight", ""): (weights[k.replace("lora_A", "lora_B")], weights[k], scaling)
            for k in weights if "lora_A" in k}  # fmt: skip


@pytest.mark.integration
def test_merged_adapter_is_the_weighted_combination(tmp_path):
    import torch

    from safealign.evaluation.report import load_run
    from safealign.jobs.merge import run as merge

    a = fake_run(tmp_path / "a", ["objective=helpful"], seed=1)
    b = fake_run(tmp_path / "b", seed=2)
    q = 0.25
    record = merge(merge_cfg(f"runs=[{a},{b}]", f"q={q}", "eval.after_train=false"), tmp_path / "cat")
    out = tmp_path / "cat"
    assert record["weights"] == [q, 1 - q] and json.loads((out / "merge.json").read_text())["q"] == q
    assert json.loads((out / "status.json").read_text())["status"] == "done"
    assert (out / "config.yaml").read_text() == (a / "config.yaml").read_text()
    assert load_run(out).objective == "helpful"  # evaluate.py and compare.py read it as run A's
    da, db, merged = lora_deltas(a / "adapter"), lora_deltas(b / "adapter"), lora_deltas(out / "adapter")
    assert merged.keys() == da.keys() and len(merged) == 4  # q_proj and v_proj of two layers
    for key in merged:  # cat: exactly q·ΔW_A + (1-q)·ΔW_B, the linear merge of the two models (P-SACPO)
        torch.testing.assert_close(merged[key], q * da[key] + (1 - q) * db[key], rtol=1e-5, atol=1e-6)

    merge(merge_cfg(f"runs=[{a},{b}]", f"q={q}", "combination_type=linear", "eval.after_train=false"),
          tmp_path / "linear")  # fmt: skip
    fa, fb, merged = (
        lora_factors(a / "adapter"),
        lora_factors(b / "adapter"),
        lora_deltas(tmp_path / "linear" / "adapter"),
    )
    for key in merged:  # PEFT's linear: A and B mixed separately, ΔW = (Σ √(w·s)·B)(Σ √(w·s)·A)
        (ba, aa, sa), (bb, ab, sb) = fa[key], fb[key]
        wa, wb = (q * sa) ** 0.5, ((1 - q) * sb) ** 0.5
        torch.testing.assert_close(merged[key], (wa * ba + wb * bb) @ (wa * aa + wb * ab), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(
            merged[key], q * lora_deltas(a / "adapter")[key] + (1 - q) * lora_deltas(b / "adapter")[key]
        )


def test_merge_config_errors_import_no_torch(tmp_path):
    """A wrong run or key fails in a second with one line, before torch is imported."""
    import subprocess
    import sys

    from tests.test_layout import REPO, _modules_after

    a, gone, out_dir = bare_run(tmp_path / "a"), tmp_path / "gone", tmp_path / "m"
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['recipes/merge.py', 'runs=[{a},{gone}]', 'q=0.5', 'hydra.run.dir={out_dir}']\n"
        "try:\n"
        "    runpy.run_path('recipes/merge.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 1, e.code\n"
    )
    assert _modules_after(code) == []
    args = [f"runs=[{a},{a}]", "q=0.5", "combination_type=linaer", f"hydra.run.dir={out_dir}"]
    out = subprocess.run([sys.executable, "recipes/merge.py", *args], capture_output=True, text=True, cwd=REPO,
                         timeout=120)  # fmt: skip
    assert out.returncode == 1 and "safealign: error: unknown combination type" in out.stderr
    assert "Did you mean 'linear'" in out.stderr and "Traceback" not in out.stderr
