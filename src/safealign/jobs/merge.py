"""`recipes/merge.py`: merge the LoRA adapters of finished runs with PEFT's `add_weighted_adapter`.

Why: P-SACPO (Wachi et al. 2024) merges a helpfulness-aligned and a safety-aligned model
linearly, θ = q·θ_A + (1-q)·θ_B, and a sweep over q traces a helpful-harmless front without
training again. With LoRA runs on one base model that is the base plus q·ΔW_A + (1-q)·ΔW_B,
which PEFT's `cat` combination gives exactly (its rank is the sum of the runs' ranks); PEFT's
`linear` mixes the A and B matrices separately (ΔW = (Σ√(w_i s_i)·B_i)(Σ√(w_i s_i)·A_i), with
cross terms between runs), and `svd`, `ties`, `dare_*`, ... are PEFT's other combinations.

Runs of one chain merge too (P-SACPO as published: stage 1 for helpfulness, stage 2 for safety
continued from stage 1 with `model.adapter`): stage 2 trained stage 1's LoRA values further, so its
adapter is Δ1+Δ2 from the base model, and `cat` with weights q, 1-q gives Δ1 + (1-q)·Δ2. The merged
run is then scored against the start of the chains (`settings.runs.common_start`: for stage 1 and 2,
stage 1's own reference), which its config.yaml names as `model.adapter` and whose adapter it holds
in `adapter/ref/`, as a chained run does; at q=1 it evaluates exactly as stage 1.

The merged run directory is a run like a training run's, so `recipes/evaluate.py` and
`recipes/compare.py` accept it: run A's `config.yaml` (base model, template, data, β),
`adapter/`, `merge.json` (runs, weights, combination), `versions.json`, `status.json`, and
`eval.json` from the held-out evaluation that follows (`eval.after_train`), and `.hydra/` (the
merge's overrides), written once the directory is claimed as a training run's is.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from .. import io
from ..errors import RunDirError
from ..rundir import UNFINISHED, RunDir, package_versions
from ..settings.runs import MergeSettings, parse_merge

log = logging.getLogger("safealign")
MERGE_FILE = "merge.json"


def run(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Merge `runs` into `out_dir` and evaluate the result; returns merge.json's record (with `heldout`).

    `out_dir` is claimed as training claims its run directory (`RunDir.claim`): a finished run
    is replaced only with `overwrite=true`, an unfinished one with checkpoints too (a merge
    cannot resume it), and a directory in use is refused. Nothing in it is touched before.
    """
    s = parse_merge(cfg)  # every value checked, the runs included: nothing is loaded yet
    check_apart(out_dir, s.runs)
    run_dir = RunDir(out_dir)
    with run_dir.lock():
        _, clear = run_dir.claim(OmegaConf.to_container(cfg, resolve=True), None, s.overwrite,
                                 overwrite_key="overwrite", resumable=False)  # fmt: skip
        from .evaluate import after_training
        from .training import status_of

        # An unfinished run without checkpoints lost nothing by the claim's rules; its outputs
        # would only be mistaken for the merge's.
        if clear or run_dir.state() in UNFINISHED:
            run_dir.clear()
        run_dir.mark_running()
        run_dir.write_hydra_files(cfg)
        with status_of(run_dir, main=True):
            record = merge(s, run_dir)
        heldout = after_training(run_dir.path, s.eval)
        if heldout is not None:
            record["heldout"] = heldout["dimensions"]
    return record


def check_apart(out_dir: str | Path, runs: list[str]) -> None:
    """Refuse an output directory that is one of the runs, lies inside one, or holds one (real paths,
    symlinks followed): merging there would remove a run's outputs, or a run itself, before it is read."""
    out = Path(out_dir).expanduser().resolve()
    for i, run in enumerate(runs):
        path = Path(run).expanduser().resolve()
        if out == path or path in out.parents:
            where = "is" if out == path else "lies inside"
        elif out in path.parents:
            where = "holds"
        else:
            continue
        raise RunDirError(
            f"hydra.run.dir={out_dir} {where} runs[{i}]={run}: the merge would replace the runs it reads; "
            "choose another hydra.run.dir, outside every run"
        )


def merged_config(s: MergeSettings) -> str:
    """runs[0]'s config.yaml, with `model.adapter` naming the start of the runs' chains (`s.start`, null for
    the base model): `recipes/evaluate.py` then scores the merge against that start, whose adapter the merged
    run holds in adapter/ref/ as a chained run does (`evaluation.report.reference_adapter`)."""
    text = (RunDir(s.runs[0]) / RunDir.CONFIG).read_text(encoding="utf-8")
    saved = yaml.safe_load(text)
    if saved["model"].get("adapter") == s.start:
        return text  # runs trained apart from the base model: run A's config as it is
    saved["model"]["adapter"] = s.start
    return yaml.safe_dump(saved, sort_keys=False, allow_unicode=True)


def merge(s: MergeSettings, run_dir: RunDir) -> dict[str, Any]:
    """Load the base model once, every run's adapter onto it, and save their weighted combination."""
    from peft import PeftModel

    from ..evaluation.report import load_run
    from ..evaluation.scoring import TRL_REF_ADAPTER, release_memory
    from ..modeling import load_model

    first = load_run(s.runs[0])  # run A's checked settings: its base model and dtype
    # Unquantized (LoRA weights are merged, not the base), and bare: every run's adapter, a chained
    # stage's too, is a delta from the base model.
    base = load_model(dataclasses.replace(first.model, adapter=None), "none", first.peft)
    names = [f"run{i}" for i in range(len(s.runs))]
    model = PeftModel.from_pretrained(base.model, str(RunDir(s.runs[0]) / RunDir.ADAPTER), adapter_name=names[0])
    for name, path in zip(names[1:], s.runs[1:], strict=True):
        model.load_adapter(str(RunDir(path) / RunDir.ADAPTER), adapter_name=name)
    extra = {} if s.density is None else {"density": s.density}
    # Named "default", so that save_pretrained writes it at the top of adapter/ as training does.
    model.add_weighted_adapter(names, s.weights, "default", combination_type=s.combination_type, **extra)
    for name in names:
        model.delete_adapter(name)
    with io.atomic_dir(run_dir / RunDir.ADAPTER) as tmp:
        model.save_pretrained(str(tmp), selected_adapters=["default"])
        base.tokenizer.save_pretrained(str(tmp))
        if s.reference is not None:  # the merged run's reference, held as a chained run holds its own
            shutil.copytree(s.reference, tmp / TRL_REF_ADAPTER)
    record = {"runs": [str(Path(r).expanduser().resolve()) for r in s.runs], "weights": s.weights, "q": s.q,
              "combination_type": s.combination_type, "density": s.density,
              # each run's chain (itself, what it continued, ..., the base model) and the merge's reference
              "chains": s.chains, "reference": s.start,
              "reference_copied_from": None if s.reference is None else str(s.reference)}  # fmt: skip
    io.write_text(run_dir / RunDir.CONFIG, merged_config(s))
    io.write_json(run_dir / MERGE_FILE, record)
    io.write_json(run_dir / RunDir.VERSIONS, package_versions())
    del model, base
    release_memory()
    log.info("merged %s with weights %s (%s) into %s", ", ".join(s.runs), s.weights, s.combination_type, run_dir)
    return record
