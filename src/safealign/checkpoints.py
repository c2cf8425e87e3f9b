"""Trainer checkpoints of a run: the newest complete one, and whether one loads, before resuming from it.

Why apart from `rundir`: reading a checkpoint's files back (JSON, safetensors headers and
tensors, torch zip archives' CRCs) is its own concern, and a half-written or corrupt
checkpoint must never be resumed from silently: the previous good one is used, with a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import RunDirError

log = logging.getLogger("safealign")


def last_checkpoint(checkpoints: str | Path) -> Path | None:
    """The newest complete Trainer checkpoint (one with its trainer_state.json), skipping a half-written one."""
    checkpoints = Path(checkpoints)
    if not checkpoints.is_dir():
        return None
    found = [p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if (path / "trainer_state.json").is_file():
            return path
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why a Trainer checkpoint cannot be loaded, or None when every file in it reads back whole.

    JSON files must parse, safetensors files must have a readable header and tensors, and
    torch's `.pt`/`.pth`/`.bin` files (zip archives) must pass their CRC checks: no pickle is
    unpickled here.
    """
    import zipfile

    if not (path / "trainer_state.json").is_file():
        return "no trainer_state.json"
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            if file.suffix == ".json":
                json.loads(file.read_text(encoding="utf-8"))
            elif file.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(file), framework="pt") as weights:
                    for key in weights.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                        weights.get_slice(key)[:]
            elif file.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(file) as archive:
                    bad = archive.testzip()
                if bad is not None:
                    return f"{file.name}: member {bad} is corrupt"
        except Exception as err:  # truncated or garbled files raise many types
            return f"{file.name}: {type(err).__name__}: {err}"
    return None


def usable_checkpoint(checkpoint: Path, explicit: bool) -> Path:
    """`checkpoint` if it loads, else the newest earlier one that does (with a warning naming each bad one).

    An explicitly requested checkpoint (`train.resume=PATH`) is never swapped for another.
    """
    problem = checkpoint_problem(checkpoint)
    if problem is None:
        return checkpoint
    if explicit:
        raise RunDirError(f"train.resume={checkpoint}: the checkpoint cannot be loaded ({problem})")
    def step(p: Path) -> int:
        return int(p.name.split("-")[-1])

    found = [p for p in checkpoint.parent.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    earlier = sorted((p for p in found if step(p) < step(checkpoint)), key=step, reverse=True)
    log.warning("checkpoint %s cannot be loaded (%s)", checkpoint, problem)
    for candidate in earlier:
        problem = checkpoint_problem(candidate)
        if problem is None:
            log.warning("resuming from the previous good checkpoint, %s", candidate.name)
            return candidate
        log.warning("checkpoint %s cannot be loaded either (%s)", candidate, problem)
    raise RunDirError(
        f"{checkpoint.parent.parent}: no checkpoint of this run can be loaded (newest: {checkpoint.name}); "
        "set train.overwrite=true to start again"
    )
