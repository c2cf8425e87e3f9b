"""Shared helpers for the benchmark scripts: statistics, machine facts, quiet-machine checks and output.

Every benchmark reports the median of several runs with the min and max, the machine and the
package versions, and the command that produced it, so that a number in BENCHMARKS.md can be
reproduced and compared. On a shared machine the main threat to a timing is someone else's
job, so each script waits for the CPU to be quiet before measuring and records how busy the
other processes were while it measured; a result taken under load says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import psutil

REPO = Path(__file__).resolve().parents[1]
# A measurement during which other processes used more than BUSY_CORES cores on average, or
# PEAK_CORES in any one second, counts as taken under load and is measured again, RETRIES times at most.
BUSY_CORES = 0.1
PEAK_CORES = 0.75
RETRIES = 4
T = TypeVar("T")


# ---------------------------------------------------------------- statistics


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements (the median resists one disturbed run)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": list(values),
    }


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table: `digits` significant digits, thousands separators for large ones."""
    if value is None:
        return "-"
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_summary(s: dict[str, Any], digits: int = 3) -> str:
    """`median (min–max)`, the form every table uses."""
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


# ---------------------------------------------------------------- machine and versions


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM and GPU: the facts a timing depends on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str | None]:
    """The versions safealign itself records in a run directory (`versions.json`)."""
    from safealign.rundir import package_versions

    return package_versions()


# ---------------------------------------------------------------- load of other processes


def _own_cpu_seconds() -> float:
    """CPU seconds used by this process and all its descendants, living or reaped."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system
    for child in me.children(recursive=True):
        with suppress(psutil.Error):
            total += sum(child.cpu_times()[:4])
    return total


def _busy_cpu_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


class OtherLoad:
    """Measure how many cores *other* processes use while a benchmark runs.

    The load average cannot tell a benchmark's own work from someone else's, and a
    benchmark keeps it high by itself; the machine's busy CPU time minus this process
    tree's CPU time can. Used as a context manager around each measured run.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        busy, own, then = _busy_cpu_seconds(), _own_cpu_seconds(), time.monotonic()
        while not self._stop.wait(self.interval):
            busy2, own2, now = _busy_cpu_seconds(), _own_cpu_seconds(), time.monotonic()
            self.samples.append(max(0.0, (busy2 - busy) - (own2 - own)) / (now - then))
            busy, own, then = busy2, own2, now

    def __enter__(self) -> OtherLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else 0.0


def other_cores(seconds: float = 3.0) -> float:
    """Cores used by other processes over the next `seconds`."""
    with OtherLoad(interval=seconds / 3) as load:
        time.sleep(seconds + 0.1)
    return load.mean


def wait_for_quiet(max_wait: float, threshold: float = BUSY_CORES) -> dict[str, Any]:
    """Wait (up to `max_wait` seconds) until other processes use under `threshold` cores.

    Returns what was seen, so the result can say whether it was taken on a quiet machine.
    """
    start = time.monotonic()
    while True:
        used = other_cores()
        if used < threshold or time.monotonic() - start >= max_wait:
            break
        print(
            f"  waiting for a quiet machine: other processes use {used:.2f} cores "
            f"(load average {os.getloadavg()[0]:.2f})",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(10)
    return {
        "other_cores": round(used, 3),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "waited_s": round(time.monotonic() - start, 1),
        "quiet": used < threshold,
    }


def measure(opts: argparse.Namespace, fn: Callable[..., T], *args: Any) -> tuple[T, dict[str, Any]]:
    """Run `fn(*args)` on a quiet machine; run it again (`opts.retries` times at most) if others disturbed it.

    `opts` carries the command line's `max_wait` and `retries`.

    Returns `fn`'s value and a record of the machine's state: `before` (what the wait saw),
    `other_cores_mean` / `other_cores_max` (cores other processes used while `fn` ran),
    `attempts`, and `under_load`, true only if every attempt was disturbed.
    """
    for attempt in range(1, opts.retries + 2):
        record: dict[str, Any] = {"before": wait_for_quiet(opts.max_wait)}
        with OtherLoad() as load:
            value = fn(*args)
        record["other_cores_mean"] = round(load.mean, 3)
        record["other_cores_max"] = round(max(load.samples, default=0.0), 3)
        record["attempts"] = attempt
        record["under_load"] = (
            load.mean > BUSY_CORES or record["other_cores_max"] > PEAK_CORES or not record["before"]["quiet"]
        )
        if not record["under_load"]:
            break
        again = "measuring again" if attempt <= opts.retries else "kept, flagged as under load"
        print(f"  (others used {load.mean:.2f} cores on average, {record['other_cores_max']:.2f} at most: {again})")
    return value, record


# ---------------------------------------------------------------- shared set-up


def quiet_libraries() -> None:
    """Silence progress bars and advisory warnings that would bury the result table."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    for name in ("transformers", "trl", "datasets", "peft", "safealign", "accelerate", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


_SCRATCH: tempfile.TemporaryDirectory[str] | None = None


def scratch(prefix: str = "bench-") -> str:
    """A fresh directory for run outputs, removed when the process exits.

    Benchmarks create many run directories (and an 80k-row JSONL file); none should outlive
    the measurement or fill the disk of a shared machine.
    """
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = tempfile.TemporaryDirectory(prefix="safealign-bench-")
    return tempfile.mkdtemp(prefix=prefix, dir=_SCRATCH.name)


def tiny_model_dir() -> Path:
    """Build (or find) the shipped `model=tiny` and return its directory, outside any timing."""
    from omegaconf import OmegaConf

    from safealign.tiny import resolve_path

    return Path(resolve_path(OmegaConf.load(REPO / "conf" / "model" / "tiny.yaml")))


@contextmanager
def private_cache(model_dir: Path | None = None) -> Iterator[Path]:
    """A fresh $SAFEALIGN_CACHE holding only a copy of the tiny model.

    The cache also holds precomputed reference log-probs (`ref_logps/`), so a benchmark that
    must control cache hits gets an empty one, without paying for a rebuild of the model.
    """
    model_dir = model_dir or tiny_model_dir()
    root = Path(tempfile.mkdtemp(prefix="safealign-bench-cache-"))
    shutil.copytree(model_dir, root / model_dir.name)
    old = os.environ.get("SAFEALIGN_CACHE")
    os.environ["SAFEALIGN_CACHE"] = str(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("SAFEALIGN_CACHE", None)
        else:
            os.environ["SAFEALIGN_CACHE"] = old
        shutil.rmtree(root, ignore_errors=True)


def compose(overrides: Sequence[str]) -> Any:
    """The config `recipes/dpo.py` would run with these overrides (`safealign.cli.compose`)."""
    from safealign.cli import compose as compose_config

    return compose_config("dpo", list(overrides))


def dpo_args(overrides: Sequence[str]) -> Any:
    """The checked settings and the DPOConfig that `recipes/dpo.py` trains with for these overrides."""
    from safealign.settings import parse_train
    from safealign.trainer import dpo_config

    s = parse_train(compose(overrides))
    return s, dpo_config(s.train, scratch("bench-"), s.run.precompute_ref)


# ---------------------------------------------------------------- command line and output


def parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--repeats", type=int, default=repeats, help=f"measured runs per configuration (default {repeats})")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON to this file")
    p.add_argument(
        "--max-wait",
        type=float,
        default=900.0,
        help="seconds to wait for a quiet machine before each run (then measure anyway, flagged)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=RETRIES,
        help=f"measure a run again when other processes disturbed it, at most this often (default {RETRIES})",
    )
    return p


def command_line() -> str:
    return " ".join(["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def finish(
    name: str, args: argparse.Namespace, params: dict[str, Any], results: Any, table: str, started: float
) -> dict[str, Any]:
    """Print the result table with its context, and write the JSON the table came from."""
    doc = {
        "benchmark": name,
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "versions": versions(),
        "repeats": args.repeats,
        "params": params,
        "results": results,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    m = doc["machine"]
    print(f"\n## {name}\n")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, GPU: {m['gpu']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()))
    print(f"command: {doc['command']}   (repeats {args.repeats}, {doc['wall_seconds']} s in all)\n")
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"\nwrote {args.out}")
    return doc


# ---------------------------------------------------------------- training steps


def step_timer() -> Any:
    """A TrainerCallback that records when each optimizer step ends (created lazily: transformers is heavy)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time per training step, from one step's end to the next.

        That interval holds everything a step costs in steady state (fetching and collating the
        batch, forward, backward, optimizer, logging) and nothing of set-up; the first step,
        which has no previous end, is never counted.
        """

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.dataloader: Any = None  # the train DataLoader, for what the run trained on

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.dataloader = kwargs.get("train_dataloader")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

        def steps(self, warmup: int) -> list[float]:
            """Durations of the steps after the first `warmup` steps."""
            durations = [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]  # step 2 onwards
            return durations[max(0, warmup - 1) :]

    return StepTimer()


# ---------------------------------------------------------------- child processes

RESULT = "BENCHMARK-RESULT "


def emit(result: dict[str, Any]) -> None:
    """In a child process: hand the result to the parent (the last line that starts with RESULT)."""
    print(RESULT + json.dumps(result, default=str), flush=True)


def run_child(script: Path, argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[dict[str, Any], int]:
    """Run `script` in a fresh Python process; return what it emitted and its peak RSS in bytes.

    A fresh process per measurement gives each one a clean allocator, no warm caches of an
    earlier run, and its own peak RSS, which `os.wait4` reports for that child alone
    (`RUSAGE_CHILDREN` would give the largest child so far).
    """
    import subprocess

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), *argv],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=REPO,
        )
        stdout = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{script.name} {' '.join(argv)} failed ({proc.returncode}):\n{err.read()[-3000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    if not lines:
        raise RuntimeError(f"{script.name} {' '.join(argv)} emitted no result:\n{stdout[-2000:]}")
    return json.loads(lines[-1][len(RESULT) :]), usage.ru_maxrss * 1024  # Linux reports KiB
