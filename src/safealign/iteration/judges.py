"""The loop's judges: which model each role is, the tiny judges trained on first use, and the scores.

Why `iterate.judges` and not `eval.judge`: one setting names the judges that label the samples
and those that evaluate each round, so the two can never disagree. A value is a judge run of
`recipes/reward.py` (its template, EOS convention and threshold come with it, as for
`eval.judge.ROLE.path`), a model directory or hub id, or `tiny`: a tiny judge trained on the
shipped sample by `recipes/reward.py judge=ROLE` on first use and cached under
$SAFEALIGN_CACHE/judges, so the embedded default closes the loop offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..rundir import RunDir
from ..settings.iterate import TINY_JUDGE, JudgesConfig

log = logging.getLogger("safealign")

# The tiny judges' training: the reward recipe's embedded default, a little shorter.
TINY_JUDGE_OVERRIDES = ("quant=none", "train.num_train_epochs=2", "eval.after_train=false")


def tiny_judge(role: str) -> Path:
    """A finished tiny `role` judge run (reward or cost), trained now if the cache has none."""
    from omegaconf import OmegaConf

    from ..cli import compose
    from ..tiny import cache_dir

    cfg = compose("reward", [f"judge={role}", *TINY_JUDGE_OVERRIDES])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    key = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]
    run_dir = cache_dir() / "judges" / f"tiny-{role}-{key}"
    if RunDir(run_dir).state() != "done":
        from ..jobs import reward

        log.info("iterate.judges.%s=tiny: training the tiny %s judge once, into %s", role, role, run_dir)
        reward.run(cfg, run_dir)
    return run_dir


def judge_paths(judges: JudgesConfig) -> dict[str, str | None]:
    """Each role's model: `tiny` trained (or found in the cache), paths made absolute."""
    out: dict[str, str | None] = {}
    for role in ("reward", "cost", "guard"):
        value = getattr(judges, role)
        if value == TINY_JUDGE and role != "guard":
            out[role] = str(tiny_judge(role))
        elif value and Path(value).expanduser().exists():
            out[role] = str(Path(value).expanduser().resolve())
        else:
            out[role] = value
    return out


def score_samples(judge: Any, prompts: Sequence[str], samples: Sequence[Sequence[str]]) -> list[list[dict[str, Any]]]:
    """Every sample of every prompt scored by every judge, each judge loaded once for all of them
    (`evaluation.judges.judge_responses` runs the whole round's samples in batches of `eval.judge.batch_size`)."""
    from ..evaluation.judges import judge_responses

    flat_prompts = [p for p, group in zip(prompts, samples, strict=True) for _ in group]
    records = judge_responses(judge, flat_prompts, [s for group in samples for s in group])
    out, at = [], 0
    for group in samples:
        out.append(records[at : at + len(group)])
        at += len(group)
    return out
