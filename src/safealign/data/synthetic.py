"""Deterministic synthetic rows in the current PKU-SafeRLHF schema.

The real dataset is licensed for non-commercial research only and contains harmful text by
design, so the project cannot ship it. Instead it ships a small sample produced by this module
(``sample/train.jsonl`` and ``sample/test.jsonl``), which every recipe, test and example trains
and evaluates on offline. The texts (kept as data in ``synthetic_words.json``) are original and
deliberately vague: they imitate the *shape* of the labels (safety, severity, harm categories,
helpfulness) without containing any actionable harmful content.

Design choices, and why:

* A simple surface cue separates safe from unsafe responses. Safe responses are refusals that
  start with one of :data:`SAFE_OPENERS`; unsafe responses comply and start with ``"Sure,"``
  followed by wording that gets more explicit with the severity level (hints, then steps, then
  a numbered plan). A tiny model can learn this in a few optimisation steps, so tests can show
  that held-out harmless accuracy rises after training.
* The better (more helpful) response is always the more detailed one and strictly longer in
  words; it agrees with the safer response in about 78% of rows, as in the real data.
* The label quirks that objectives must handle are present on purpose: a few both-unsafe rows
  whose ``safer_response_id`` points at the higher severity level (label conflicts, about 2.5%
  of eligible rows, at least one per split), and one row per split whose two responses are
  identical after stripping whitespace.
* Every split covers all 16 ``(severity_0, severity_1)`` combinations with both values of
  ``better_response_id`` (when it has at least 32 rows) and all 19 harm categories (when it has
  at least 19 rows), so small samples still exercise every code path.
* Everything is driven by one ``random.Random(seed)``; no global random state, no ``hash()``
  and no iteration over sets, so output is identical across runs, machines and processes.

Command line::

    python -m safealign.data.synthetic --out DIR [--n-train 256] [--n-test 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
from collections.abc import Callable, Container, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from safealign.data.schema import HARM_CATEGORIES, MAX_SEVERITY

__all__ = [
    "DEFAULT_N_TEST",
    "DEFAULT_N_TRAIN",
    "DEFAULT_SEED",
    "PROMPT_SOURCES",
    "RESPONSE_SOURCES",
    "SAFE_OPENERS",
    "SAMPLE_DIR",
    "UNSAFE_OPENERS",
    "generate_rows",
    "generate_splits",
    "main",
    "write_jsonl",
]

SAMPLE_DIR: Path = Path(__file__).resolve().parent / "sample"
"""Where the shipped sample lives (``train.jsonl`` and ``test.jsonl``)."""

DEFAULT_N_TRAIN = 256
DEFAULT_N_TEST = 64
DEFAULT_SEED = 0

PROMPT_SOURCES: tuple[str, ...] = ("Alpaca3-70B", "Beavertails", "WizardLM-30B-Uncensored")
# Roughly the mix of the real alpaca-7b test split (147 / 40 / 37).
_PROMPT_SOURCE_CUM_WEIGHTS: tuple[float, ...] = (0.65, 0.83, 1.0)
RESPONSE_SOURCES: tuple[str, ...] = ("Alpaca-7B", "Alpaca2-7B", "Alpaca3-8B")

# Probability that one response is safe, and the split of unsafe ones over levels 1..3.
# More one-safe pairs than the real data (which is ~48% both safe), so that the cue is learnt fast.
_P_SAFE = 0.55
_TARGET_AGREEMENT = 0.78  # fraction of rows where better_response_id == safer_response_id
_CONFLICT_RATE = 0.025  # of both-unsafe rows with different levels
_IDENTICAL_RATE = 0.002  # rows with identical responses, at least one per split of >= 33 rows
_MAX_PROMPT_TRIES = 10_000

# --------------------------------------------------------------------------------------------
# Text material lives in ``synthetic_words.json`` next to this module, so the generator stays
# short and the wording can be reviewed and diffed as data. The generator picks entries by
# position, so the file is read back into tuples in file order: that order is part of the output.
# --------------------------------------------------------------------------------------------

_WORDS_FILE = "synthetic_words.json"


class _Topic(NamedTuple):
    """A task phrased without pronouns (so a response can echo it) and other harm categories it fits."""

    task: str
    related: tuple[str, ...]


class _Material(NamedTuple):
    """The text of one harm category (immutable: it is shared by every row of the category)."""

    topics: tuple[_Topic, ...]
    hints: tuple[str, ...]  # vague tips, for severity 1
    steps: tuple[str, ...]  # for severity 2 and 3; in a sensible order, which _pick_k keeps
    alternatives: tuple[str, ...]  # safe suggestions, for detailed refusals


def _load_words() -> dict[str, Any]:
    """Read the word file via importlib.resources, so it is found in a wheel or zip install too."""
    text = resources.files("safealign.data").joinpath(_WORDS_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def _by_level(table: dict[str, list[str]]) -> dict[int, tuple[str, ...]]:
    """Key a per-level table by int: JSON object keys are strings, the generator looks up levels."""
    return {int(level): tuple(texts) for level, texts in table.items()}


def _material(entry: dict[str, list[Any]]) -> _Material:
    """Rebuild one category's material from its JSON object."""
    topics = tuple(_Topic(topic["task"], tuple(topic["related"])) for topic in entry["topics"])
    return _Material(topics, tuple(entry["hints"]), tuple(entry["steps"]), tuple(entry["alternatives"]))


_WORDS: dict[str, Any] = _load_words()

_PROMPT_TEMPLATES: tuple[str, ...] = tuple(_WORDS["prompts"]["templates"])  # with {task} and {tail}
_PROMPT_LEADS: tuple[str, ...] = tuple(_WORDS["prompts"]["leads"])  # "" entries: no lead
_PROMPT_TAILS: tuple[str, ...] = tuple(_WORDS["prompts"]["tails"])  # start with a space, or ""

SAFE_OPENERS: tuple[str, ...] = tuple(_WORDS["safe_responses"]["openers"])
"""Every safe response starts with one of these; no unsafe response does."""
_SAFE_REASONS: tuple[str, ...] = tuple(_WORDS["safe_responses"]["reasons"])
_SAFE_REASON_TAILS: tuple[str, ...] = tuple(_WORDS["safe_responses"]["reason_tails"])
_SAFE_SHORT_REDIRECTS: tuple[str, ...] = tuple(_WORDS["safe_responses"]["short_redirects"])
_SAFE_FILLERS: tuple[str, ...] = tuple(_WORDS["safe_responses"]["fillers"])

UNSAFE_OPENERS: dict[int, tuple[str, ...]] = _by_level(_WORDS["unsafe_responses"]["openers_by_level"])
"""Openers of unsafe responses by severity level; all start with ``"Sure,"``."""
_UNSAFE_CLOSERS: dict[int, tuple[str, ...]] = _by_level(_WORDS["unsafe_responses"]["closers_by_level"])
_UNSAFE_FILLERS: tuple[str, ...] = tuple(_WORDS["unsafe_responses"]["fillers"])

_MATERIAL: dict[str, _Material] = {name: _material(entry) for name, entry in _WORDS["categories"].items()}

del _WORDS

# The generator draws with ``rand = rng.random`` and the two helpers below instead of
# ``rng.choice`` / ``rng.sample``: the same determinism (one Mersenne Twister stream, IEEE
# arithmetic) at a fraction of the cost, which keeps 80k rows within a couple of seconds.
_Rand = Callable[[], float]


def _pick(rand: _Rand, seq: Sequence[Any]) -> Any:
    """One element of a non-empty sequence, uniformly."""
    return seq[int(rand() * len(seq))]


def _pick_k(rand: _Rand, seq: Sequence[Any], k: int) -> list[Any]:
    """Pick k distinct elements, kept in their order in ``seq`` (so steps stay in a sensible order)."""
    idx = list(range(len(seq)))
    for i in range(k):
        j = i + int(rand() * (len(idx) - i))
        idx[i], idx[j] = idx[j], idx[i]
    return [seq[i] for i in sorted(idx[:k])]


def _cap(text: str) -> str:
    """Capitalise the first letter only (``str.capitalize`` would lowercase the rest)."""
    return text[:1].upper() + text[1:]


def _n_words(text: str) -> int:
    return len(text.split())


def _safe_response(rand: _Rand, material: _Material, task: str, detailed: bool) -> str:
    """Write a refusal: one of SAFE_OPENERS, then a reason.

    The detailed one names the task and offers two safe alternatives: more on-topic and more
    helpful, still safe.
    """
    opener = _pick(rand, SAFE_OPENERS)
    if not detailed:
        return f"{opener} {_pick(rand, _SAFE_REASONS)} {_pick(rand, _SAFE_SHORT_REDIRECTS)}"
    alt1, alt2 = _pick_k(rand, material.alternatives, 2)
    return (
        f"{opener} Trying to {task} {_pick(rand, _SAFE_REASON_TAILS)}. "
        f"Instead, you could {alt1}. You could also {alt2}."
    )


def _unsafe_response(rand: _Rand, material: _Material, task: str, level: int, detailed: bool) -> str:
    """Write a compliant answer whose explicitness grows with the level.

    Level 1 gives vague hints, 2 steps, 3 a numbered plan with an instruction to hide it. The
    detailed one names the task and has more hints or steps.
    """
    opener = _pick(rand, UNSAFE_OPENERS[level])
    if level == 1:
        if not detailed:
            return f"{opener} You could {_pick(rand, material.hints)}. {_pick(rand, _UNSAFE_CLOSERS[1])}"
        hint1, hint2 = _pick_k(rand, material.hints, 2)
        return (
            f"{opener} If you want to {task}, you could {hint1}. It may also help to {hint2}. "
            f"{_pick(rand, _UNSAFE_CLOSERS[1])}"
        )
    if level == 2:
        if not detailed:
            s1, s2 = _pick_k(rand, material.steps, 2)
            return f"{opener} First, {s1}. Then, {s2}."
        s1, s2, s3 = _pick_k(rand, material.steps, 3)
        return f"{opener} To {task}, first {s1}. Then, {s2}. After that, {s3}. {_pick(rand, _UNSAFE_CLOSERS[2])}"
    steps = _pick_k(rand, material.steps, 4 if detailed else 3)
    numbered = " ".join(f"Step {i}: {_cap(step)}." for i, step in enumerate(steps, start=1))
    intro = f" To {task}, do this." if detailed else ""
    return f"{opener}{intro} {numbered} {_pick(rand, _UNSAFE_CLOSERS[3])}"


def _response(rand: _Rand, material: _Material, task: str, level: int, detailed: bool) -> str:
    if level == 0:
        return _safe_response(rand, material, task, detailed)
    return _unsafe_response(rand, material, task, level, detailed)


_NO_HARM: dict[str, bool] = dict.fromkeys(HARM_CATEGORIES, False)


def _categories(rand: _Rand, primary: str, related: tuple[str, ...], level: int) -> dict[str, bool]:
    """Map all 19 categories to bool: none for a safe response, 1-3 fitting ones for an unsafe one.

    An unsafe response gets its topic's category plus 0-2 related ones that fit the same topic.
    """
    flags = dict(_NO_HARM)
    if level > 0:
        flags[primary] = True
        for name in _pick_k(rand, related, int(rand() * (min(2, len(related)) + 1))):
            flags[name] = True
    return flags


def _sha256(prompt: str, response: str) -> str:
    return hashlib.sha256((prompt + response).encode("utf-8")).hexdigest()


def _draw_level(rand: _Rand) -> int:
    """A severity level: 0 with probability _P_SAFE, else 1..MAX_SEVERITY uniformly, from one draw."""
    u = rand()
    if u < _P_SAFE:
        return 0
    return min(MAX_SEVERITY, 1 + int((u - _P_SAFE) / (1.0 - _P_SAFE) * MAX_SEVERITY))


def _rule_safer(sev0: int, sev1: int) -> int | None:
    """The safer id the labelling rules force, or None when either is allowed."""
    if (sev0 == 0) != (sev1 == 0):
        return 0 if sev0 == 0 else 1
    if sev0 != sev1:
        return 0 if sev0 < sev1 else 1
    return None


def _coverage_combos() -> list[tuple[int, int]]:
    """List all level combinations, both-safe last.

    Then the first 30 coverage rows each have an unsafe response, and the category cycle reaches
    all 19 categories within them.
    """
    levels = range(MAX_SEVERITY + 1)
    combos = [(a, b) for a in levels for b in levels if (a, b) != (0, 0)]
    return [*combos, (0, 0)]


# One row's labels before any text is drawn: severity levels, better and safer ids, whether the
# better id is fixed by the coverage block, whether the responses are identical, and (last) the
# harm category the prompt is about.
_Spec = dict[str, Any]


def _make_specs(rng: random.Random, n: int) -> list[_Spec]:
    """Draw the labels of n rows: coverage block, identical rows, label conflicts, agreement rate."""
    rand = rng.random
    specs: list[_Spec] = []
    # 1. Coverage block: every (sev0, sev1) with both better ids. Where the rules leave the safer
    #    id free, it follows better, which keeps the overall agreement rate reachable in small splits.
    for sev0, sev1 in _coverage_combos():
        for better in (0, 1):
            forced = _rule_safer(sev0, sev1)
            safer = better if forced is None else forced
            specs.append({"sev": (sev0, sev1), "better": better, "safer": safer, "fixed": True})
    del specs[n:]
    # 2. Random rows; better is decided in step 5.
    for _ in range(n - len(specs)):
        sev = (_draw_level(rand), _draw_level(rand))
        forced = _rule_safer(*sev)
        safer = int(rand() * 2) if forced is None else forced
        specs.append({"sev": sev, "better": None, "safer": safer, "fixed": False})
    for spec in specs:
        spec["identical"] = False
    free = [i for i, spec in enumerate(specs) if not spec["fixed"]]
    # 3. Identical responses: same level on both sides, labels otherwise arbitrary.
    if free:
        n_identical = max(1, round(_IDENTICAL_RATE * n))
        for i in rng.sample(free, min(n_identical, len(free))):
            level = specs[i]["sev"][0]
            specs[i].update(sev=(level, level), identical=True, safer=int(rand() * 2))
    # 4. Label conflicts among both-unsafe rows with different levels: safer points at the higher.
    eligible = [i for i, s in enumerate(specs) if 0 not in s["sev"] and s["sev"][0] != s["sev"][1]]
    if eligible:
        for i in rng.sample(eligible, max(1, round(_CONFLICT_RATE * len(eligible)))):
            sev0, sev1 = specs[i]["sev"]
            specs[i]["safer"] = 0 if sev0 > sev1 else 1
    # 5. Better ids of the random rows: exactly as many agree with safer as needed to bring the
    #    split's agreement rate as close to the target as the coverage block allows.
    fixed_agree = sum(s["better"] == s["safer"] for s in specs if s["fixed"])
    n_agree = min(max(round(_TARGET_AGREEMENT * n) - fixed_agree, 0), len(free))
    agree = [False] * len(specs)
    for i in rng.sample(free, n_agree):
        agree[i] = True
    for i in free:
        safer = specs[i]["safer"]
        specs[i]["better"] = safer if agree[i] else 1 - safer
    # 6. Prompt categories: a shuffled cycle over the list order, so the coverage block alone
    #    reaches all 19 categories; then shuffle the rows so the block is not at the start.
    order = list(HARM_CATEGORIES)
    rng.shuffle(order)
    for i, spec in enumerate(specs):
        spec["category"] = order[i % len(order)]
    rng.shuffle(specs)
    return specs


def _draw_prompt(rand: _Rand, category: str, exclude: Container[str]) -> tuple[str, _Topic]:
    """A prompt on a topic of the category, redrawn until it is not in ``exclude``."""
    topics = _MATERIAL[category].topics
    for _ in range(_MAX_PROMPT_TRIES):
        topic = _pick(rand, topics)
        body = _pick(rand, _PROMPT_TEMPLATES).format(task=topic.task, tail=_pick(rand, _PROMPT_TAILS))
        lead = _pick(rand, _PROMPT_LEADS)
        prompt = f"{lead} {body}" if lead else body
        if prompt not in exclude:
            return prompt, topic
    raise ValueError(f"could not draw a prompt for {category!r} outside the excluded set; split too large")


def _prompt_source(rand: _Rand) -> str:
    """A prompt source drawn with the real data's mix (_PROMPT_SOURCE_CUM_WEIGHTS)."""
    u = rand()
    for source, cum in zip(PROMPT_SOURCES, _PROMPT_SOURCE_CUM_WEIGHTS, strict=True):
        if u < cum:
            return source
    return PROMPT_SOURCES[-1]


def _render(rand: _Rand, spec: _Spec, exclude: Container[str]) -> dict[str, Any]:
    """Turn one row's labels into a full row: prompt, texts, categories, sources and hashes."""
    category = spec["category"]
    material = _MATERIAL[category]
    prompt, (task, related) = _draw_prompt(rand, category, exclude)
    sev = spec["sev"]
    better = spec["better"]
    texts = [_response(rand, material, task, sev[k], detailed=k == better) for k in (0, 1)]
    if spec["identical"]:
        texts[1 - better] = texts[better] + " "
    else:
        # The better response must be strictly longer in words; top it up with neutral sentences
        # of its own kind (they never touch the opener, so the safety cue is unchanged).
        fillers = _SAFE_FILLERS if sev[better] == 0 else _UNSAFE_FILLERS
        while _n_words(texts[better]) <= _n_words(texts[1 - better]):
            texts[better] += " " + _pick(rand, fillers)
    cats = [_categories(rand, category, related, sev[k]) for k in (0, 1)]
    if spec["identical"]:
        cats[1] = dict(cats[0])
    source = _pick(rand, RESPONSE_SOURCES)
    return {
        "prompt": prompt,
        "response_0": texts[0],
        "response_1": texts[1],
        "prompt_source": _prompt_source(rand),
        "response_0_source": source,
        "response_1_source": source,
        "is_response_0_safe": sev[0] == 0,
        "is_response_1_safe": sev[1] == 0,
        "response_0_harm_category": cats[0],
        "response_1_harm_category": cats[1],
        "response_0_severity_level": sev[0],
        "response_1_severity_level": sev[1],
        "better_response_id": better,
        "safer_response_id": spec["safer"],
        "response_0_sha256": _sha256(prompt, texts[0]),
        "response_1_sha256": _sha256(prompt, texts[1]),
    }


def _generate_split(rng: random.Random, n: int, exclude: Container[str]) -> list[dict[str, Any]]:
    rand = rng.random
    return [_render(rand, spec, exclude) for spec in _make_specs(rng, n)]


def generate_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Generate ``n`` synthetic rows, deterministic for ``(n, seed)``.

    The rows form one split with all the guarantees of :func:`generate_splits`; in fact
    ``generate_rows(n, seed) == generate_splits(n, m, seed)["train"]`` for any ``m``, so the
    benchmark data and the shipped sample come from the same process.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return _generate_split(random.Random(seed), n, frozenset())


def generate_splits(n_train: int, n_test: int, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Generate a train and a test split whose prompts are disjoint.

    Each split of at least 32 rows contains every ``(severity_0, severity_1)`` combination with
    both values of ``better_response_id``, at least one label conflict and one row with identical
    responses, and all 19 harm categories. Test prompts that already occur in train are redrawn,
    so held-out evaluation never sees a training prompt.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"split sizes must be >= 0, got n_train={n_train}, n_test={n_test}")
    rng = random.Random(seed)
    train = _generate_split(rng, n_train, frozenset())
    test = _generate_split(rng, n_test, {row["prompt"] for row in train})
    return {"train": train, "test": test}


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write rows as JSON Lines (UTF-8, non-ASCII kept) through safealign's one atomic writer."""
    from .. import io

    io.write_jsonl(path, rows)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: write DIR/train.jsonl and DIR/test.jsonl."""
    parser = argparse.ArgumentParser(
        prog="python -m safealign.data.synthetic",
        description="Write a deterministic synthetic PKU-SafeRLHF-style sample.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="rows in train.jsonl")
    parser.add_argument("--n-test", type=int, default=DEFAULT_N_TEST, help="rows in test.jsonl")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    if args.n_train < 0 or args.n_test < 0:
        parser.error("--n-train and --n-test must be >= 0")
    splits = generate_splits(args.n_train, args.n_test, seed=args.seed)
    for name, rows in splits.items():
        path = write_jsonl(rows, args.out / f"{name}.jsonl")
        print(f"wrote {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
