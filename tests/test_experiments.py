"""Presets (`experiment=NAME`): each composes, sets hyperparameters but not the model, and trains a few
steps on the embedded default."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from safealign.cli import CONF_DIR, compose
from safealign.errors import ConfigError
from safealign.settings import parse_train
from tests.runs import fake_run

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
OWN = ("qlora_7b", "safedpo", "bfpo", "modpo")
SHORT = ["model=tiny", "data=sample", "train.max_steps=2", "train.max_length=128",
         "train.per_device_train_batch_size=2", "train.gradient_accumulation_steps=1", "train.report_to=[]",
         "eval.after_train=false", "data.test_split=null"]  # fmt: skip


def test_presets_are_shipped():
    assert set(OWN) <= set(PRESETS)


@pytest.mark.parametrize("name", OWN)
@pytest.mark.integration
def test_preset_sets_hyperparameters_not_the_model(name):
    base = compose("dpo", ["model=alpaca-7b"])
    cfg = compose("dpo", [f"experiment={name}", "model=alpaca-7b"])
    assert cfg.model == base.model
    assert cfg.train != base.train
    assert cfg.train.num_train_epochs >= 1 and cfg.train.max_length >= 512


@pytest.mark.integration
def test_preset_values():
    qlora = compose("dpo", ["experiment=qlora_7b"])
    assert qlora.train.learning_rate <= 1e-4 and qlora.train.lr_scheduler_type == "cosine"
    assert 0 < qlora.train.warmup_steps < 1 and qlora.train.num_train_epochs == 1
    assert qlora.train.gradient_checkpointing and len(qlora.peft.target_modules) == 7
    safedpo = compose("dpo", ["experiment=safedpo"])
    assert safedpo.data.name == "PKU-Alignment/PKU-SafeRLHF-30K" and safedpo.objective.delta == 10
    bfpo = compose("dpo", ["experiment=bfpo"])
    assert (bfpo.train.beta, bfpo.train.learning_rate, bfpo.train.num_train_epochs, bfpo.train.max_length) == (
        0.01, 5e-7, 1, 1024)  # fmt: skip
    modpo = compose("dpo", ["experiment=modpo"])
    assert (modpo.peft.r, modpo.peft.alpha, modpo.train.learning_rate, modpo.train.max_length) == (64, 1, 5e-4, 512)
    assert modpo.objective.w == 0.5 and modpo.data.name == "PKU-Alignment/PKU-SafeRLHF-10K"


def test_command_line_groups_win_over_the_preset():
    cfg = compose("dpo", ["experiment=modpo", "objective=harmless", "data=sample", "train.learning_rate=1e-5"])
    assert cfg.objective.name == "harmless" and cfg.data.name is None and cfg.train.learning_rate == 1e-5
    assert cfg.peft.r == 64  # the rest of the preset stays: MODPO's stage 1 (the margin model)


@pytest.mark.integration
def test_preset_cfg_job_from_the_command_line():
    out = subprocess.run([sys.executable, "recipes/dpo.py", "experiment=bfpo", "model=alpaca-7b", "--cfg", "job"],
                         cwd=CONF_DIR.parent, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "learning_rate: 5.0e-07" in out.stdout and "PKU-Alignment/alpaca-7b-reproduced" in out.stdout


@pytest.mark.integration
@pytest.mark.parametrize("name", OWN)
def test_preset_trains_a_few_steps(tmp_path, name):
    from safealign.jobs.dpo import run as train

    extra = []
    if name == "modpo":
        # fewer pairs (both responses safe) for the margin run to score before training
        extra = [f"objective.margin_run={fake_run(tmp_path / 'margin', seed=5)}", "data.filters.max_severity=0"]
    cfg = compose("dpo", [f"experiment={name}", *SHORT, *extra])
    parse_train(cfg)
    metrics = train(cfg, tmp_path / "run", callbacks=[])
    assert metrics["global_step"] == 2


# --- What a preset requires: the run it continues (sacpo_safety), its objective (bfpo) ------------------

SACPO_STAGE_1 = (r"^model\.adapter: missing; experiment=sacpo_safety continues a previous run: pass "
                 r"model\.adapter=<the sacpo_helpful run dir> \(after a full fine-tune, peft=none: "
                 r"model\.name_or_path=<the sacpo_helpful run dir>/adapter\)$")  # fmt: skip


@pytest.mark.parametrize("more", [[], ["model.adapter=null"], ["model=alpaca-7b"], ["peft=none", "quant=none"]])
def test_sacpo_safety_requires_the_stage_1_run(more):
    """Stage 2 from the base model is a plain safety DPO run, not SACPO: refused, naming what to pass."""
    with pytest.raises(ConfigError, match=SACPO_STAGE_1):
        parse_train(compose("dpo", ["experiment=sacpo_safety", *more]))


@pytest.mark.integration
def test_sacpo_safety_takes_the_stage_1_run(tmp_path):
    stage_1 = fake_run(tmp_path / "helpful", ["experiment=sacpo_helpful"])
    assert parse_train(compose("dpo", ["experiment=sacpo_safety", f"model.adapter={stage_1}"])).model.adapter
    full = tmp_path / "full" / "adapter"  # a fully fine-tuned stage 1 continues through model.name_or_path
    full.mkdir(parents=True)
    settings = parse_train(compose("dpo", ["experiment=sacpo_safety", "peft=none", "quant=none",
                                           f"model.name_or_path={full}"]))  # fmt: skip
    assert settings.model.name_or_path == str(full) and settings.model.adapter is None


@pytest.mark.parametrize("objective", ["helpful", "harmless", "multilevel", "safedpo"])
@pytest.mark.integration
def test_bfpo_preset_refuses_another_objective(objective):
    """experiment=bfpo objective=helpful trained DPO with BFPO's β 0.01 and lr 5e-7, silently."""
    with pytest.raises(ConfigError, match=rf"^experiment=bfpo is a preset for objective=bfpo \(its train values are "
                                          rf"that method's\), but objective={objective} was chosen: drop "
                                          rf"objective={objective}, or drop experiment=bfpo"):  # fmt: skip
        parse_train(compose("dpo", ["experiment=bfpo", f"objective={objective}"]))
    assert parse_train(compose("dpo", ["experiment=bfpo", "objective=bfpo"])).objective == "bfpo"


@pytest.mark.integration
def test_hyperparameter_presets_take_any_objective():
    """MODPO's stage 1 is experiment=modpo objective=harmless; qlora_7b and safedpo set hyperparameters only."""
    assert parse_train(compose("dpo", ["experiment=modpo", "objective=harmless", "data=sample"])).objective == (
        "harmless")  # fmt: skip
    for name in ("qlora_7b", "safedpo", "sacpo_helpful"):
        assert parse_train(compose("dpo", [f"experiment={name}", "objective=multilevel", "data=sample"]))


def test_preset_keys_are_checked():
    with pytest.raises(ConfigError, match=r"^preset\.objectiv: unknown config key\. Valid keys of preset: name, "
                                          r"objective, adapter, judge\. Did you mean 'objective'"):  # fmt: skip
        parse_train(compose("dpo", ["experiment=bfpo", "+preset.objectiv=bfpo"]))


@pytest.mark.parametrize(("args", "expected"), [
    (["experiment=sacpo_safety"], SACPO_STAGE_1[1:-1]),
    (["experiment=bfpo", "objective=helpful"], r"experiment=bfpo is a preset for objective=bfpo .* objective=helpful"),
])  # fmt: skip
@pytest.mark.integration
def test_preset_errors_from_the_command_line(args, expected, tmp_path):
    out = subprocess.run([sys.executable, "recipes/dpo.py", *args, f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=CONF_DIR.parent, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"safealign: error: {expected}.*", lines[0]), lines


@pytest.mark.parametrize("overrides", [["experiment=bfpo", "objective=helpful"], ["experiment=sacpo_safety"]])
@pytest.mark.integration
def test_a_run_saved_before_the_preset_checks_still_reads(tmp_path, overrides):
    """The evaluation re-checks a run's saved config, filling in keys its safealign lacked: not `preset`,
    which would refuse a run trained (from the base model, or with another objective) before it existed."""
    import yaml

    from safealign import io
    from safealign.evaluation.report import saved_settings
    from safealign.rundir import RunDir

    run = fake_run(tmp_path / "old", overrides, adapter=False)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert "preset" in saved  # what a run trained today records
    del saved["preset"]
    saved["model"]["adapter"] = None
    io.write_text(run / "config.yaml", yaml.safe_dump(saved))
    io.write_text(run / ".hydra" / "overrides.yaml", yaml.safe_dump(["model=tiny", "quant=none", *overrides]))
    settings = saved_settings(RunDir(run))
    assert settings.model.adapter is None and settings.objective == saved["objective"]["name"]
