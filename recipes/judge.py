"""Judge the generations of any model: refusal, and the configured reward/cost/guard judges.

    python recipes/judge.py generations=FILE                          # refusal only, offline
    python recipes/judge.py generations=FILE eval/judge=beaver-7b-unified
    python recipes/judge.py generations=FILE eval.judge.cost.path=MODEL hydra.run.dir=DIR

FILE is JSON Lines with `prompt` and `response` (and optionally `model`, a name in quotes, in
every row or none: it groups rows). Writes DIR/judged.jsonl (every row with `refused`, each
judge's score or verdict, `unsafe`; an input column with one of those names is kept as
`input_<name>`), appended `chunk` rows at a time as they are judged, then
DIR/judge_summary.json (per model: harmless rate, refusal rate, mean reward and cost, 95% CIs).
A DIR that already holds them is refused unless `overwrite=true`.
The job itself: src/safealign/jobs/judge.py.
"""

import hydra
from omegaconf import DictConfig

from safealign.cli import check_argv, exit_when_done, run_recipe


@hydra.main(config_path="../conf", config_name="judge", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from safealign.jobs import judge

    run_recipe(judge.run, cfg)


if __name__ == "__main__":
    check_argv("judge")
    exit_when_done(main)
