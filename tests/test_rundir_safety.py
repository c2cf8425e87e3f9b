"""The run-directory lock under contention, dead and zombie owners, and directories that cannot be written:
no two jobs in one directory, no run stuck as `running`, and no traceback after a whole job. No model loads."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safealign.cli import compose
from safealign.errors import RunDirError
from safealign.rundir import RunDir, _alive

REPO = Path(__file__).resolve().parents[1]
ME = socket.gethostname()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def unwritable(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make creating a file in `folder` fail as in an immutable directory (`chattr +i`) or on a read-only
    mount: tests run as root, whom mode 0555 does not stop."""
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if os.path.realpath(os.path.dirname(os.fsdecode(path))) == os.path.realpath(folder) and flags & os.O_CREAT:
            raise PermissionError(1, "Operation not permitted", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)


# ----------------------------------------------------------------------------------------------
# the lock
# ----------------------------------------------------------------------------------------------


HOLD = (
    "import sys, time\n"
    "from safealign.rundir import RunDir\n"
    "with RunDir(sys.argv[1]).lock():\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(60)\n"
)


def test_a_held_lock_is_refused_whatever_its_record_says(tmp_path):
    """The race behind two holders: a process reads a dead owner's record, and another takes the lock over
    before the first deletes it. The record alone must never decide that a held lock is free."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        (tmp_path / RunDir.LOCK).write_text(json.dumps({"pid": dead_pid(), "host": ME}))  # a stale record
        busy = r"is in use by another job.*wait for it or stop it$"
        with pytest.raises(RunDirError, match=busy), RunDir(tmp_path).lock():
            pass
        assert (tmp_path / RunDir.LOCK).exists()  # the holder's lock is left alone
    finally:
        holder.kill()
        holder.wait()
    with RunDir(tmp_path).lock():  # its holder killed: free again
        assert json.loads((tmp_path / RunDir.LOCK).read_text()) == {"pid": os.getpid(), "host": ME}
    assert not (tmp_path / RunDir.LOCK).exists()


@pytest.mark.parametrize("content", [b"", b'{"pid": 12', b"\x00\xff"])
def test_an_empty_or_garbled_lock_left_by_a_crash_is_taken_over(tmp_path, content):
    (tmp_path / RunDir.LOCK).write_bytes(content)
    with RunDir(tmp_path).lock():
        assert json.loads((tmp_path / RunDir.LOCK).read_text()) == {"pid": os.getpid(), "host": ME}
    assert not (tmp_path / RunDir.LOCK).exists()


def _contend(path: str, barrier, trials: int, overlaps, taken) -> None:
    from safealign.rundir import RunDir

    inside = Path(path) / "inside"
    for _ in range(trials):
        barrier.wait(timeout=30)  # the parent has left a stale lock
        try:
            with RunDir(path).lock():
                with taken.get_lock():
                    taken.value += 1
                try:
                    fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    with overlaps.get_lock():
                        overlaps.value += 1
                else:
                    time.sleep(0.01)
                    os.close(fd)
                    os.unlink(inside)
        except RunDirError:
            pass
        barrier.wait(timeout=30)


def test_a_stale_lock_is_taken_over_by_one_process_at_a_time(tmp_path):
    """Four processes race for a lock left by a dead process, 20 times: never two holders at once."""
    ctx = multiprocessing.get_context("fork")
    procs, trials = 4, 20
    barrier, overlaps, taken = ctx.Barrier(procs + 1), ctx.Value("i", 0), ctx.Value("i", 0)
    workers = [ctx.Process(target=_contend, args=(str(tmp_path), barrier, trials, overlaps, taken))
               for _ in range(procs)]  # fmt: skip
    for worker in workers:
        worker.start()
    stale = json.dumps({"pid": dead_pid(), "host": ME})
    try:
        for _ in range(trials):
            (tmp_path / RunDir.LOCK).write_text(stale)
            barrier.wait(timeout=30)  # go
            barrier.wait(timeout=30)  # every worker is done with this trial
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert [w.exitcode for w in workers] == [0] * procs
    assert overlaps.value == 0
    assert taken.value >= trials  # every stale lock was taken over


# ----------------------------------------------------------------------------------------------
# zombies
# ----------------------------------------------------------------------------------------------


def test_a_killed_process_not_yet_reaped_is_dead(tmp_path):
    """After kill -9 the process stays a zombie until its parent reaps it (in a container without a
    reaping init, for good); os.kill(pid, 0) still reaches it, but its run is not running."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = RunDir(tmp_path)
        run.write_status("running", pid=child.pid, host=ME)
        assert _alive(child.pid) and run.state() == "running"
        os.kill(child.pid, signal.SIGKILL)
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(child.pid, 0)  # the zombie is still there: this does not raise
        assert not _alive(child.pid)
        assert run.state() == "interrupted"
    finally:
        child.kill()
        child.wait()  # reaped only now


def test_a_process_name_with_parentheses_and_spaces_does_not_fool_the_zombie_check(tmp_path):
    exe = tmp_path / "a) Z (b"
    exe.symlink_to(sys.executable)
    child = subprocess.Popen([str(exe), "-c", "import time; time.sleep(60)"])
    try:
        assert _alive(child.pid)
    finally:
        child.kill()
        child.wait()


# ----------------------------------------------------------------------------------------------
# directories that cannot be written
# ----------------------------------------------------------------------------------------------


def test_the_lock_refuses_a_directory_it_cannot_write_with_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("a regular file")
    with pytest.raises(RunDirError, match=r"file/run: cannot write into it \(Not a directory\); choose another "
                                          r"hydra\.run\.dir"), RunDir(tmp_path / "file" / "run").lock():  # fmt: skip
        pass
    with pytest.raises(RunDirError, match=r"file: cannot write into it: it is a file, not a directory"), \
            RunDir(tmp_path / "file").lock():  # fmt: skip
        pass
    run = tmp_path / "run"
    run.mkdir()
    unwritable(monkeypatch, run)
    with pytest.raises(RunDirError, match=rf"^{run}: cannot write into it \(Operation not permitted\); choose "
                                          r"another hydra\.run\.dir$"), RunDir(run).lock():  # fmt: skip
        pass
    assert list(run.iterdir()) == []


def test_training_refuses_a_directory_it_cannot_write_before_any_work(tmp_path, monkeypatch):
    from safealign.jobs import dpo, training

    def no_work(*args, **kwargs):
        raise AssertionError("the job started working")

    monkeypatch.setattr(dpo, "load_pairs", no_work)
    monkeypatch.setattr(training, "load_pairs", no_work)
    run = tmp_path / "run"
    run.mkdir()
    unwritable(monkeypatch, run)
    with pytest.raises(RunDirError, match=r"run: cannot write into it \(Operation not permitted\); choose another"):
        dpo.run(compose("dpo"), run)


def test_evaluate_refuses_a_run_it_cannot_write_before_evaluating(tmp_path, monkeypatch):
    from safealign.jobs import evaluate
    from tests.runs import fake_run

    def no_work(*args, **kwargs):
        raise AssertionError("the evaluation started")

    monkeypatch.setattr(evaluate, "evaluate_run", no_work)
    run = fake_run(tmp_path / "run", adapter=False)
    before = snapshot(run)
    unwritable(monkeypatch, run)
    cfg = compose("evaluate", [f"run_dir={run}"])
    with pytest.raises(RunDirError, match=r"run: cannot write eval\.json \(Operation not permitted\); make the "
                                          r"directory writable, or evaluate a writable copy"):  # fmt: skip
        evaluate.run(cfg)
    # a sweep: the unwritable run is refused before any run is evaluated
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", adapter=False)
    (sweep / "1").symlink_to(run)
    with pytest.raises(RunDirError, match=r"cannot write eval\.json"):
        evaluate.run(compose("evaluate", [f"run_dir={sweep}"]))
    monkeypatch.undo()
    assert snapshot(run) == before


@pytest.mark.integration
def test_the_evaluate_recipe_says_so_in_one_line(tmp_path):
    from tests.runs import fake_run

    run = fake_run(tmp_path / "run", adapter=False)
    code = (
        "import os, runpy, sys\n"
        "real = os.open\n"
        "def refuse(path, flags, *a, **k):\n"
        f"    if os.path.dirname(os.fsdecode(path)) == {str(run)!r} and flags & os.O_CREAT:\n"
        "        raise PermissionError(1, 'Operation not permitted', path)\n"
        "    return real(path, flags, *a, **k)\n"
        "os.open = refuse\n"
        f"sys.argv = ['recipes/evaluate.py', 'run_dir={run}']\n"
        "runpy.run_path('recipes/evaluate.py', run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        f"safealign: error: {run}: cannot write eval.json (Operation not permitted); make the directory writable, "
        "or evaluate a writable copy of the run"
    ]
    assert not (run / "eval.json").exists()
