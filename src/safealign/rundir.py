"""The run directory: the name of every file a run leaves, its status, and the rules for reusing it.

Why one module: evaluation, comparison and training all read what a training run wrote;
with the names and the status rules in one place they cannot drift apart. The rules
protect finished work: a finished run is only replaced with `train.overwrite=true`, an
unfinished one with checkpoints is resumed (with the config it was started with), and a
directory in use by a live process is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from . import io
from .checkpoints import last_checkpoint
from .errors import RunDirError, SweepError

PACKAGES = ("safealign", "torch", "transformers", "trl", "datasets", "peft", "bitsandbytes", "accelerate",
            "hydra-core", "tokenizers")  # fmt: skip
# Keys whose change does not make a run a different experiment: they may differ on resume.
RESUME_IGNORES = ("train.resume", "train.overwrite", "train.precompute_ref", "metric")
RESUME_IGNORED = ("eval.", "preset.")  # groups: the evaluation's settings, and what a preset requires (checked apart)

UNFINISHED = ("running", "failed", "interrupted")
STATES = (*UNFINISHED, "done")
log = logging.getLogger("safealign")


class RunDir:
    """One training run's directory (Hydra's output dir) and what is in it."""

    CONFIG = "config.yaml"  # the resolved config (Hydra's own copy, with the overrides, is in .hydra/)
    STATUS = "status.json"
    VERSIONS = "versions.json"
    FINGERPRINT = "data_fingerprint.json"
    PAIR_REPORT = "pair_report.json"
    PAIRS = "pairs.jsonl"  # recipes/pairs.py only
    METRICS = "metrics.json"
    EVAL = "eval.json"
    EVAL_PAIRS = "eval_pairs.json"  # each dimension's per-pair outcomes, by pair id (paired bootstraps in compare)
    GENERATIONS = "generations.jsonl"
    TRACKERS = "trackers.json"  # where train.report_to's trackers keep the run (`trackers.record`)
    ADAPTER = "adapter"
    CHECKPOINTS = "checkpoints"
    HYDRA_OVERRIDES = ".hydra/overrides.yaml"
    LOCK = ".lock"  # held while a process trains in the directory
    # What a training run produces: removed before `train.overwrite=true` trains again.
    OUTPUTS = (METRICS, EVAL, EVAL_PAIRS, GENERATIONS, PAIR_REPORT, FINGERPRINT, ADAPTER, CHECKPOINTS, TRACKERS)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        """The run's `status.json`, or None when there is none; `{"status": "unknown"}` when unreadable."""
        try:
            status = io.read_json(self / self.STATUS)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"status": "unknown"}
        return status if isinstance(status, dict) else {"status": "unknown"}

    def state(self) -> str | None:
        """running, interrupted, failed, done, unknown, or None (no status). A `running` run whose
        process is gone (same host, dead pid, e.g. after `kill -9`) is `interrupted`."""
        status = self.status()
        if status is None:
            return None
        state = status.get("status")
        if state not in STATES:
            return "unknown"
        if state == "running" and self._owner_dead(status):
            return "interrupted"
        return state

    def write_status(self, state: str, **extra: Any) -> None:
        io.write_json(self / self.STATUS, {"status": state, **extra})

    def mark_running(self) -> None:
        self.write_status("running", pid=os.getpid(), host=socket.gethostname())

    @staticmethod
    def _owner_dead(status: Mapping[str, Any]) -> bool:
        pid = status.get("pid")
        if not isinstance(pid, int) or pid <= 0 or status.get("host") != socket.gethostname():
            return False  # another host's process cannot be checked from here
        return pid != os.getpid() and not _alive(pid)

    def _owner_alive(self, status: Mapping[str, Any]) -> bool:
        pid = status.get("pid")
        return (isinstance(pid, int) and 0 < pid != os.getpid() and status.get("host") == socket.gethostname()
                and _alive(pid))  # fmt: skip

    # -- reading ------------------------------------------------------------------------------

    def saved_config(self) -> dict[str, Any] | None:
        """The resolved config the run was started with (plain data), or None when absent."""
        path = self / self.CONFIG
        return io.read_yaml(path) if path.is_file() else None

    def overrides(self) -> list[str]:
        """The command-line overrides of the run (Hydra's `.hydra/overrides.yaml`), or []."""
        path = self / self.HYDRA_OVERRIDES
        return [str(o) for o in (io.read_yaml(path) or [])] if path.is_file() else []

    def read_json(self, name: str) -> Any:
        """A JSON file of the run, or None when missing or unreadable."""
        return io.read_json_or_none(self / name)

    def last_checkpoint(self) -> Path | None:
        return last_checkpoint(self / self.CHECKPOINTS)

    # -- claiming -----------------------------------------------------------------------------

    def claim(
        self, config: Mapping[str, Any], resume: str | None, overwrite: bool, main: bool = True,
        overwrite_key: str = "train.overwrite", resumable: bool = True,
    ) -> tuple[Path | None, bool]:
        """Decide how a job uses this directory, so that no finished work is lost.

        Returns (checkpoint to resume from or None, whether the previous outputs must be
        cleared). Nothing is removed here: the caller clears (`clear()`) only once the new
        run's config and data have passed their checks. Only the main process (`main`)
        guards the directory; other ranks of the same launch just find the checkpoint, since
        rank 0 may already have marked the run running.

        `overwrite_key`: the job's overwrite option, for the errors; `resumable=False` (merge.py, with
        `resume=None`): the job cannot resume an unfinished run with checkpoints, and says so.
        """
        status = self.status()
        state = status.get("status") if status is not None else None
        if status is not None and state not in STATES:
            raise RunDirError(
                f"{self / self.STATUS} is unreadable or holds no known status ({', '.join(STATES)}), so whether "
                f"{self.path} holds a finished run is unknown; fix or remove that file, or choose another hydra.run.dir"
            )
        if main and state == "running" and status is not None and self._owner_alive(status):
            raise RunDirError(f"{self.path} is in use by a running job (pid {status.get('pid')}); "
                              "choose another hydra.run.dir")  # fmt: skip
        if state == "done" and not overwrite:
            raise RunDirError(
                f"{self.path} holds a finished run; choose another hydra.run.dir, or set {overwrite_key}=true to "
                "replace it"
            )
        if resume not in (None, "auto"):
            checkpoint = Path(resume).expanduser()
            if not (checkpoint / "trainer_state.json").is_file():
                raise RunDirError(f"train.resume={resume}: not a Trainer checkpoint (no trainer_state.json in it)")
            return checkpoint, False
        if status is None:
            return None, False
        if overwrite:
            return None, main
        checkpoint = self.last_checkpoint()
        if checkpoint is None:
            return None, False  # nothing was trained yet: starting again loses nothing
        if not resumable:
            raise RunDirError(
                f"{self.path} holds an unfinished run with checkpoint {checkpoint.name}, which this job cannot "
                f"resume; choose another hydra.run.dir, or set {overwrite_key}=true to replace it"
            )
        if resume is None:
            raise RunDirError(
                f"{self.path} holds an unfinished run with checkpoint {checkpoint.name}; resume it with "
                f"train.resume=auto, or set {overwrite_key}=true to start again"
            )
        try:
            saved = self.saved_config()
        except Exception as err:  # yaml raises its own error types
            raise RunDirError(f"cannot resume {self.path}: its {self.CONFIG} is unreadable ({err})") from err
        if saved is not None:
            old, new = _flatten(saved), _flatten(dict(config))
            keys = (k for k in old.keys() | new.keys() if k not in RESUME_IGNORES and not k.startswith(RESUME_IGNORED))
            changed = sorted(k for k in keys if old.get(k) != new.get(k))
            if changed:
                raise RunDirError(
                    f"cannot resume {self.path}: the config differs from the one it was started with in "
                    f"{', '.join(changed)}. Resume with the same overrides, or set train.overwrite=true to start again"
                )
        return checkpoint, False

    @contextlib.contextmanager
    def lock(self, main: bool = True) -> Iterator[None]:
        """Hold `.lock` in the directory while a run uses it, so that two processes never work in one
        directory (two runs started in the same second get the same Hydra run directory).

        An exclusive `flock`, which the kernel drops when its holder ends (`kill -9` included): a
        stale or empty `.lock` is simply locked again, with no read-check-delete step for two
        processes to race through. The holder writes its pid and host into it (for the others'
        error) and removes it on release while still holding it; one that locked a file removed
        meanwhile tries again. A record of another host is refused (its lock may not reach here).
        Only the main process locks. An unwritable directory is refused first, in one line.
        """
        if not main:
            yield
            return
        self.check_writable()
        path = self.path / self.LOCK
        fd = self._acquire(path)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                if _same_file(fd, path):  # not a file that replaced ours after someone removed it
                    path.unlink()
            os.close(fd)

    def _acquire(self, path: Path) -> int:
        """An open descriptor of `path`, flocked by this process and holding its record."""
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(100):  # each retry means a holder released the lock meanwhile
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, io.file_mode())
            except OSError as err:
                raise self._cannot_write(err) from None
            try:
                locked = _flock(fd)
                if not _same_file(fd, path):  # released (and removed) by its holder since we opened it
                    os.close(fd)
                    continue
                owner = _read_record(fd)
                other_host = isinstance(owner.get("host"), str) and owner["host"] != me["host"]
                # locked None: no flock on this file system; then only the record tells (as it did before flock)
                if locked is False or other_host or (locked is None and self._owner_alive(owner)):
                    # A flock held on this host: the job is alive (the kernel drops the lock of a dead one), and
                    # removing the file would let two jobs run at once. Another host's or an unlockable file
                    # system's record can outlive its job: then the user can tell.
                    gone = ("wait for it or stop it" if locked is False and not other_host
                            else f"remove {path} if that job is gone")  # fmt: skip
                    raise RunDirError(
                        f"{self.path} is in use by another job (pid {owner.get('pid', '?')} on "
                        f"{owner.get('host', '?')}); choose another hydra.run.dir, or {gone}"
                    )
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(me).encode(), 0)
                return fd
            except OSError as err:  # e.g. a full disk: the record cannot be written
                os.close(fd)
                raise self._cannot_write(err) from None
            except BaseException:
                os.close(fd)
                raise
        raise RunDirError(f"{self.path}: could not take {path} (other jobs keep taking and releasing it); "
                          "choose another hydra.run.dir")  # fmt: skip

    def check_writable(self, what: str = "into it", hint: str = "choose another hydra.run.dir") -> None:
        """Create the directory if needed, and a file in it (removed at once): one that cannot be written is
        refused in one line before any work. Mode bits cannot tell: root writes through 0555, and an
        immutable directory (`chattr +i`) or a read-only mount does not show in them."""
        probe = self.path / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            probe.unlink()
        except OSError as err:
            raise self._cannot_write(err, what, hint) from None

    def _cannot_write(self, err: OSError, what: str = "into it", hint: str = "choose another hydra.run.dir"
                      ) -> RunDirError:  # fmt: skip
        if self.path.exists() and not self.path.is_dir():
            return RunDirError(f"{self.path}: cannot write {what}: it is a file, not a directory; {hint}")
        reason = err.strerror or type(err).__name__
        return RunDirError(f"{self.path}: cannot write {what} ({reason}); {hint}")

    def check_same_data(self, fingerprint: Mapping[str, Any]) -> None:
        """Refuse to resume on other data than the run started with (same config, changed files)."""
        saved = self.read_json(self.FINGERPRINT)
        if isinstance(saved, dict) and saved and dict(saved) != dict(fingerprint):
            raise RunDirError(
                f"cannot resume {self.path}: its data changed since it started ({self.FINGERPRINT} differs: "
                f"{saved.get('train_pairs')} -> {fingerprint.get('train_pairs')} train pairs). Restore the data, or "
                "set train.overwrite=true to start again"
            )

    def write_hydra_files(self, task_cfg: Any) -> None:
        """Hydra's record of the run (`.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`), as Hydra writes it.

        `conf/dpo.yaml` sets `hydra.output_subdir: null` so that Hydra writes nothing before the
        run has claimed its directory; the job calls this once it has. Outside Hydra (a job
        called from Python) there is nothing to record.
        """
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if not HydraConfig.initialized():
            return
        hydra_cfg = HydraConfig.instance().cfg
        hydra_dir = self.path / ".hydra"
        io.write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(task_cfg))
        io.write_text(hydra_dir / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
        io.write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task))

    def clear(self) -> None:
        """Remove a previous run's outputs before `train.overwrite=true` reuses the directory."""
        for name in self.OUTPUTS:
            io.remove(self / name)


def is_main_process() -> bool:
    """Rank 0 of a distributed launch (accelerate, torchrun and submitit set RANK), or a single process.

    Read from the environment, as accelerate does, so that a run can claim its directory
    before torch is imported.
    """
    return int(os.environ.get("RANK", "0")) == 0


def _alive(pid: int) -> bool:
    """Whether process `pid` of this host is running. A zombie (killed, not yet reaped by its parent: in a
    container without a reaping init, for good) is dead, although `os.kill(pid, 0)` still reaches it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # no /proc to tell
    fields = stat[stat.rfind(")") + 1 :].split()  # after the command name, which may hold anything
    return not fields or fields[0] not in ("Z", "X")  # zombie, dead


def _flock(fd: int) -> bool | None:
    """An exclusive flock on `fd`, without waiting: True; False when another holds it; None: no flock here."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            log.warning("no file locks on this file system (%s): the run directory lock only reads its record", err)
            return None
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (not removed, nor replaced by another)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_record(fd: int) -> dict[str, Any]:
    """The pid/host record in a lock file, or {} when empty or unreadable (a crash while writing it)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


class JobRun(RunDir):
    """A run directory named as the sweep job it belongs to (an iteration's final round stands for its job)."""

    def __init__(self, path: str | Path, job: str) -> None:
        super().__init__(path)
        self.job = job

    @property
    def name(self) -> str:
        return self.job


def final_round(job_dir: Path) -> RunDir | None:
    """The last round (`round_N`) of a `recipes/iterate.py` job directory, named as the job; None for a run.

    Why: a sweep of iterations is compared by its final rounds, each a run directory like any other.
    """
    if (job_dir / RunDir.CONFIG).is_file() or (job_dir / RunDir.STATUS).is_file():
        return None
    rounds = [p for p in job_dir.glob("round_*") if p.is_dir() and p.name[6:].isdigit()]
    return JobRun(max(rounds, key=lambda p: int(p.name[6:])), job_dir.name) if rounds else None


def sweep_runs(sweep_dir: str | Path) -> list[RunDir]:
    """The numbered run directories (`0`, `1`, ...) of a Hydra multirun directory, in number order.

    Raises SweepError for a missing or empty directory, a single run, or one without runs.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise SweepError(
            f"sweep_dir={sweep_dir}: no such directory; expected a sweep directory written by "
            "`recipes/dpo.py -m ...` (numbered runs 0, 1, ...)"
        )
    found = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if found:
        return [final_round(p) or RunDir(p) for p in found]
    if (sweep_dir / RunDir.CONFIG).is_file() or (sweep_dir / RunDir.STATUS).is_file():
        raise SweepError(
            f"sweep_dir={sweep_dir}: this is a single run directory, not a sweep; pass the sweep "
            "directory that holds the numbered runs (0, 1, ...)"
        )
    if not any(sweep_dir.iterdir()):
        raise SweepError(
            f"sweep_dir={sweep_dir}: the directory is empty; expected the numbered runs (0, 1, ...) of "
            "a sweep (`recipes/dpo.py -m ... hydra.sweep.dir=DIR`)"
        )
    raise SweepError(f"sweep_dir={sweep_dir}: not a sweep directory: no numbered run directories (0, 1, ...) in it")


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that decide a run's numbers, for `versions.json`."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def fingerprint(pairs: Iterable[Any]) -> str:
    """sha256 over the pairs a run trains on: equal fingerprints mean equal training data."""
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(json.dumps([p.prompt, p.chosen, p.rejected, p.margin], ensure_ascii=False).encode())
    return digest.hexdigest()
