"""`recipes/iterate.py`: iterative safety DPO, round after round.

Each round r = 1..R is a run directory ITER/round_r: the policy of round r-1 samples
`iterate.k` responses to each of the round's prompts (`samples.jsonl`), the judges score every
sample, the preference rule turns each prompt's samples into one pair or a named drop, and
`jobs.dpo.run` trains on the pairs, continuing round r-1's adapter, then evaluates the round on
the held-out prompts (held-out preference accuracy; harmless rate, mean reward and cost by the
judges, greedy generations). Round 0 is the starting policy.

Why each phase is saved as it finishes (`round.json`): a killed iteration resumes where it
stopped, never sampling or judging a round twice (sampling is random: a second draw would be
other pairs), and training resumes from its last checkpoint, as every DPO run does.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import io
from ..errors import IterationError, RunDirError
from ..iteration.rounds import ROUND_STATE, ROUNDS_CSV, ROUNDS_MD, ROUNDS_PNG, SAMPLES, round_dir, to_markdown
from ..rundir import RunDir
from ..settings import TrainSettings, parse_train
from ..settings.iterate import IterateConfig, check_judges, lam_values, parse_iterate

log = logging.getLogger("safealign")
ITERATE_CONFIG = "iterate.yaml"  # the iteration directory's record of its config (not config.yaml: no run)
RESUME_MAY_CHANGE = ("rounds",)  # iterate keys a rerun may change: more rounds continue a finished iteration


def split_config(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the iterate block, the DPO config of the other groups), as plain data."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    block = plain.pop("iterate", None)
    return block, plain


def parse(cfg: DictConfig) -> tuple[IterateConfig, TrainSettings, dict[str, Any]]:
    """Every value checked (the iterate block and the DPO groups) before anything loads."""
    it = parse_iterate(cfg.get("iterate"))
    _, dpo = split_config(cfg)
    settings = parse_train(OmegaConf.create(dpo))
    check_judges(it.judges, settings.model.name_or_path, dpo.get("eval", {}).get("judge") or {})
    return it, settings, dpo


def run(cfg: DictConfig, iter_dir: str | Path, callbacks: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Run (or resume) every round into `iter_dir`; returns the rounds table's rows."""
    from ..iteration.judges import judge_paths
    from ..iteration.rounds import write_rounds

    it, settings, dpo = parse(cfg)
    iter_dir = Path(iter_dir)
    record_config(iter_dir, cfg)
    judges = judge_paths(it.judges)  # the tiny judges train here on first use
    prompts = source_prompts(it, settings)
    lams = lam_values(it)
    for r in range(1, it.rounds + 1):
        run_round(it, dpo, iter_dir, r, judges, prompts, lams[r - 1], callbacks)
        write_rounds(iter_dir, lams)
    rows = write_rounds(iter_dir, lams)
    log.info("iteration %s: %d rounds\n%s\nwrote %s, %s, %s and round_1 .. round_%d/", iter_dir, it.rounds,
             to_markdown(rows), iter_dir / ROUNDS_CSV, iter_dir / ROUNDS_MD, iter_dir / ROUNDS_PNG,
             it.rounds)  # fmt: skip
    return rows


def record_config(iter_dir: Path, cfg: DictConfig) -> None:
    """Write ITER/iterate.yaml; a rerun into the directory must have the same config (but `iterate.rounds`)."""
    block, dpo = split_config(cfg)
    path = iter_dir / ITERATE_CONFIG
    if path.is_file():
        saved = io.read_yaml(path) or {}
        old = {**(saved.get("iterate") or {}), **dict.fromkeys(RESUME_MAY_CHANGE)}
        new = {**block, **dict.fromkeys(RESUME_MAY_CHANGE)}
        groups = {k for k in dpo.keys() | saved.keys() if k != "iterate" and dpo.get(k) != saved.get(k)}
        changed = sorted({f"iterate.{k}" for k in old.keys() | new.keys() if old.get(k) != new.get(k)} | groups)
        if changed:
            raise RunDirError(f"{iter_dir} holds an iteration started with another config ({', '.join(changed)} "
                              "differ); rerun with the same overrides to resume it, or choose another "
                              "hydra.run.dir")  # fmt: skip
    io.write_text(path, OmegaConf.to_yaml({**dpo, "iterate": block}))


def source_prompts(it: IterateConfig, settings: TrainSettings) -> list[str]:
    """Every prompt the rounds may draw from: the train split's distinct prompts, or the prompt file's."""
    from ..iteration.prompts import read_prompt_file

    if it.prompts.source != "train":
        return read_prompt_file(it.prompts.source)
    from ..data.loading import load_split

    rows = load_split(settings.data, "train")
    return list(dict.fromkeys(row["prompt"] for row in rows.rows if settings.filters.reason(row) is None))


def round_config(it: IterateConfig, dpo: dict[str, Any], iter_dir: Path, r: int,
                 judges: dict[str, str | None]) -> DictConfig:  # fmt: skip
    """Round r's DPO config: the adapter it continues, its held-out generation judged by the loop's judges."""
    plain = OmegaConf.to_container(OmegaConf.create(dpo), resolve=True)
    assert isinstance(plain, dict)
    if it.reference == "previous" and r > 1:  # TRL copies the starting adapter as the frozen reference
        plain["model"]["adapter"] = str(round_dir(iter_dir, r - 1).resolve())
    ev = plain["eval"]
    ev["generate"], ev["max_prompts"] = True, it.heldout_prompts
    for role in ("reward", "cost", "guard"):
        ev["judge"][role]["path"] = judges[role]
    return OmegaConf.create(plain)


def policy_adapter(it: IterateConfig, dpo: dict[str, Any], iter_dir: Path, r: int) -> str | None:
    """The adapter of round r's sampling policy (round r-1's), None for a starting model without one."""
    return str(round_dir(iter_dir, r - 1).resolve()) if r > 1 else dpo["model"].get("adapter")


def run_round(
    it: IterateConfig, dpo: dict[str, Any], iter_dir: Path, r: int, judges: dict[str, str | None],
    prompts: Sequence[str], lam: float, callbacks: Sequence[Any],
) -> None:  # fmt: skip
    """Round r, from its last finished phase on: sampling, judging (and pairs), training, evaluation."""
    from ..iteration.prompts import round_prompts

    path = round_dir(iter_dir, r)
    state = io.read_json_or_none(path / ROUND_STATE) or {"round": r, "seconds": {}}
    if state.get("done"):
        log.info("round %d/%d: finished earlier, skipped (%s)", r, it.rounds, path)
        return
    cfg = round_config(it, dpo, iter_dir, r, judges)
    settings = parse_train(cfg)
    seconds = state.setdefault("seconds", {})
    if "sampling" not in seconds:
        chosen = round_prompts(prompts, r, it.prompts.per_round, it.prompts.fresh, it.prompts.seed)
        log.info("round %d/%d: sampling %d responses to each of %d prompts", r, it.rounds, it.k, len(chosen))
        start = time.perf_counter()
        samples = sample(settings, policy_adapter(it, dpo, iter_dir, r), chosen, it, seed=settings.train["seed"] + r)
        io.write_jsonl(path / SAMPLES, ({"prompt": p, "samples": [{"response": s} for s in group]}
                                        for p, group in zip(chosen, samples, strict=True)))  # fmt: skip
        seconds["sampling"] = time.perf_counter() - start
        state["prompts"] = len(chosen)
        io.write_json(path / ROUND_STATE, state)
    if "judging" not in seconds:
        log.info("round %d/%d: judging the samples", r, it.rounds)
        start = time.perf_counter()
        state["pairs"] = judge_and_pick(path, settings, it, lam)
        seconds["judging"] = time.perf_counter() - start
        io.write_json(path / ROUND_STATE, state)
    pairs = round_pairs(path, settings, it, r)
    run = RunDir(path)
    if run.state() != "done":
        log.info("round %d/%d: DPO on %d pairs (reference: %s)", r, it.rounds, len(pairs.train), it.reference)
        start = time.perf_counter()
        from . import dpo as dpo_job

        start_from = round_dir(iter_dir, r - 1) if it.reference == "initial" and r > 1 else None
        dpo_job.run(cfg, path, callbacks, pairs=pairs, start_from=start_from)
        evaluation = io.read_json_or_none(run / RunDir.EVAL) or {}
        seconds["evaluation"] = evaluation.get("seconds")
        seconds["training"] = time.perf_counter() - start - (seconds["evaluation"] or 0.0)
    elif not (run / RunDir.EVAL).is_file():  # trained, killed before its evaluation finished
        from ..evaluation.report import evaluate_run

        start = time.perf_counter()
        evaluate_run(path, settings.eval)
        seconds["evaluation"] = time.perf_counter() - start
    add_round0_win_rate(iter_dir, path, settings)
    metrics = io.read_json_or_none(run / RunDir.METRICS) or {}
    io.write_json(run / RunDir.METRICS, {**metrics, "iterate": {"round": r, "seconds": seconds,
                                                                "pairs": state.get("pairs")}})  # fmt: skip
    state["done"] = True
    io.write_json(path / ROUND_STATE, state)


def sample(settings: TrainSettings, adapter: str | None, prompts: Sequence[str], it: IterateConfig,
           seed: int) -> list[list[str]]:  # fmt: skip
    """`it.k` responses of the policy (the base model with `adapter`) to each prompt, with the run's template."""
    from ..evaluation.generation import _prompt_ids
    from ..evaluation.scoring import place, release_memory
    from ..iteration.sampling import sample_responses
    from ..modeling import load_model, load_tokenizer
    from ..templates import render_prompt

    tokenizer = load_tokenizer(settings.model)
    loaded = load_model(dataclasses.replace(settings.model, adapter=adapter), settings.quant, settings.peft, tokenizer)
    model = place(loaded.model)
    ids = [_prompt_ids(loaded.tokenizer, render_prompt(settings.template, p)) for p in prompts]
    out = sample_responses(model, loaded.tokenizer, ids, it.k, temperature=it.temperature, top_p=it.top_p,
                           max_new_tokens=it.max_new_tokens, batch_size=it.batch_size, seed=seed,
                           device=next(model.parameters()).device)  # fmt: skip
    del model, loaded
    release_memory()
    return out


def judge_and_pick(path: Path, settings: TrainSettings, it: IterateConfig, lam: float) -> dict[str, Any]:
    """Score every sample of samples.jsonl, apply the rule, write the scores and each prompt's pair or drop
    back into it; returns the pair report (`rules.tally`)."""
    from ..iteration.judges import score_samples
    from ..iteration.rules import Judged, pick, tally

    rows = io.read_jsonl(path / SAMPLES)
    scored = score_samples(settings.eval.judge, [row["prompt"] for row in rows],
                           [[s["response"] for s in row["samples"]] for row in rows])  # fmt: skip
    results = []
    for row, records in zip(rows, scored, strict=True):
        row["samples"] = records
        judged = [Judged(rec["response"], reward=rec.get("reward"), cost=rec.get("cost"), unsafe=rec.get("unsafe"))
                  for rec in records]  # fmt: skip
        result = pick(judged, it.rule, lam)
        results.append(result)
        row["pick"] = dataclasses.asdict(result) if not isinstance(result, str) else {"dropped": result}
    io.write_jsonl(path / SAMPLES, rows)
    return {"rule": it.rule, "lam": lam if it.rule == "lagrangian" else None, **tally(results)}


def round_pairs(path: Path, settings: TrainSettings, it: IterateConfig, r: int) -> Any:
    """The round's DPO pairs from samples.jsonl (the held-out pairs from the data, as any run's); an
    IterationError naming every drop reason and its count when no pair is left."""
    from ..iteration.rules import DROP_REASONS
    from ..objectives import Pair
    from ..pairs import PairReport
    from .training import Pairs, load_pairs

    rows = io.read_jsonl(path / SAMPLES)
    train, report = [], PairReport()
    for row in rows:
        choice = row["pick"]
        if "dropped" in choice:
            report.dropped[choice["dropped"]] += 1
            continue
        chosen, rejected = row["samples"][choice["chosen"]], row["samples"][choice["rejected"]]
        margin = it.margin * float(choice["margin"])  # judge units times iterate.margin: the DPO offset
        train.append(Pair(row["prompt"], chosen["response"], rejected["response"], margin, 0))
        label = {True: "unsafe", False: "safe", None: "undecided"}
        report.kept += 1
        report.by_safety[f"{label[choice['chosen_unsafe']]}/{label[choice['rejected_unsafe']]}"] += 1
    if it.margin:
        report.set_margins([p.margin for p in train])
    if not train:
        reasons = "; ".join(f"{reason}: {n} ({DROP_REASONS.get(reason, reason)})"
                            for reason, n in report.dropped.most_common())  # fmt: skip
        message = (f"round {r}: iterate.rule={it.rule} dropped every one of the {len(rows)} prompts' samples, so there "
                   f"is nothing to train on. Drops by reason: {reasons}. Draw more distinct samples (iterate.k, "
                   "iterate.temperature, iterate.max_new_tokens), more prompts (iterate.prompts.per_round), or "
                   f"use judges that tell the samples apart ({path / SAMPLES} holds every score)")  # fmt: skip
        RunDir(path).write_status("failed", error=f"IterationError: {message}")
        raise IterationError(message)
    heldout = load_pairs(settings)
    return Pairs(train, report, heldout.test, heldout.test_report)


def add_round0_win_rate(iter_dir: Path, path: Path, settings: TrainSettings) -> None:
    """Round r's held-out win rate against round 0 (the reference side of round 1's generations: the same
    prompts, greedy, the starting policy), with Wilson intervals, added to its eval.json under `iterate`."""
    from ..evaluation.metrics import win_rate_cis, win_rates

    first = round_dir(iter_dir, 1) / RunDir.GENERATIONS
    own = path / RunDir.GENERATIONS
    evaluation = io.read_json_or_none(path / RunDir.EVAL)
    if not (first.is_file() and own.is_file() and isinstance(evaluation, dict)):
        return
    round0 = [row["reference"] for row in io.read_jsonl(first)]
    policy = [row["policy"] for row in io.read_jsonl(own)]
    if len(round0) != len(policy):
        return
    evaluation["iterate"] = {"win_rate_vs_round0": win_rates(policy, round0, settings.eval.judge),
                             "win_rate_vs_round0_ci": win_rate_cis(policy, round0, settings.eval.judge)}  # fmt: skip
    io.write_json(path / RunDir.EVAL, evaluation)
