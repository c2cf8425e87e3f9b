"""`safealign.cli.compose`: the config a recipe would see, composed in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from safealign.cli import CONF_DIR, compose

REPO = Path(__file__).resolve().parents[1]

CASES = [
    [],
    ["train.beta=0.3"],
    ["objective=bfpo", "objective.b1=2"],
    ["+train.label_smoothing=0.1", "~train.save_total_limit"],
    ["data.path=/x", "eval.data.filters={dedup: false}"],
    ["train=low_memory", "train.beta=0.2", "metric=heldout.harmless.accuracy"],
    ["train.loss_type=[ipo,sigmoid]", "train.report_to=[]"],
    ["model=alpaca-7b", "quant=int8", "peft=none", "model.dtype=float32"],
]


@pytest.mark.parametrize("overrides", CASES)
@pytest.mark.parametrize("name", ["dpo", "pairs"])
def test_compose_equals_hydras_own_compose(name, overrides):
    if name == "pairs":
        overrides = [o for o in overrides if o.split("=")[0].lstrip("+~").split(".")[0] in ("data", "objective")]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        expected = hydra_compose(name, overrides=overrides)
    assert OmegaConf.to_yaml(compose(name, overrides)) == OmegaConf.to_yaml(expected)


def test_compose_returns_a_fresh_copy_each_time():
    first = compose("dpo", ["train.beta=0.3"])
    first.train.beta = 9.0
    assert compose("dpo", ["train.beta=0.3"]).train.beta == 0.3 and compose("dpo").train.beta == 0.1


def test_compose_rejects_what_hydra_rejects():
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'train\.betta'"):
        compose("dpo", ["train.betta=1"])
    with pytest.raises(MissingConfigException, match="objective/multilvel"):
        compose("dpo", ["objective=multilvel"])


def test_compose_inside_a_running_job_keeps_its_name():
    """The evaluation composes inside a recipe; the next job of a sweep must still log to dpo.log."""
    from hydra.core.utils import JobRuntime

    from safealign.cli import compose

    runtime = JobRuntime.instance()
    before = runtime.conf.get("name")
    try:
        runtime.set("name", "dpo")
        compose("dpo", ["objective=harmless", "template=alpaca", "quant=int8"])  # a choice set not cached yet
        assert runtime.get("name") == "dpo"
    finally:
        runtime.set("name", before)


@pytest.mark.parametrize(("args", "code", "expected"), [
    (["--help"], 0, "== Config =="),
    (["train.betta=1"], 1, "Did you mean 'beta'"),
    (["data.path=/nonexistent.jsonl"], 1, "safealign: error:"),
])  # fmt: skip
def test_recipes_exit_fast_with_the_right_code_and_all_output(args, code, expected, tmp_path):
    """`exit_when_done` skips interpreter teardown; the exit code and every line of output survive it."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "SAFEALIGN_FAST_EXIT"}
    out = subprocess.run([sys.executable, "recipes/dpo.py", *args, f"hydra.run.dir={tmp_path}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == code, out.stderr[-2000:]
    assert expected in out.stdout + out.stderr
