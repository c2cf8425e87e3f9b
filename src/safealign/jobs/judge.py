"""`recipes/judge.py`: judge a JSON Lines file of generations from any model.

Why: a comparison must also hold models safealign did not train (a paper's released
generations, another library's policy), judged exactly as the runs' own generations are: by
the same judges (`eval.judge`, e.g. `eval/judge=beaver-7b-unified`) and the same refusal
classifier. Writes OUT/judged.jsonl and OUT/judge_summary.json. With no judge configured it
loads no model and imports no torch.

What the files hold, and the rules that keep them right:

- judged.jsonl: every input row, with its columns as they were, plus this recipe's verdicts
  (`refused`, `unsafe`, and each configured judge's `reward`, `cost`, `reward_unsafe`, ...;
  `VERDICTS`). The numbers of judge_summary.json come from the verdicts alone: an input column
  with a verdict's name (a `reward` of another library's reward model, a judged.jsonl judged
  again) is kept as `input_<name>` (`input_reward`), never read as a verdict; where a row of
  the file holds that name already (a judged.jsonl judged again), `input_input_<name>` in every
  row, and so on.
- Model groups: the `model` column, when present, must be a JSON string (a number, null or a
  list would group ambiguously: 1 and "1", null and "None"); the error names the line. Rows
  are grouped by that exact string. A file with no `model` column at all is one group,
  labelled `all`; a file where only some rows have one is refused, naming the first line
  without it (its rows would need a label that could collide with a model's name).
- Rows are judged `chunk` at a time and each judged chunk is appended to judged.jsonl at
  once, so a crash late in judging keeps the rows judged before it (each chunk loads the
  judges again, one at a time as `judge_responses` does: `chunk` trades load time against the
  work a crash can lose); judge_summary.json is written last, and marks a finished judging.
  Any string JSON can hold is written (a lone surrogate, `"\\ud800"`, is written escaped; a
  judge's tokenizer gets U+FFFD in its place).
- The output directory is claimed as training claims its run directory: locked (`.lock`)
  while in use; one that already holds judged.jsonl or judge_summary.json (a finished or
  crashed judging) is refused unless `overwrite=true`, which removes both first; `.hydra/`
  is written only once the directory is claimed (conf/judge.yaml sets
  `hydra.output_subdir: null`), so a refused command leaves a finished directory as it was.
  The generations file itself must not be one of the output files.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .. import io
from ..bootstrap import PERCENTILE, WILSON, rate_ci
from ..errors import DataError, RunDirError
from ..evaluation.judges import any_judge, judge_responses
from ..evaluation.metrics import side_cis, side_metrics
from ..evaluation.refusal import json_objects
from ..evaluation.refusal_run import classifier_name, classify_refusals
from ..rundir import RunDir
from ..settings.judge import JudgeSettings, parse_judge

log = logging.getLogger("safealign")

JUDGED = "judged.jsonl"
SUMMARY = "judge_summary.json"
NO_MODEL = "all"  # the group of a file without a `model` column
INPUT_PREFIX = "input_"  # an input column with a verdict's name is kept under this prefix
# Every key this recipe writes into a judged row: the refusal classifier's and judge_responses' own.
VERDICTS = ("refused", "unsafe", "reward", "reward_unsafe", "cost", "cost_unsafe", "verdict", "guard_output",
            "guard_unsafe", "refusal_output", "refusal_fallback", "refusal_score")  # fmt: skip


def _json(value: Any) -> str:
    return io.json_text(value)[:80]


def read_generations(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file of generations; errors name the file, line and column.

    Input columns named like a verdict are renamed `input_<name>`; `model` must be text, in
    every row or in none (see the module docstring).
    """
    rows: list[dict[str, Any]] = []
    try:
        objects = list(json_objects(path, "prompt and response"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"generations={path}: cannot read it as UTF-8 text ({err})") from err
    first_with_model: int | None = None
    first_without_model: int | None = None
    for n, row in objects:
        for column in ("prompt", "response"):
            if column not in row:
                raise DataError(
                    f"{path}, line {n}: no '{column}' column (columns: {', '.join(row) or 'none'}); "
                    "expected prompt and response, and optionally model"
                )
            if not isinstance(row[column], str):
                raise DataError(f"{path}, line {n}, column '{column}': expected text, got {row[column]!r:.80}")
        if "model" in row:
            if not isinstance(row["model"], str):
                raise DataError(
                    f"{path}, line {n}, column 'model': expected a model name as a JSON string, got "
                    f"{_json(row['model'])}; put it in quotes, so that rows group by their name"
                )
            first_with_model = n if first_with_model is None else first_with_model
        else:
            first_without_model = n if first_without_model is None else first_without_model
        if first_with_model is not None and first_without_model is not None:
            raise DataError(
                f"{path}, line {first_without_model}: no 'model' column, but line {first_with_model} has one; "
                "give every row a model (it groups the rows of judge_summary.json), or none"
            )
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows; expected JSON Lines with prompt and response")
    return _keep_input_columns(rows)


def _keep_input_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with each column named like a verdict renamed `input_<name>` (or `input_input_<name>`, ...,
    the first name no row holds), so that it cannot count as a verdict.

    The new name is chosen once for the file, not row by row: in a judged file judged again, where
    some rows hold `input_refused` already, every row's `refused` becomes `input_input_refused`, so
    one column name means one thing in every row.
    """
    columns = {key for row in rows for key in row}
    renames: dict[str, str] = {}
    for key in VERDICTS:
        if key in columns:
            new = INPUT_PREFIX + key
            while new in columns:
                new = INPUT_PREFIX + new
            renames[key] = new
    if not renames:
        return rows
    return [{renames.get(key, key): value for key, value in row.items()} for row in rows]


def group_summary(records: Sequence[Mapping[str, Any]], resamples: int, seed: int) -> dict[str, Any]:
    """n, harmless rate, refusal rate, mean reward and mean cost of one model's rows, with 95% CIs
    (rates: Wilson; means: percentile bootstrap)."""
    metrics = side_metrics(records)
    refused = [r["refused"] for r in records]
    out: dict[str, Any] = {
        "n": len(records),
        "refusal_rate": sum(refused) / len(refused),
        **{k: v for k, v in metrics.items() if k != "responses"},
    }
    out["refusal_rate_ci"] = rate_ci(refused)
    return {**out, **side_cis(records, resamples, seed)}


def _judgeable(text: str) -> str:
    """`text` for a judge's tokenizer: a lone surrogate (which UTF-8 cannot hold) becomes U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def judge_rows(settings: JudgeSettings, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with their verdicts: refusal, and each configured judge's (the judges load once per call)."""
    ev = settings.eval
    prompts, responses = [_judgeable(r["prompt"]) for r in rows], [_judgeable(r["response"]) for r in rows]
    verdicts = judge_responses(ev.judge, prompts, responses) if any_judge(ev.judge) else [{"unsafe": None}] * len(rows)
    refused, how = classify_refusals(ev.refusal, ev.judge, prompts, responses)  # eval.refusal.classifier
    return [
        {**row, "refused": r, **h, **{k: x for k, x in v.items() if k != "response"}}
        for row, r, h, v in zip(rows, refused, how, verdicts, strict=True)
    ]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except OSError:
        return False


def _check_not_an_output(generations: Path, out: Path) -> None:
    for name in (JUDGED, SUMMARY):
        if _same_file(generations, out / name):
            raise RunDirError(
                f"generations={generations} is the output file {name} of hydra.run.dir={out}; judging would "
                "overwrite its input. Choose another hydra.run.dir"
            )


@contextlib.contextmanager
def claim(settings: JudgeSettings, out: Path, cfg: Any = None) -> Iterator[None]:
    """Lock `out` and make it this judging's: refused when it holds one already (unless `overwrite`),
    then `.hydra/` written and the previous outputs removed. Nothing is written into `out` before the lock."""
    run_dir = RunDir(out)
    with run_dir.lock():  # an unwritable directory: a one-line error before anything is judged
        found = [name for name in (SUMMARY, JUDGED) if (out / name).exists()]
        if found and not settings.overwrite:
            what = "a finished judging" if SUMMARY in found else "an unfinished judging"
            raise RunDirError(
                f"{out} holds {what} ({', '.join(found)}); choose another hydra.run.dir, or set overwrite=true to "
                "replace it"
            )
        if cfg is not None:
            run_dir.write_hydra_files(cfg)
        for name in (SUMMARY, JUDGED):  # the summary first: it marks the judging finished
            io.remove(out / name)
        yield


def judge_file(settings: JudgeSettings, out_dir: str | Path, cfg: Any = None) -> dict[str, Any]:
    """Judge every row of `settings.generations`, appending each judged chunk to `out_dir`/judged.jsonl;
    then write judge_summary.json. `cfg`: the composed config, for `.hydra/` (under Hydra only)."""
    ev = settings.eval
    out = Path(out_dir)
    _check_not_an_output(settings.generations, out)
    rows = read_generations(settings.generations)  # a data error writes nothing
    with claim(settings, out, cfg):
        judged: list[dict[str, Any]] = []
        for start in range(0, len(rows), settings.chunk):
            chunk = judge_rows(settings, rows[start : start + settings.chunk])
            io.append_jsonl(out / JUDGED, chunk)
            judged += chunk
            if len(rows) > settings.chunk:
                log.info("judged %d of %d rows (in %s)", len(judged), len(rows), out / JUDGED)
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in judged:
            groups.setdefault(row.get("model", NO_MODEL), []).append(row)
        summary = {
            "generations": str(settings.generations),
            "judges": {role: getattr(ev.judge, role).path for role in ("reward", "cost", "guard")},
            "refusal_classifier": classifier_name(ev.refusal),
            "ci": {
                "level": 0.95,
                "method": f"rates: {WILSON} score interval; mean reward and cost: {PERCENTILE} over rows",
                "resamples": settings.resamples,
                "seed": ev.seed,
            },
            "models": {name: group_summary(recs, settings.resamples, ev.seed) for name, recs in groups.items()},
        }
        io.write_text(out / SUMMARY, io.json_text(summary, indent=2) + "\n")
    print(f"wrote {out / JUDGED} ({len(judged)} rows) and {out / SUMMARY} ({len(groups)} model group(s))")
    return summary


def run(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    return judge_file(parse_judge(cfg), out_dir, cfg)
