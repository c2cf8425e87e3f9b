"""The run directory rules (safealign.rundir), without training: finished work is never lost,
an unfinished run is resumed with the config it was started with, and a live job is never disturbed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from safealign.checkpoints import last_checkpoint
from safealign.errors import RunDirError, SafealignError, SweepError
from safealign.rundir import RunDir, sweep_runs

CONFIG = {"objective": {"name": "harmless"}, "train": {"beta": 0.1, "learning_rate": 5e-4, "resume": "auto",
                                                       "overwrite": False}, "eval": {"max_pairs": 512}}  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its content (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def write_status(run: Path, **status) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / RunDir.STATUS).write_text(json.dumps(status))


def add_checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    checkpoint = run / RunDir.CHECKPOINTS / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    if complete:
        (checkpoint / "trainer_state.json").write_text("{}")
    return checkpoint


def finished_run(run: Path) -> Path:
    """A finished run with every output a training run writes, and its config."""
    write_status(run, status="done")
    (run / RunDir.CONFIG).write_text(yaml.safe_dump(CONFIG))
    outputs = (RunDir.METRICS, RunDir.EVAL, RunDir.EVAL_PAIRS, RunDir.PAIR_REPORT, RunDir.FINGERPRINT, RunDir.TRACKERS)
    for name in (*outputs, RunDir.VERSIONS):
        (run / name).write_text("{}")
    (run / RunDir.GENERATIONS).write_text("{}\n")
    (run / RunDir.ADAPTER).mkdir()
    (run / RunDir.ADAPTER / "adapter_model.safetensors").write_bytes(b"weights")
    add_checkpoint(run, 3)
    (run / ".hydra").mkdir()
    (run / RunDir.HYDRA_OVERRIDES).write_text(yaml.safe_dump(["objective=harmless"]))
    (run / "dpo.log").write_text("log")
    return run


def unfinished_run(run: Path, state: str = "interrupted") -> Path:
    write_status(run, status=state)
    (run / RunDir.CONFIG).write_text(yaml.safe_dump(CONFIG))
    add_checkpoint(run, 2)
    return run


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------------------------
# claim
# ----------------------------------------------------------------------------------------------


def test_a_fresh_directory_starts_fresh(tmp_path):
    assert RunDir(tmp_path / "missing").claim(CONFIG, "auto", False) == (None, False)
    assert RunDir(tmp_path).claim(CONFIG, "auto", False) == (None, False)
    assert RunDir(tmp_path).claim(CONFIG, None, True) == (None, False)  # nothing there to clear
    assert list(tmp_path.iterdir()) == []  # claiming writes nothing


def test_a_finished_run_is_refused_without_overwrite(tmp_path):
    run = finished_run(tmp_path / "run")
    before = snapshot(run)
    for resume in ("auto", None):
        with pytest.raises(RunDirError, match=r"holds a finished run; .*train.overwrite=true to replace it"):
            RunDir(run).claim(CONFIG, resume, False)
    # An explicit checkpoint does not bypass the guard.
    with pytest.raises(RunDirError, match="holds a finished run"):
        RunDir(run).claim(CONFIG, str(run / "checkpoints" / "checkpoint-3"), False)
    assert snapshot(run) == before


def test_overwrite_asks_for_a_clear_and_removes_nothing_itself(tmp_path):
    run = finished_run(tmp_path / "run")
    before = snapshot(run)
    assert RunDir(run).claim(CONFIG, "auto", True) == (None, True)
    assert RunDir(run).claim(CONFIG, "auto", True, main=False) == (None, False)  # only rank 0 clears
    assert snapshot(run) == before  # the job clears only once its config and data have passed their checks


def test_an_unfinished_run_with_a_checkpoint_is_resumed(tmp_path):
    run = unfinished_run(tmp_path / "run")
    add_checkpoint(run, 10)
    add_checkpoint(run, 15, complete=False)  # half-written: skipped
    before = snapshot(run)
    assert RunDir(run).claim(CONFIG, "auto", False) == (run / "checkpoints" / "checkpoint-10", False)
    # What may differ on resume: the run options, eval.* and metric.
    changed = {**CONFIG, "train": {**CONFIG["train"], "resume": None, "overwrite": True, "precompute_ref": True},
               "eval": {"max_pairs": 4}, "metric": "eval.eval_loss"}  # fmt: skip
    assert RunDir(run).claim(changed, "auto", False)[0].name == "checkpoint-10"
    assert RunDir(run).claim(CONFIG, "auto", False, main=False)[0].name == "checkpoint-10"
    assert snapshot(run) == before


@pytest.mark.parametrize("state", ["interrupted", "failed", "running"])
def test_an_unfinished_run_is_refused_with_resume_null(tmp_path, state):
    run = unfinished_run(tmp_path / "run", state)
    with pytest.raises(RunDirError, match=r"holds an unfinished run with checkpoint checkpoint-2; resume it with "
                                          r"train.resume=auto, or set train.overwrite=true"):  # fmt: skip
        RunDir(run).claim(CONFIG, None, False)
    assert RunDir(run).claim(CONFIG, None, True) == (None, True)


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path):
    run = unfinished_run(tmp_path / "run")
    changed = {**CONFIG, "train": {**CONFIG["train"], "beta": 0.3, "learning_rate": 1e-3}}
    with pytest.raises(RunDirError, match=r"cannot resume .*the config differs from the one it was started with in "
                                          r"train.beta, train.learning_rate\. "):  # fmt: skip
        RunDir(run).claim(changed, "auto", False)
    added = {**CONFIG, "data": {"path": "/other.jsonl"}}
    with pytest.raises(RunDirError, match=r"differs .* in data.path\. "):
        RunDir(run).claim(added, "auto", False)


def test_an_unfinished_run_without_a_checkpoint_starts_again(tmp_path):
    run = tmp_path / "run"
    write_status(run, status="failed", error="DataError: no pairs")
    add_checkpoint(run, 4, complete=False)
    assert RunDir(run).claim(CONFIG, None, False) == (None, False)  # nothing trained yet: nothing to lose


def test_an_explicit_checkpoint_must_be_a_trainer_checkpoint(tmp_path):
    good = add_checkpoint(tmp_path / "other", 7)
    assert RunDir(tmp_path / "run").claim(CONFIG, str(good), False) == (good, False)
    bad = add_checkpoint(tmp_path / "other", 8, complete=False)
    with pytest.raises(RunDirError, match=rf"train.resume={bad}: not a Trainer checkpoint"):
        RunDir(tmp_path / "run").claim(CONFIG, str(bad), False)


def test_a_running_status_whose_process_died_reads_as_interrupted(tmp_path):
    run = unfinished_run(tmp_path / "run", "running")
    pid = dead_pid()
    write_status(run, status="running", pid=pid, host=socket.gethostname())
    assert RunDir(run).status() == {"status": "running", "pid": pid, "host": socket.gethostname()}
    assert RunDir(run).state() == "interrupted"
    assert RunDir(run).claim(CONFIG, "auto", False) == (run / "checkpoints" / "checkpoint-2", False)
    # Another host's process cannot be checked from here: it stays `running`.
    write_status(run, status="running", pid=pid, host=f"not-{socket.gethostname()}")
    assert RunDir(run).state() == "running"


def test_mark_running_records_this_process(tmp_path):
    run = RunDir(tmp_path)
    run.mark_running()
    assert run.status() == {"status": "running", "pid": os.getpid(), "host": socket.gethostname()}
    assert run.state() == "running"  # this process is alive
    run.write_status("failed", error="boom")
    assert run.status() == {"status": "failed", "error": "boom"} and run.state() == "failed"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_live_job_is_refused(tmp_path, overwrite):
    run = unfinished_run(tmp_path / "run", "running")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (os.getppid(), sleeper.pid):
            write_status(run, status="running", pid=pid, host=socket.gethostname())
            before = snapshot(run)
            assert RunDir(run).state() == "running"
            with pytest.raises(RunDirError, match=rf"in use by a running job \(pid {pid}\); choose another"):
                RunDir(run).claim(CONFIG, "auto", overwrite)
            assert snapshot(run) == before
            # Another rank of the same launch: rank 0 marked the run running, the others resume along.
            assert RunDir(run).claim(CONFIG, "auto", overwrite, main=False)[1] is False
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("content", [b"\x00\xff\xfe garbage", b'{"status": "do', b"[1, 2]", b"", b"{}",
                                     b'{"status": null}', b'{"status": "Done"}', b'{"status": 5}'])  # fmt: skip
def test_an_unreadable_status_is_an_error_not_a_retrain(tmp_path, content):
    run = finished_run(tmp_path / "run")
    (run / RunDir.STATUS).write_bytes(content)
    before = snapshot(run)
    assert RunDir(run).state() == "unknown"
    for resume, overwrite in (("auto", False), (None, False), ("auto", True)):
        with pytest.raises(RunDirError, match=r"status.json is unreadable or holds no known status \(running, "
                                              r"failed, interrupted, done\), so whether .* holds a finished run is "
                                              r"unknown; fix or remove that file"):  # fmt: skip
            RunDir(run).claim(CONFIG, resume, overwrite)
    assert snapshot(run) == before


def test_run_dir_errors_are_safealign_errors():
    assert issubclass(RunDirError, SafealignError) and issubclass(SweepError, RunDirError)


# ----------------------------------------------------------------------------------------------
# clear, reading
# ----------------------------------------------------------------------------------------------


def test_clear_removes_exactly_the_outputs(tmp_path):
    run = finished_run(tmp_path / "run")
    (run / RunDir.PAIRS).write_text("{}\n")  # recipes/pairs.py's output is not a training output
    before = snapshot(run)
    RunDir(run).clear()
    after = snapshot(run)
    removed = {p for p in before if p not in after}
    assert {p.split("/")[0] for p in removed} == set(RunDir.OUTPUTS)
    assert after == {p: v for p, v in before.items() if p.split("/")[0] not in RunDir.OUTPUTS}
    assert sorted(after) == sorted([".hydra", RunDir.HYDRA_OVERRIDES, RunDir.CONFIG, RunDir.STATUS, RunDir.VERSIONS,
                                    RunDir.PAIRS, "dpo.log"])  # fmt: skip
    RunDir(run).clear()  # nothing left to remove is fine
    assert snapshot(run) == after


def test_reading_a_run(tmp_path):
    run = RunDir(finished_run(tmp_path / "run"))
    assert run.name == "run" and run.path == tmp_path / "run" and run / "x" == tmp_path / "run" / "x"
    assert str(run) == str(tmp_path / "run") and repr(run) == f"RunDir({str(tmp_path / 'run')!r})"
    assert run.saved_config() == CONFIG
    assert run.overrides() == ["objective=harmless"]
    assert run.read_json(RunDir.METRICS) == {} and run.read_json("missing.json") is None
    assert run.last_checkpoint() == tmp_path / "run" / "checkpoints" / "checkpoint-3"
    empty = RunDir(tmp_path / "empty")
    assert (empty.status(), empty.state(), empty.saved_config(), empty.overrides()) == (None, None, None, [])


def test_half_written_checkpoint_is_skipped(tmp_path):
    for step, complete in ((5, True), (10, True), (15, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-final").mkdir()  # not a step: ignored
    assert last_checkpoint(tmp_path).name == "checkpoint-10"
    assert last_checkpoint(tmp_path / "missing") is None


# ----------------------------------------------------------------------------------------------
# sweep_runs
# ----------------------------------------------------------------------------------------------


def test_sweep_runs_are_the_numbered_runs_in_number_order(tmp_path):
    for name in ("10", "2", "0", "1", "notes", ".hydra"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a run")
    (tmp_path / "multirun.yaml").write_text("{}")
    runs = sweep_runs(tmp_path)
    assert all(isinstance(r, RunDir) for r in runs)
    assert [r.name for r in runs] == ["0", "1", "2", "10"]
    assert [r.path for r in runs] == [tmp_path / n for n in ("0", "1", "2", "10")]
    assert [r.name for r in sweep_runs(str(tmp_path))] == ["0", "1", "2", "10"]


def test_sweep_runs_errors(tmp_path):
    with pytest.raises(SweepError, match=r"sweep_dir=.*missing: no such directory; expected a sweep directory"):
        sweep_runs(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SweepError, match=r"no such directory"):
        sweep_runs(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepError, match=r"sweep_dir=.*empty: the directory is empty; expected the numbered runs"):
        sweep_runs(tmp_path / "empty")
    for marker in (RunDir.CONFIG, RunDir.STATUS):
        single = tmp_path / f"single-{marker}"
        single.mkdir()
        (single / marker).write_text("{}")
        with pytest.raises(SweepError, match=r"this is a single run directory, not a sweep; pass the sweep directory"):
            sweep_runs(single)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(SweepError, match=r"not a sweep directory: no numbered run directories"):
        sweep_runs(tmp_path / "other")
