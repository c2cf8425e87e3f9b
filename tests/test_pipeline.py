"""recipes/pipeline.py: the stages a pipeline config plans, its refusals, and each shipped pipeline end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safealign import io
from safealign.errors import ConfigError, PipelineError
from safealign.pipeline import Unit, check, decide, plan

from .runs import signal_mid_training

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "data=sample", "train.max_steps=2", "train.report_to=[]"]


def test_plan_resolves_earlier_stages_and_sweeps(tmp_path):
    cfg, passed, root = check(["pipeline=sacpo", "pipeline.q=[0,1]", *TINY, f"hydra.run.dir={tmp_path}"])
    stages = plan(cfg, passed, root)
    helpful, safety, front, compare = stages
    assert helpful[0].path == tmp_path / "helpful" and "experiment=sacpo_helpful" in helpful[0].argv
    assert f"model.adapter={tmp_path / 'helpful'}" in safety[0].argv and "train.max_steps=2" in safety[0].argv
    assert [u.path.name for u in front] == ["q_0", "q_1"]
    assert f"runs=[{tmp_path / 'helpful'},{tmp_path / 'safety'}]" in front[0].argv
    assert not any(a.startswith(("model=", "train.")) for a in front[0].argv)  # train.* means nothing to merge
    assert compare[0].runs == [tmp_path / "helpful", tmp_path / "safety", *(u.path for u in front)]
    assert compare[0].argv == [f"sweep_dir={tmp_path / 'compare'}"]


def test_each_unit_knows_the_stages_it_reads(tmp_path):
    cfg, passed, root = check(["pipeline=sacpo", "pipeline.q=[0,1]", *TINY, f"hydra.run.dir={tmp_path}"])
    helpful, safety, front, compare = plan(cfg, passed, root)
    assert helpful[0].needs == set() and safety[0].needs == {"helpful"}
    assert all(u.needs == {"helpful", "safety"} for u in front)
    assert compare[0].needs == {"helpful", "safety", "front"}


def test_a_new_sweep_value_runs_alone_and_the_comparison_follows(tmp_path):
    """Adding q=0 to a finished front runs q=0 only: its finished siblings do not read it, and the
    comparison, derived from the runs, compares again instead of being refused."""
    cfg, passed, root = check(["pipeline=sacpo", "pipeline.q=[0,1]", *TINY, f"hydra.run.dir={tmp_path}"])
    _, _, front, compare = plan(cfg, passed, root)
    for unit in (*front, *compare):
        io.write_json(unit.path / "stage.json", {"recipe": unit.recipe, "argv": unit.argv, "status": "done"})
    assert decide(front[1], overwrite=False, ran={"front"} & front[1].needs) == "skip"
    assert decide(compare[0], overwrite=False, ran={"front"} & compare[0].needs) == "run"
    with pytest.raises(PipelineError, match=r"stage front q_1 .*helpful, which it reads, ran again"):
        decide(front[1], overwrite=False, ran={"helpful"} & front[1].needs)


def test_a_changed_stage_is_refused_naming_it_and_the_change(tmp_path):
    unit = Unit("margin", "dpo", tmp_path, ["objective=harmless", "train.max_steps=3"])
    assert decide(unit, overwrite=False) == "run"
    io.write_json(tmp_path / "stage.json", {"recipe": "dpo", "argv": ["objective=harmless", "train.max_steps=2"],
                                           "status": "done"})  # fmt: skip
    with pytest.raises(PipelineError, match=r"stage margin .*was train.max_steps=2; now train.max_steps=3"):
        decide(unit, overwrite=False)
    assert decide(unit, overwrite=True) == "overwrite"
    unit.argv = ["objective=harmless", "train.max_steps=2"]
    assert decide(unit, overwrite=False) == "skip"
    io.write_json(tmp_path / "stage.json", {"recipe": "dpo", "argv": unit.argv, "status": "interrupted"})
    assert decide(unit, overwrite=False) == "resume"


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="pipeline: missing"):
        check([])
    with pytest.raises(ConfigError, match="Did you mean 'modpo'"):
        check(["pipeline=modp"])
    with pytest.raises(ConfigError, match=r"pipeline.ww.*Did you mean 'w'"):
        check(["pipeline=modpo", "pipeline.ww=[1]"])
    with pytest.raises(ConfigError, match=r"train.betta.*Did you mean 'beta'"):
        check(["pipeline=modpo", "train.betta=1"])
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check(["pipeline=modpo", f"hydra.run.dir={tmp_path / 'file' / 'x'}"])


@pytest.mark.parametrize("args", [["--help"], ["pipeline=sacpoo"], ["pipeline=modpo", "train.max_stepz=2"]])
@pytest.mark.integration
def test_help_and_typos_answer_at_once_without_torch(args):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['recipes/pipeline.py', *{args!r}]\n"
        "try:\n"
        "    runpy.run_path('recipes/pipeline.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('EXIT', e.code)\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'trl') if m in sys.modules])\n"
    )
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert time.monotonic() - start < 15  # ~1 s of CPU, as dpo.py's check; margin for load
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    if args != ["--help"]:
        assert "EXIT 1" in out.stdout and "safealign: error:" in out.stderr and "Did you mean" in out.stderr


def pipeline(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "recipes/pipeline.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1800)  # fmt: skip


def assert_done_then_skipped(args: list[str], root: Path, stages: int) -> subprocess.CompletedProcess:
    out = pipeline(*args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in root.rglob("stage.json")]
    assert len(records) == stages and all(r["status"] == "done" for r in records)
    start = time.monotonic()
    again = pipeline(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipped (done)") == stages and "[pipeline] stage " not in again.stdout
    assert time.monotonic() - start < 20  # about 1.5 s; no stage's process starts
    return out


@pytest.mark.integration
def test_modpo_pipeline_end_to_end_skip_and_refusal(tmp_path):
    args = ["pipeline=modpo", "pipeline.w=[0.5]", *TINY, f"hydra.run.dir={tmp_path}"]
    out = assert_done_then_skipped(args, tmp_path, stages=3)
    assert "margin" in out.stdout and "modpo w_0.5" in out.stdout and "comparison:" in out.stdout
    assert (tmp_path / "compare" / "comparison.csv").is_file()
    assert io.read_json(tmp_path / "modpo" / "w_0.5" / "eval.json")["dimensions"]
    changed = pipeline(*[a.replace("max_steps=2", "max_steps=3") for a in args])
    assert changed.returncode == 1 and "stage margin" in changed.stderr and "train.max_steps=3" in changed.stderr


@pytest.mark.integration
def test_safedpo_pipeline_resumes_a_stage_killed_mid_training(tmp_path):
    args = ["pipeline=safedpo", *TINY, "train.max_steps=4", "train.logging_steps=1", f"hydra.run.dir={tmp_path}"]
    code, output = signal_mid_training([sys.executable, "recipes/pipeline.py", *args], REPO, signal.SIGTERM)
    assert code == 1, output[-3000:]
    assert "failed (exit" in output and "not run" in output  # the table, with the stopped stage
    assert json.loads((tmp_path / "sft" / "status.json").read_text())["status"] == "interrupted"
    assert list((tmp_path / "sft").glob("checkpoints/checkpoint-*"))
    out = pipeline(*args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming from" in out.stdout + out.stderr
    assert json.loads((tmp_path / "safedpo" / "status.json").read_text())["status"] == "done"
    assert pipeline(*args).stdout.count("skipped (done)") == 2


@pytest.mark.integration
def test_sacpo_pipeline_end_to_end(tmp_path):
    args = ["pipeline=sacpo", "pipeline.q=[0.5]", *TINY, f"hydra.run.dir={tmp_path}"]
    assert_done_then_skipped(args, tmp_path, stages=4)
    assert (tmp_path / "compare" / "comparison.csv").is_file()


@pytest.mark.integration
def test_objectives_pipeline_end_to_end(tmp_path):
    args = ["pipeline=objectives", "pipeline.seeds=[0]", *TINY, f"hydra.run.dir={tmp_path}"]
    assert_done_then_skipped(args, tmp_path, stages=7)
    import csv

    with open(tmp_path / "compare" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["objective"] == "sft (multilevel)" and float(rows[0]["harmless_diff"]) == 0.0  # the baseline
    assert len(rows) == 6 and all(r["harmless_accuracy"] for r in rows)
    assert json.loads((tmp_path / "sft" / "eval.json").read_text())["measure"] == "likelihood"
