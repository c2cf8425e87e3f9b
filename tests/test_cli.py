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
@pytest.mark.integration
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
@pytest.mark.integration
def test_recipes_exit_fast_with_the_right_code_and_all_output(args, code, expected, tmp_path):
    """`exit_when_done` skips interpreter teardown; the exit code and every line of output survive it."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "SAFEALIGN_FAST_EXIT"}
    out = subprocess.run([sys.executable, "recipes/dpo.py", *args, f"hydra.run.dir={tmp_path}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == code, out.stderr[-2000:]
    assert expected in out.stdout + out.stderr


# --- The fast exit never skips another library's work ----------------------------------------------

EXIT_SCRIPT = """
import atexit, os, sys, threading, time
from omegaconf import OmegaConf
from safealign import cli

out, case = sys.argv[1], sys.argv[2]
real_exit = os._exit


def fast_exit(code):  # the fast exit was taken, with this code
    open(os.path.join(out, "fast_exit"), "w").write(str(code))
    real_exit(code)


os._exit = fast_exit


def write(name):
    open(os.path.join(out, name), "w").write("done")


def main():
    atexit.register(write, "atexit")  # registered during the run, as a library (a tracker) does
    if case.startswith("report_to="):
        cli.note_trackers(OmegaConf.create({"train": {"report_to": OmegaConf.from_dotlist([case]).report_to}}))
    if case == "thread":  # a library's background work, e.g. an upload
        threading.Thread(target=lambda: (time.sleep(0.5), write("thread")), name="upload").start()
    if case == "exit3":
        sys.exit(3)


cli.exit_when_done(main)
"""


def fast_exit_env() -> dict[str, str]:
    """The environment of a recipe run by a user: the fast exit on (tests/conftest.py turns it off)."""
    return {k: v for k, v in os.environ.items() if k not in ("SAFEALIGN_FAST_EXIT", "WORLD_SIZE")}


@pytest.mark.parametrize(("case", "code", "fast"), [
    ("plain", 0, True),
    ("report_to=[]", 0, True),
    ("report_to=[tensorboard]", 0, True),
    ("report_to=none", 0, True),
    ("exit3", 3, True),
    ("report_to=[tensorboard,wandb]", 0, False),
    ("report_to=mlflow", 0, False),
    ("thread", 0, False),
])  # fmt: skip
@pytest.mark.integration
def test_fast_exit_runs_every_atexit_handler(case, code, fast, tmp_path):
    """An atexit handler registered during the run always runs; a tracker (report_to) or a busy
    thread keeps the usual exit, which also waits for the thread."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(tmp_path), case], env=fast_exit_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == code, out.stderr[-2000:]
    assert (tmp_path / "atexit").read_text() == "done"
    assert (tmp_path / "fast_exit").exists() == fast
    if fast:
        assert (tmp_path / "fast_exit").read_text() == str(code)
    if case == "thread":
        assert (tmp_path / "thread").read_text() == "done"


def test_orderly_exit_reasons(monkeypatch):
    from safealign import cli

    monkeypatch.setenv("SAFEALIGN_FAST_EXIT", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr("sys.gettrace", lambda: None)
    monkeypatch.setattr("sys.getprofile", lambda: None)
    monkeypatch.setattr(cli, "_trackers", [])
    monkeypatch.setattr("threading.enumerate", lambda: [])
    assert cli.orderly_exit_reason() is None
    for report_to in (["tensorboard"], "none", [], None):
        cli.note_trackers(OmegaConf.create({"train": {"report_to": report_to}}))
    cli.note_trackers(OmegaConf.create({"sweep_dir": "x"}))  # compare.py: no train group
    assert cli._trackers == [] and cli.orderly_exit_reason() is None
    cli.note_trackers(OmegaConf.create({"train": {"report_to": ["all"]}}))
    from transformers.integrations import integration_utils

    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["tensorboard"])
    assert cli.orderly_exit_reason() is None  # "all" is what is installed: here TensorBoard alone
    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["tensorboard", "wandb"])
    assert cli.orderly_exit_reason() == "train.report_to=['wandb']: a tracker finishes its run at exit"
    monkeypatch.setattr(cli, "_trackers", [])
    monkeypatch.setenv("SAFEALIGN_FAST_EXIT", "0")
    assert cli.orderly_exit_reason() == "SAFEALIGN_FAST_EXIT=0"


RECIPE_WRAPPER = """
import atexit, os, runpy, sys
from transformers import TrainerCallback
from transformers.integrations import integration_utils
import safealign.cli as cli

out, tracker = sys.argv[1], sys.argv[2] == "tracker"
real_exit = os._exit


def fast_exit(code):
    open(os.path.join(out, "fast_exit"), "w").write(str(code))
    real_exit(code)


os._exit = fast_exit


def finish():  # what a tracker does at exit: finish and sync its run
    open(os.path.join(out, "atexit"), "w").write("finished")


class FakeTracker(TrainerCallback):  # a report_to integration that works offline: like W&B, it registers at start
    def on_train_begin(self, args, state, control, **kwargs):
        atexit.register(finish)


integration_utils.INTEGRATION_TO_CALLBACK["faketracker"] = FakeTracker
real_run_recipe = cli.run_recipe


def run_recipe(*args, **kwargs):  # without a tracker: a library registers its handler during the run
    result = real_run_recipe(*args, **kwargs)
    if not tracker:
        atexit.register(finish)
    return result


cli.run_recipe = run_recipe
sys.argv = ["recipes/dpo.py", *sys.argv[3:]]
runpy.run_path("recipes/dpo.py", run_name="__main__")
"""


@pytest.mark.integration
@pytest.mark.parametrize("tracker", [False, True])
def test_recipe_fast_exit_keeps_atexit_handlers_and_trackers(tracker, tmp_path):
    """A training run with an atexit handler registered during it: the handler runs, with the fast exit
    (no tracker) or the usual one (train.report_to names a tracker, here a fake offline one)."""
    import subprocess
    import sys

    report_to = "[faketracker]" if tracker else "[]"
    args = [str(tmp_path), "tracker" if tracker else "plain", "train.max_steps=1", f"train.report_to={report_to}",
            "eval.after_train=false", "data.test_split=null", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    out = subprocess.run([sys.executable, "-c", RECIPE_WRAPPER, *args], cwd=REPO, env=fast_exit_env(),
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "run" / "status.json").is_file()
    assert (tmp_path / "atexit").read_text() == "finished"
    assert (tmp_path / "fast_exit").exists() == (not tracker)
