"""recipes/merge.py: PEFT's add_weighted_adapter over finished runs, checked before anything loads,
and the merged LoRA update equal to the weighted combination computed by hand."""

from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path

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


@pytest.mark.integration
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


@pytest.mark.integration
def test_merge_refuses_runs_it_cannot_merge(tmp_path):
    a = bare_run(tmp_path / "a")
    with pytest.raises(ConfigError, match="runs: expected a list of two or more"):
        parse_merge(merge_cfg(f"runs=[{a}]", "q=0.5"))
    other = bare_run(tmp_path / "other", "model.tiny_vocab_size=999")
    with pytest.raises(ConfigError, match=r"runs\[1\]=.*its chain starts from another model than runs\[0\]'s "
                                          r"\(model.name_or_path=tiny \(.*tiny_vocab_size=999\) vs "
                                          r"model.name_or_path=tiny .*model.tiny_vocab_size differs") as err:  # fmt: skip  # noqa: E501
        parse_merge(merge_cfg(f"runs=[{a},{other}]", "q=0.5"))
    assert "\n" not in str(err.value)
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


@pytest.mark.integration
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


# ----------------------------------------------------------------------------------------------
# the output directory: claimed as training claims its run directory, never an input run
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_merge(monkeypatch):
    """jobs.merge with the model work replaced: records the calls, loads nothing."""
    from safealign.jobs import merge as job
    from safealign.rundir import RunDir

    calls = []
    monkeypatch.setattr(job, "merge", lambda s, run_dir: calls.append(("merge", run_dir.path)) or {"runs": s.runs})
    monkeypatch.setattr(RunDir, "write_hydra_files", lambda self, cfg: calls.append(("hydra", self.path)))
    return calls


def two_runs(tmp_path):
    return bare_run(tmp_path / "a"), bare_run(tmp_path / "b")


@pytest.mark.parametrize("state", ["interrupted", "failed"])
@pytest.mark.integration
def test_merge_refuses_an_unfinished_run_with_checkpoints_without_overwrite(tmp_path, no_merge, state):
    from safealign.errors import RunDirError
    from safealign.jobs.merge import run as merge
    from tests.test_rundir import snapshot, unfinished_run

    a, b = two_runs(tmp_path)
    out = unfinished_run(tmp_path / "out", state)
    (out / "metrics.json").write_text("{}")
    before = snapshot(out)
    with pytest.raises(RunDirError, match=r"out holds an unfinished run with checkpoint checkpoint-2, which this job "
                                          r"cannot resume; choose another hydra.run.dir, or set overwrite=true to "
                                          r"replace it"):  # fmt: skip
        merge(merge_cfg(f"runs=[{a},{b}]", "q=0.5", "eval.after_train=false"), out)
    assert snapshot(out) == before and no_merge == []
    merge(merge_cfg(f"runs=[{a},{b}]", "q=0.5", "eval.after_train=false", "overwrite=true"), out)
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists()
    assert json.loads((out / "status.json").read_text())["status"] == "done"
    assert no_merge == [("hydra", out), ("merge", out)]  # .hydra/ written once the directory is claimed


@pytest.mark.integration
def test_merge_refuses_a_finished_run_and_a_live_job_naming_its_own_option(tmp_path, no_merge):
    import socket
    import subprocess
    import sys

    from safealign.errors import RunDirError
    from safealign.jobs.merge import run as merge
    from tests.test_rundir import finished_run, snapshot, write_status

    a, b = two_runs(tmp_path)
    out = finished_run(tmp_path / "out")
    before = snapshot(out)
    with pytest.raises(RunDirError, match=r"holds a finished run; choose another hydra.run.dir, or set overwrite=true "
                                          r"to replace it") as err:  # fmt: skip
        merge(merge_cfg(f"runs=[{a},{b}]", "q=0.5"), out)
    assert "train.overwrite" not in str(err.value)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_status(out, status="running", pid=sleeper.pid, host=socket.gethostname())
        before = snapshot(out)
        with pytest.raises(RunDirError, match=rf"in use by a running job \(pid {sleeper.pid}\)"):
            merge(merge_cfg(f"runs=[{a},{b}]", "q=0.5", "overwrite=true"), out)
        assert snapshot(out) == before and no_merge == []
    finally:
        sleeper.kill()
        sleeper.wait()
    # the directory of a job that is gone is claimed as training claims it: replaced with overwrite=true
    merge(merge_cfg(f"runs=[{a},{b}]", "q=0.5", "overwrite=true", "eval.after_train=false"), out)
    assert no_merge == [("hydra", out), ("merge", out)]


def test_merge_replaces_a_failed_merge_without_checkpoints(tmp_path, no_merge):
    from safealign.jobs.merge import run as merge
    from tests.test_rundir import write_status

    a, b = two_runs(tmp_path)
    out = tmp_path / "out"
    write_status(out, status="failed", error="OSError: disk full")
    (out / "eval.json").write_text("{}")  # a previous merge's: would be read as this one's
    merge(merge_cfg(f"runs=[{a},{b}]", "q=0.5", "eval.after_train=false"), out)
    assert not (out / "eval.json").exists() and no_merge == [("hydra", out), ("merge", out)]


@pytest.mark.parametrize("where", ["is", "inside", "symlink", "holds"])
def test_merge_never_writes_into_a_run_it_reads(tmp_path, no_merge, where):
    from safealign.errors import RunDirError
    from safealign.jobs.merge import run as merge
    from tests.test_rundir import snapshot

    root = tmp_path / "out" if where == "holds" else tmp_path
    a, b = two_runs(root)
    out = {"is": a, "inside": a / "merged", "symlink": tmp_path / "link", "holds": root}[where]
    if where == "symlink":
        out.symlink_to(a)
    before = snapshot(tmp_path)
    word = {"is": "is", "inside": "lies inside", "symlink": "is", "holds": "holds"}[where]
    expected = rf"^hydra.run.dir={out} {word} runs\[0\]={a}: the merge would replace the runs it reads; choose "
    with pytest.raises(RunDirError, match=expected + r"another hydra.run.dir, outside every run$"):
        merge(merge_cfg(f"runs=[{a},{b}]", "q=0.5", "overwrite=true"), out)
    assert snapshot(tmp_path) == before and no_merge == []


def test_merge_refuses_an_output_directory_it_cannot_write(tmp_path, no_merge):
    from safealign.errors import RunDirError
    from safealign.jobs.merge import run as merge

    a, b = two_runs(tmp_path)
    (tmp_path / "file").write_text("a regular file")
    with pytest.raises(RunDirError, match=r"file/out: cannot write into it \(Not a directory\); choose another "
                                          r"hydra.run.dir"):  # fmt: skip
        merge(merge_cfg(f"runs=[{a},{b}]", "q=0.5"), tmp_path / "file" / "out")
    assert no_merge == []


@pytest.mark.integration
def test_a_refused_merge_leaves_the_directory_and_its_hydra_record_as_they_were(tmp_path):
    """Hydra writes no .hydra/ of its own (hydra.output_subdir: null): a refused merge cannot relabel the
    finished run it was refused, nor a run it reads (compare.py groups runs by .hydra/overrides.yaml)."""
    import subprocess
    import sys

    from tests.test_layout import REPO
    from tests.test_rundir import finished_run, snapshot

    a, b = two_runs(tmp_path)
    (a / ".hydra").mkdir()
    (a / ".hydra" / "overrides.yaml").write_text("- objective=harmless\n")
    out = finished_run(tmp_path / "out")
    for target, args, message in (
        (out, [], f"{out} holds a finished run; choose another hydra.run.dir, or set overwrite=true to replace it"),
        (a, ["overwrite=true"], f"hydra.run.dir={a} is runs[0]={a}: the merge would replace the runs it reads; "
                                "choose another hydra.run.dir, outside every run"),
    ):  # fmt: skip
        before = snapshot(target)
        cmd = [sys.executable, "recipes/merge.py", f"runs=[{a},{b}]", "q=0.5", *args, f"hydra.run.dir={target}"]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert done.returncode == 1, done.stderr[-2000:]
        assert done.stderr.strip().splitlines() == [f"safealign: error: {message}"]
        after = snapshot(target)
        assert after.pop("merge.log", b"") == b""  # Hydra's log file: opened for appending, nothing written
        assert after == before


@pytest.mark.integration
def test_the_merge_recipe_records_its_overrides_once_it_has_claimed_the_directory(tmp_path):
    import subprocess
    import sys

    import yaml

    from tests.test_layout import REPO

    a, b = fake_run(tmp_path / "a", seed=1), fake_run(tmp_path / "b", seed=2)
    out = tmp_path / "merged"
    args = [f"runs=[{a},{b}]", "q=0.25", "eval.after_train=false", f"hydra.run.dir={out}"]
    done = subprocess.run([sys.executable, "recipes/merge.py", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text()) == args[:-1]  # hydra.* not among them
    assert (out / ".hydra" / "config.yaml").is_file() and (out / ".hydra" / "hydra.yaml").is_file()
    assert json.loads((out / "status.json").read_text())["status"] == "done"


@pytest.mark.integration
def test_a_merge_sweep_marks_runs_failed_by_their_settings_with_their_overrides(tmp_path):
    """As a training sweep does: the summary and compare.py list such a run with its overrides."""
    import subprocess
    import sys

    import yaml

    from tests.test_layout import REPO

    a, b = two_runs(tmp_path)
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "recipes/merge.py", "-m", f"runs=[{a},{b}]", "q=1.5,2", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    for run, q in (("0", "1.5"), ("1", "2")):
        status = json.loads((sweep / run / "status.json").read_text())
        assert status["status"] == "failed" and f"q: expected a number in [0, 1] (weights [q, 1-q]), got {q}" in \
            status["error"]  # fmt: skip
        assert f"q={q}" in yaml.safe_load((sweep / run / ".hydra" / "overrides.yaml").read_text())


@pytest.mark.integration
def test_the_merge_recipe_refuses_a_directory_it_cannot_write_in_one_line(tmp_path):
    """A directory even root cannot create files in (/proc/1): one line, not Hydra's traceback from opening
    merge.log there (conf/merge.yaml: the log file is opened on its first line, after the check)."""
    import re
    import subprocess
    import sys

    from tests.test_layout import REPO

    target = Path("/proc/1")
    try:
        (target / "probe").touch()
        pytest.skip("/proc/1 is writable here")
    except OSError:
        pass
    a, b = two_runs(tmp_path)
    cmd = [sys.executable, "recipes/merge.py", f"runs=[{a},{b}]", "q=0.5", f"hydra.run.dir={target}"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 1
    assert re.fullmatch(r"safealign: error: /proc/1: cannot write into it \([^)]+\); choose another hydra.run.dir\n",
                        done.stderr), done.stderr[-2000:]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# P-SACPO on chained stages: stage 2 continues stage 1, both are deltas from one base model
# ----------------------------------------------------------------------------------------------


def chained_bare_run(path, start, *overrides: str, ref: bool = True):
    """A finished run that continued `start` (model.adapter), holding TRL's copy of it in adapter/ref/."""
    run = bare_run(path, f"model.adapter={start}", *overrides)
    if ref:
        (run / "adapter" / "ref").mkdir()
        (run / "adapter" / "ref" / "adapter_config.json").write_text(json.dumps({"r": 4}))
    return run


@pytest.mark.integration
def test_a_stage_merges_with_the_stage_that_continued_it(tmp_path):
    """The merge's reference is the start of the chains: the base model for stage 1 from the base, and
    stage 1's own reference (the SFT run it continued, as stage 1 holds it) when stage 1 continued one."""
    from safealign.settings.runs import BASE

    s1 = bare_run(tmp_path / "s1")
    s2 = chained_bare_run(tmp_path / "s2", s1)
    s = parse_merge(merge_cfg(f"runs=[{s1},{s2}]", "q=0.5"))
    assert s.chains == [[str(s1), BASE], [str(s2), str(s1), BASE]] and s.start is None and s.reference is None
    assert parse_merge(merge_cfg(f"runs=[{s2},{s1}]", "q=0.5")).start is None  # in either order

    sft = bare_run(tmp_path / "sft")
    t1 = chained_bare_run(tmp_path / "t1", sft)
    t2 = chained_bare_run(tmp_path / "t2", t1 / "adapter")  # model.adapter may name the adapter directory
    s = parse_merge(merge_cfg(f"runs=[{t1},{t2}]", "q=0.5"))
    assert s.chains[1] == [str(t2), str(t1), str(sft), BASE]
    assert s.start == str(sft) and s.reference == t1 / "adapter" / "ref"  # the copy stage 1 trained against
    shutil_rm = __import__("shutil").rmtree
    shutil_rm(t1 / "adapter" / "ref")
    assert parse_merge(merge_cfg(f"runs=[{t1},{t2}]", "q=0.5")).reference == sft / "adapter"  # then the run itself
    # a run from the SFT model and a run from the base model: they share only the base model
    assert parse_merge(merge_cfg(f"runs=[{t1},{s1}]", "q=0.5")).start is None


def test_chains_from_different_models_are_refused_naming_both_starts(tmp_path):
    s1 = bare_run(tmp_path / "s1")
    other = bare_run(tmp_path / "other", "model.tiny_vocab_size=999")
    s2 = chained_bare_run(tmp_path / "s2", other, "model.tiny_vocab_size=999")
    with pytest.raises(ConfigError, match=rf"^runs\[1\]={s2}: its chain starts from another model than runs\[0\]'s "
                                          rf"\(model.name_or_path=tiny \(.*tiny_vocab_size=999\), via {other} vs "
                                          r"model.name_or_path=tiny \(.*tiny_vocab_size=2048\); model.tiny_vocab_size "
                                          r"differs\); merged runs must all be trained, directly or through "
                                          r"model.adapter, from the same base model$"):  # fmt: skip
        parse_merge(merge_cfg(f"runs=[{s1},{s2}]", "q=0.5"))


@pytest.mark.integration
def test_p_sacpo_merges_stage_1_with_stage_2_continued_from_it(tmp_path):
    """SACPO's two stages (trained, a few steps): q=1 gives stage 1's ΔW and its eval.json numbers (both against
    the base model, the start of the chain), q=0 gives stage 2's ΔW (Δ1+Δ2), and q between Δ1 + (1-q)·Δ2."""
    import torch
    import yaml

    from safealign.jobs.dpo import run as dpo
    from safealign.jobs.merge import run as merge

    few = ["model=tiny", "quant=none", "data=sample", "train.gradient_accumulation_steps=1", "train.max_length=256",
           "train.gradient_checkpointing=false", "train.max_steps=2", "train.per_device_train_batch_size=4",
           "train.report_to=[]", "train.learning_rate=5e-3"]  # fmt: skip
    ev = ["eval.max_pairs=24", "eval.bootstrap=20"]
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"
    dpo(compose("dpo", ["objective=helpful", *few, *ev]), s1)
    dpo(compose("dpo", ["objective=harmless", f"model.adapter={s1}", *few, "eval.after_train=false"]), s2)
    d1, d12 = lora_deltas(s1 / "adapter"), lora_deltas(s2 / "adapter")
    for q in (1, 0, 0.25):
        out = tmp_path / f"q{q}"
        after = ev if q == 1 else ["eval.after_train=false"]
        record = merge(merge_cfg(f"runs=[{s1},{s2}]", f"q={q}", *after), out)
        assert record["reference"] is None and record["chains"][1][1] == str(s1)
        merged = lora_deltas(out / "adapter")
        for key in merged:  # cat: q·Δ1 + (1-q)·(Δ1+Δ2)
            torch.testing.assert_close(merged[key], q * d1[key] + (1 - q) * d12[key], rtol=1e-5, atol=1e-6)
        assert yaml.safe_load((out / "config.yaml").read_text())["model"]["adapter"] is None
        assert not (out / "adapter" / "ref").exists()
    for key in d1:
        torch.testing.assert_close(lora_deltas(tmp_path / "q1" / "adapter")[key], d1[key], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(lora_deltas(tmp_path / "q0" / "adapter")[key], d12[key], rtol=1e-5, atol=1e-6)
    stage1 = json.loads((s1 / "eval.json").read_text())["dimensions"]
    at_one = json.loads((tmp_path / "q1" / "eval.json").read_text())["dimensions"]
    assert stage1.keys() == at_one.keys() and stage1
    for name, d in stage1.items():
        assert at_one[name]["accuracy"] == d["accuracy"] and at_one[name]["pairs"] == d["pairs"], name
        assert at_one[name]["reference_accuracy"] == d["reference_accuracy"], name
        assert at_one[name]["margin"] == pytest.approx(d["margin"], abs=1e-4), name
