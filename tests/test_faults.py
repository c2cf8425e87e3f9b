"""Faults that must never lose, rewrite or hide a user's work. None of these loads a model."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from safealign.checkpoints import usable_checkpoint
from safealign.cli import compose
from safealign.errors import DataError, RunDirError
from safealign.jobs import dpo
from safealign.objectives import Pair
from safealign.pairs import PairReport, count_shared_prompts
from safealign.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]


def finished_run(path: Path) -> dict[str, bytes]:
    """A directory that looks like a finished training run; returns its files and their bytes."""
    files = {
        "status.json": b'{"status": "done"}\n',
        "config.yaml": b"objective:\n  name: multilevel\n",
        "metrics.json": b'{"global_step": 96}\n',
        "eval.json": b'{"dimensions": {}}\n',
        "adapter/adapter_config.json": b"{}\n",
        "checkpoints/checkpoint-96/trainer_state.json": b"{}\n",
        ".hydra/overrides.yaml": b"- objective=multilevel\n",
        ".hydra/config.yaml": b"objective:\n  name: multilevel\n",
    }
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return files


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_overwrite_removes_nothing_until_the_data_has_passed_its_checks(tmp_path):
    run = tmp_path / "run"
    files = finished_run(run)
    cfg = compose("dpo", ["train.overwrite=true", f"data.path={tmp_path / 'missing.jsonl'}"])
    with pytest.raises(DataError, match="no such file"):
        dpo.run(cfg, run)
    assert snapshot(run) == files


def test_overwrite_with_a_bad_value_removes_nothing(tmp_path):
    run = tmp_path / "run"
    files = finished_run(run)
    with pytest.raises(Exception, match=r"train\.beta"):
        dpo.run(compose("dpo", ["train.overwrite=true", "train.beta=nan"]), run)
    assert snapshot(run) == files


@pytest.mark.integration
def test_a_refused_rerun_changes_nothing_in_the_run_directory_hydra_files_included(tmp_path):
    run = tmp_path / "run"
    files = finished_run(run)
    out = subprocess.run(
        [sys.executable, "recipes/dpo.py", "objective=helpful", "train.beta=0.3", f"hydra.run.dir={run}"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-2000:]
    assert "holds a finished run" in out.stderr and "train.overwrite=true" in out.stderr
    after = snapshot(run)
    after.pop("dpo.log", None)  # Hydra's log file is opened for appending; only its content would count
    assert after == files
    log_file = run / "dpo.log"
    assert not log_file.exists() or log_file.read_bytes() == b""


def test_an_unreadable_status_is_an_error_not_a_silent_retrain(tmp_path):
    run = tmp_path / "run"
    finished_run(run)
    (run / "status.json").write_bytes(b"\x00\xff not json")
    before = snapshot(run)
    with pytest.raises(RunDirError, match=r"status\.json is unreadable"):
        dpo.run(compose("dpo"), run)
    assert snapshot(run) == before


@pytest.mark.integration
def test_a_sweep_marks_config_failures_failed_summarises_them_and_exits_non_zero(tmp_path):
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [sys.executable, "recipes/dpo.py", "-m", "train.beta=-1,nan", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    for run, value in (("0", "-1"), ("1", "nan")):
        status = json.loads((sweep / run / "status.json").read_text())
        assert status["status"] == "failed" and "train.beta" in status["error"] and value in status["error"]
        assert f"train.beta={value}" in (sweep / run / ".hydra" / "overrides.yaml").read_text()
    text = out.stdout + out.stderr
    assert "2 of the sweep's runs did not finish" in text
    assert f"python recipes/compare.py sweep_dir={sweep}" in text


def _checkpoint(root: Path, step: int, corrupt: bool = False) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    with zipfile.ZipFile(path / "optimizer.pt", "w") as archive:
        archive.writestr("archive/data.pkl", b"x" * 4096)
    if corrupt:  # flip bytes inside the stored member: the CRC no longer matches
        data = bytearray((path / "optimizer.pt").read_bytes())
        data[100:110] = b"\xff" * 10
        (path / "optimizer.pt").write_bytes(bytes(data))
    return path


def test_a_corrupt_checkpoint_falls_back_to_the_previous_good_one(tmp_path, caplog):
    good = _checkpoint(tmp_path, 10)
    bad = _checkpoint(tmp_path, 20, corrupt=True)
    with caplog.at_level(logging.WARNING, logger="safealign"):
        assert usable_checkpoint(bad, explicit=False) == good
    assert str(bad) in caplog.text and "checkpoint-10" in caplog.text
    assert usable_checkpoint(good, explicit=False) == good


def test_an_explicit_corrupt_checkpoint_or_no_good_one_is_a_clear_error(tmp_path):
    bad = _checkpoint(tmp_path, 20, corrupt=True)
    with pytest.raises(RunDirError, match=r"train.resume=.*checkpoint-20: the checkpoint cannot be loaded"):
        usable_checkpoint(bad, explicit=True)
    with pytest.raises(RunDirError, match=r"no checkpoint of this run can be loaded.*overwrite"):
        usable_checkpoint(bad, explicit=False)
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text("{trunc")
    with pytest.raises(RunDirError, match="no checkpoint of this run can be loaded"):
        usable_checkpoint(bad, explicit=False)


def test_prompts_shared_by_train_and_held_out_splits_are_counted():
    train = [Pair("p1", "a", "b", 0.0, 0), Pair("p2", "a", "b", 0.0, 0)]
    test = [Pair("p2", "c", "d", 0.0, 0), Pair("p2", "e", "f", 0.0, 0), Pair("p3", "a", "b", 0.0, 0)]
    report = PairReport()
    assert count_shared_prompts(train, test, report) == 1
    assert report.to_dict()["prompts_in_train"] == 1
    assert "prompts_in_train" not in PairReport().to_dict()  # the train split's report has no such count


def test_a_dead_running_run_reads_interrupted_and_resumes_as_usual(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    run = RunDir(tmp_path)
    import socket

    run.write_status("running", pid=dead, host=socket.gethostname())
    assert run.state() == "interrupted"
    checkpoint = _checkpoint(tmp_path / "checkpoints", 4)
    (tmp_path / "config.yaml").write_text("a: 1\n")
    assert run.claim({"a": 1}, "auto", False) == (checkpoint, False)


def test_two_runs_never_share_a_run_directory(tmp_path):
    run = RunDir(tmp_path)
    with run.lock():
        assert json.loads((tmp_path / RunDir.LOCK).read_text())["pid"] == __import__("os").getpid()
        other = subprocess.run(
            [sys.executable, "-c", f"from safealign.rundir import RunDir\nwith RunDir({str(tmp_path)!r}).lock(): pass"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert other.returncode == 1 and "is in use by another job" in other.stderr
        assert "wait for it or stop it" in other.stderr  # a held lock: its job is alive
    assert not (tmp_path / RunDir.LOCK).exists()  # released


def test_a_lock_left_by_a_dead_process_is_taken_over_and_another_hosts_is_refused(tmp_path):
    import socket

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)  # fmt: skip
    (tmp_path / RunDir.LOCK).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with RunDir(tmp_path).lock():
        pass
    (tmp_path / RunDir.LOCK).write_text(json.dumps({"pid": 1, "host": "another-node"}))
    with pytest.raises(RunDirError, match="pid 1 on another-node"), RunDir(tmp_path).lock():
        pass
    with RunDir(tmp_path).lock(main=False):  # other ranks follow rank 0's lock
        pass


def test_resume_refuses_changed_data(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / RunDir.FINGERPRINT).write_text(json.dumps({"train_pairs": 256, "train_sha256": "a"}))
    run.check_same_data({"train_pairs": 256, "train_sha256": "a"})
    with pytest.raises(RunDirError, match="its data changed since it started"):
        run.check_same_data({"train_pairs": 250, "train_sha256": "b"})


@pytest.mark.integration
def test_a_refused_resume_in_a_sweep_keeps_the_runs_record(tmp_path):
    sweep = tmp_path / "sweep"
    run = sweep / "0"
    files = finished_run(run)
    (run / "status.json").write_bytes(b'{"status": "interrupted", "error": "interrupted by SIGTERM at step 7"}\n')
    files["status.json"] = (run / "status.json").read_bytes()
    (run / "checkpoints" / "checkpoint-96" / "trainer_state.json").unlink()
    _checkpoint(run / "checkpoints", 7)
    files = snapshot(run)
    out = subprocess.run(
        [sys.executable, "recipes/dpo.py", "-m", "objective.gamma=0.5", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert out.returncode == 1 and "cannot resume" in out.stdout + out.stderr
    after = snapshot(run)
    after.pop("dpo.log", None)
    assert after == files


def test_non_finite_objective_options_are_refused():
    from safealign.errors import ConfigError
    from safealign.settings import parse_pairs

    for override in ("objective.gamma=inf", "objective.gamma=nan"):
        with pytest.raises(ConfigError, match=r"objective\.gamma: expected a finite number"):
            parse_pairs(compose("pairs", [override]))
    with pytest.raises(ConfigError, match=r"objective\.alpha: expected a finite number"):
        parse_pairs(compose("pairs", ["objective=bfpo", "objective.alpha=-inf"]))


@pytest.mark.integration
def test_evaluating_a_sweep_with_nothing_finished_fails(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "status.json").write_text('{"status": "failed", "error": "x"}')
    out = subprocess.run([sys.executable, "recipes/evaluate.py", f"run_dir={tmp_path}"], capture_output=True,
                         text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert out.returncode == 1 and "no finished run (status done) to evaluate" in out.stderr
