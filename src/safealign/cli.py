"""What the recipes share: compose configs, check overrides early, and turn safealign errors into one line.

Light by design: importing this module (and calling `main`'s override check) loads Hydra
and OmegaConf only, so `--help` and a config typo answer without importing torch.
"""

from __future__ import annotations

import atexit
import copy
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import SafealignError

log = logging.getLogger("safealign")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the repository's conf/ (pip install -e .)


def run_stamp() -> str:
    """The run directory's timestamp: rank 0's, on every rank of a distributed launch.

    Hydra's `${now:}` is read by each process on its own, so two ranks could name different
    directories a second apart; this resolver broadcasts rank 0's time instead.
    """
    stamp = os.environ.get("SAFEALIGN_RUN_STAMP")
    if stamp:
        return stamp
    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        PartialState()  # joins the process group that the launcher set up
        stamp = broadcast_object_list([stamp])[0]
    os.environ["SAFEALIGN_RUN_STAMP"] = stamp
    return stamp


OmegaConf.register_new_resolver("safealign_run_stamp", run_stamp, use_cache=True, replace=True)


def compose(config_name: str = "dpo", overrides: Sequence[str] = (), conf_dir: str | Path | None = None) -> DictConfig:
    """The config a recipe would see for `overrides`, composed in-process (for tests, benchmarks, notebooks).

    Hydra composes the group choices (`objective=harmless`, cached: building the defaults
    tree is what costs); plain key overrides (`train.beta=0.05`, `+train.x=1`, `~train.x`)
    are then applied to a copy by Hydra's own override code, exactly as a full compose would.
    """
    conf = Path(conf_dir or CONF_DIR).resolve()
    choices, keys = [], []
    for override in overrides:  # group choices and top-level keys have no dot in their key
        key = override.split("=", 1)[0].lstrip("+~")
        (choices if "." not in key or key.startswith("hydra.") else keys).append(override)
    cfg = copy.deepcopy(_compose_choices(config_name, tuple(choices), str(conf)))
    if keys:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.override_parser.overrides_parser import OverridesParser

        ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides(keys), cfg)
    return cfg


@functools.lru_cache(maxsize=32)
def _compose_choices(config_name: str, choices: tuple[str, ...], conf_dir: str) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.utils import JobRuntime

    # Inside a running recipe (the evaluation composes the run's saved overrides), keep the
    # running job's name: Hydra's initialize would set it to its own, and the next job of a
    # sweep would then log to app.log instead of dpo.log.
    running = JobRuntime.instance().conf.get("name", "UNKNOWN_NAME")
    job_name = config_name if running == "UNKNOWN_NAME" else running
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a recipe's Hydra app, whose search path is conf/ already
        return hydra_compose(config_name, overrides=list(choices))
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3", job_name=job_name):
        return hydra_compose(config_name, overrides=list(choices))


# `train.report_to` integrations whose runs finish at interpreter exit: all but these two. TensorBoard's
# writers are closed when training ends; "none" is none.
NO_EXIT_WORK = ("tensorboard", "none")
_trackers: list[str] = []  # what the runs of this process report to (`note_trackers`), for `exit_when_done`


def note_trackers(cfg: Any) -> None:
    """Remember `train.report_to` of a run this process starts: an experiment tracker (W&B, MLflow, ...)
    finishes and syncs its run at interpreter exit, which the fast exit must then not skip."""
    try:
        report_to = OmegaConf.select(cfg, "train.report_to", default=None) if OmegaConf.is_config(cfg) else None
        if OmegaConf.is_config(report_to):
            report_to = OmegaConf.to_container(report_to, resolve=True)
    except Exception:  # an interpolation that does not resolve: the job's own checks say so
        return
    names = [report_to] if isinstance(report_to, str) else report_to if isinstance(report_to, list) else []
    _trackers.extend(str(n) for n in names if str(n) not in NO_EXIT_WORK and str(n) not in _trackers)


def orderly_exit_reason() -> str | None:
    """Why the process must exit the usual way (interpreter teardown), or None for the fast exit."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "a distributed run: torch.distributed tears down its process group"
    if os.environ.get("SAFEALIGN_FAST_EXIT", "1") == "0":
        return "SAFEALIGN_FAST_EXIT=0"
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return "a tracer or profiler writes its data at exit"
    trackers = list(_trackers)
    if "all" in trackers:  # every installed integration (transformers' own reading of "all")
        try:
            from transformers.integrations.integration_utils import get_available_reporting_integrations

            trackers = [t for t in trackers if t != "all"] + get_available_reporting_integrations()
        except Exception:
            pass  # "all" stays: the usual exit
    trackers = [t for t in trackers if t not in NO_EXIT_WORK]
    if trackers:
        return f"train.report_to={trackers}: a tracker finishes its run at exit"
    if not hasattr(atexit, "_run_exitfuncs"):
        return "this Python cannot run the atexit handlers ahead of the exit"
    busy = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if busy:
        return f"threads still at work ({', '.join(busy)}): Python waits for them"
    return None


def exit_when_done(main: Callable[[], Any]) -> None:
    """Run a recipe's Hydra `main`, then end the process at once, skipping interpreter teardown.

    Why: once torch, transformers, TRL and bitsandbytes are loaded, Python's orderly shutdown
    (freeing every module and object one by one) takes about 2.3 s on two CPU cores, 7% of the
    default run, after every file has been written. Nothing of safealign's is left to do by
    then: run files are written atomically, TensorBoard writers are closed when training ends,
    and the log files are flushed here.

    Nothing of another library's is skipped: every `atexit` handler runs first, in the usual
    order (torch, datasets, huggingface_hub, tqdm and others register about 17 during a run,
    taking about 0.04 s together; a tracker's "finish the run" is one). The usual exit is kept
    (`orderly_exit_reason`) whenever `train.report_to` names an integration other than
    tensorboard (a tracker may also finish in threads or finalizers), while a non-daemon thread
    is still at work, for a distributed run (WORLD_SIZE > 1, so that torch.distributed tears
    down its process group), under a tracer or profiler (coverage, cProfile: they write their
    data at exit), with SAFEALIGN_FAST_EXIT=0 (the test suite, which runs recipes in its own
    process), and for an uncaught exception.
    """
    code: Any = 0
    try:
        main()
    except SystemExit as err:
        code = err.code
    if orderly_exit_reason() is not None:
        if code not in (0, None):
            sys.exit(code)
        return
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what `sys.exit("message")` would have printed
    atexit._run_exitfuncs()  # every handler, as the usual exit would (logging's shutdown last: registered first)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def debug() -> bool:
    return os.environ.get("SAFEALIGN_DEBUG", "") not in ("", "0")


def fail(message: str, code: int = 1) -> None:
    print(f"safealign: error: {message}", file=sys.stderr)
    sys.exit(code)


def check_argv(config_name: str, argv: Sequence[str] | None = None) -> None:
    """Before Hydra runs: a misspelled group choice or key exits with the closest valid name."""
    from .settings.overrides import check_overrides

    try:
        check_overrides(sys.argv[1:] if argv is None else argv, CONF_DIR, config_name)
    except SafealignError as err:
        if debug():
            raise
        fail(str(err))


def run_recipe(job: Callable[[DictConfig, Path], Any], cfg: DictConfig, status: bool = False) -> Any:
    """Run `job(cfg, run_dir)` in Hydra's output directory. A SafealignError prints its message alone
    and exits non-zero.

    In a sweep (`-m`), a failed run is logged and the sweep goes on with the next run; with
    `status` (training runs), a run that failed before it wrote a status of its own (a config
    or data error) is marked failed with the error, so the sweep's summary and `compare.py`
    list it. SAFEALIGN_DEBUG=1 shows the traceback instead.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    note_trackers(cfg)  # before the job: a tracker that started a run finishes it at exit, even after an error
    try:
        return job(cfg, run_dir)
    except Exception as err:
        if debug():
            raise
        stopped = getattr(err, "exit_code", 1) != 1  # Ctrl-C or SIGTERM: the user stops the whole sweep
        if hydra_cfg.mode == RunMode.MULTIRUN and not stopped:  # one failing run must not stop the sweep
            log.error("run %s failed: %s", run_dir, err, exc_info=not isinstance(err, SafealignError))
            if status:
                _record_failure(run_dir, cfg, err)
            return None
        if not isinstance(err, SafealignError):
            raise
        fail(str(err), getattr(err, "exit_code", 1))


def _record_failure(run_dir: Path, cfg: DictConfig, err: BaseException) -> None:
    """Mark a sweep run that failed before it wrote a status of its own (a config or data error) failed,
    with its overrides; a directory that holds a run's status is never rewritten."""
    from .errors import RunDirError
    from .rundir import RunDir

    run = RunDir(run_dir)
    if isinstance(err, RunDirError) or run.state() is not None:
        return  # a refused directory, or one whose own status already says what happened
    run.write_hydra_files(cfg)
    run.write_status("failed", error=f"{type(err).__name__}: {err}")
