"""The README and the guide in docs/ say only what is true: set-up commands, recipe commands, links.

Every command in a ```bash block of README.md or docs/*.md that runs a recipe (a line holding
`recipes/NAME.py`, e.g. `python recipes/dpo.py ...` or `accelerate launch ... recipes/dpo.py ...`,
continued with a trailing backslash) is checked here, in-process and without torch, in seconds:

1. the recipe exists in recipes/ and has its config in conf/;
2. every choice of a swept group (`-m objective=x,y`) exists, and output directories
   (`hydra.run.dir`, `hydra.sweep.dir`) pass the recipe's own check (`check_output_dir`);
3. the overrides compose with Hydra against conf/ (`safealign.cli.compose`, the first value of
   each swept key): an unknown group, option or key fails here, as it does in the recipe;
4. the composed config passes the recipe's settings validation (`parse_train`, `parse_sft`,
   `parse_reward`, `parse_pairs`, `parse_eval`, `parse_judge`, `parse_merge`), which checks every
   value before any data or model loads. A run directory the reader makes first
   (`model.adapter=runs/sacpo/helpful`, `objective.margin_run=`, merge's `runs=[...]`) is replaced
   by a fake finished run in a temporary directory (the command's own config, status done, an
   adapter_config.json: all that validation reads), and `generations=FILE` by a one-row file, so
   the rest of the command is validated in full. Any other path key that names a file absent here
   (`eval.refusal.path=xstest_prompts.csv`, `data.path=my_export.jsonl` where checked) is set aside
   when the validation names it, and the rest is validated again; an error that then names the
   set-aside key counts as passing (so values the validation would check after that key are not
   checked for that one command).

Hub commands (`model=alpaca-7b`, `data=pku_saferlhf`) are composed and validated like any other:
validation loads nothing. A command that cannot be checked offline at all carries a visible
trailing marker, `# needs: gpu` or `# needs: hub` (both may be given, `# needs: gpu, hub`):
such a command is still required to name an existing recipe and to compose, but its settings
validation is skipped. A recipe that another branch adds (PENDING_RECIPES) is skipped until it
exists, and so are links to its page (PENDING_PAGES); once merged, both are checked like the rest.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from safealign.cli import CONF_DIR as CONF
from safealign.cli import compose
from safealign.errors import ConfigError

REPO = CONF.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"#\s*needs:\s*([a-z, ]+)$")
NEEDS = {"gpu", "hub"}
PENDING_RECIPES: set[str] = set()  # recipes written on other branches; checked here once they exist
PENDING_PAGES: set[str] = set()  # the same: links to their pages are checked once they exist


def quickstart_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_exactly_two_setup_commands():
    run, test = quickstart_commands()
    assert run.startswith("pip install torch==2.13.0 && ") and run.endswith("python recipes/dpo.py")
    assert test.startswith("pip install torch==2.13.0 && ") and "pytest" in test


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci


def test_every_config_group_is_documented():
    docs = (CONF / "README.md").read_text()
    for group in sorted(p for p in CONF.iterdir() if p.is_dir()):
        assert f"## `{group.name}`" in docs, group.name
        for option in group.glob("*.yaml"):
            assert f"`{option.stem}`" in docs, f"{group.name}/{option.name}"


def recipe_commands() -> list[tuple[str, str]]:
    """(page:line, command) for every recipe command in a bash block, continuation lines joined."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
            first_line = text.count("\n", 0, block.start()) + 2
            lines = block.group(1).split("\n")
            i = 0
            while i < len(lines):
                start, command = i, lines[i]
                while command.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command.rstrip()[:-1] + " " + lines[i].strip()
                if "recipes/" in command:
                    found.append((f"{page.relative_to(REPO)}:{first_line + start}", command.strip()))
                i += 1
    return found


COMMANDS = recipe_commands()


def test_the_docs_have_recipe_commands():
    assert len(COMMANDS) >= 40
    assert {Path(where.split(":")[0]).name for where, _ in COMMANDS} >= {"README.md", "training.md", "evaluation.md"}


def _split(command: str) -> tuple[str, list[str], set[str]]:
    """The recipe's name, its overrides (without -m) and what the command is marked as needing."""
    marker = MARKER.search(command.split("#", 1)[1].strip()) if "#" in command else None
    needs = {n.strip() for n in marker.group(1).split(",")} if marker else set()
    assert needs <= NEEDS, f"unknown marker {needs - NEEDS}; valid: # needs: gpu / hub"
    args = shlex.split(command, comments=True)
    at = next(i for i, a in enumerate(args) if a.startswith("recipes/") and a.endswith(".py"))
    return Path(args[at]).stem, [a for a in args[at + 1 :] if a not in ("-m", "--multirun")], needs


def _first_of_sweep(override: str) -> str:
    """`objective=helpful,harmless` -> `objective=helpful`: one run of the sweep (lists and hydra.* kept)."""
    key, sep, value = override.partition("=")
    if not sep or key.startswith("hydra.") or value.startswith(("[", "'", '"')) or "," not in value:
        return override
    return f"{key}={value.split(',')[0]}"


def _validator(recipe: str):
    from safealign import settings
    from safealign.settings.eval import parse_eval
    from safealign.settings.judge import parse_judge
    from safealign.settings.runs import parse_merge

    def iterate_parse(cfg):
        from safealign.jobs.iterate import parse

        return parse(cfg)

    return {
        "dpo": settings.parse_train,
        "sft": settings.parse_sft,
        "reward": settings.parse_reward,
        "pairs": settings.parse_pairs,
        "evaluate": lambda cfg: parse_eval(cfg.get("eval")),
        "judge": parse_judge,
        "merge": parse_merge,
        "iterate": lambda cfg: iterate_parse(cfg),
    }.get(recipe)


PATH_KEY = re.compile(r"(^|\.)(path|test_path|generations|run_dir|sweep_dir|adapter|margin_run|runs)$")


def _absent_paths(override: str) -> bool:
    """Whether an override sets a path key (`data.path`, `generations`, `model.adapter`, ...) to a path,
    or a list of paths, that does not exist here."""
    key, _, value = override.partition("=")
    parts = value.strip("[]").split(",")
    return bool(PATH_KEY.search(key.lstrip("+"))) and bool(value) and any(not (REPO / part).exists() for part in parts)


RUN_KEYS = ("model.adapter", "objective.margin_run", "runs")  # keys whose value is a finished run directory


def _fake_run(cfg, where: Path) -> str:
    """A finished LoRA run's small files, as a run directory the command expects the reader to have made
    (`model.adapter=runs/helpful`): the command's own config (so the base model matches), status done,
    and an adapter_config.json. Settings validation reads only these; nothing loads them."""
    from omegaconf import OmegaConf

    from safealign.rundir import RunDir

    where.mkdir(parents=True)  # tmp's parents too
    saved = OmegaConf.to_container(cfg, resolve=False)
    saved.get("model", {}).pop("adapter", None)
    saved.get("objective", {}).pop("margin_run", None)
    (where / RunDir.CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(saved)))
    RunDir(where).write_status("done")
    (where / RunDir.ADAPTER).mkdir()
    (where / RunDir.ADAPTER / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    return str(where)


def _with_fake_runs(recipe: str, overrides: list[str], tmp: Path) -> list[str]:
    """Run-directory values that do not exist here replaced by fake finished runs (see _fake_run)."""
    # The run's own config; a merge's runs are training runs (the embedded default's model)
    kept = [o for o in overrides if o.partition("=")[0] not in RUN_KEYS]
    base = compose("dpo", []) if recipe == "merge" else compose(recipe, kept)
    out = []
    for n, override in enumerate(overrides):
        key, _, value = override.partition("=")
        if key == "generations" and _absent_paths(override):  # judge.py's input: one row of the schema
            (tmp / "generations.jsonl").parent.mkdir(parents=True, exist_ok=True)
            (tmp / "generations.jsonl").write_text('{"prompt": "Hi", "response": "Hello."}\n')
            override = f"generations={tmp / 'generations.jsonl'}"
        elif key in RUN_KEYS and _absent_paths(override):
            names = value.strip("[]").split(",")
            fakes = [_fake_run(base, tmp / f"{n}-{i}") for i in range(len(names))]
            override = f"{key}=[{','.join(fakes)}]" if value.startswith("[") else f"{key}={fakes[0]}"
        out.append(override)
    return out


def _validate(recipe: str, overrides: list[str], tmp: Path) -> None:
    validate = _validator(recipe)
    if validate is None:  # compare.py: its job reads run directories and checks nothing else first
        return
    overrides = _with_fake_runs(recipe, overrides, tmp)
    set_aside: list[str] = []
    while True:
        try:
            validate(compose(recipe, overrides))
            return
        except ConfigError as err:
            message = str(err)
            if any(o.partition("=")[0].lstrip("+") in message for o in set_aside):
                return  # the config requires the file set aside
            named = [o for o in overrides if _absent_paths(o) and message.startswith(o.partition("=")[0].lstrip("+"))]
            if not named:
                raise
            set_aside += named
            overrides = [o for o in overrides if o not in named]


def _check_choices_and_dirs(overrides: list[str]) -> list[str]:
    """What the recipe's pre-Hydra check (`check_overrides`) does without a compose of its own: every
    choice of a swept group exists, and output directories can be made. Returns the overrides to
    compose (output directories left out: they change no config value, and would defeat the cache)."""
    from safealign.settings.overrides import OUTPUT_DIR_KEYS, check_output_dir

    kept = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") in OUTPUT_DIR_KEYS:
            check_output_dir(key.lstrip("+"), value)
            continue
        group = CONF / key.lstrip("+")
        if "." not in key and group.is_dir():
            for option in value.split(","):
                assert (group / f"{option}.yaml").exists(), f"{key}={option}: no such {key} config"
        kept.append(override)
    return kept


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
@pytest.mark.integration
def test_docs_command_composes_and_validates(where: str, command: str, tmp_path: Path):
    from safealign.jobs.compare import quote_baseline

    recipe, overrides, needs = _split(command)
    if not (REPO / "recipes" / f"{recipe}.py").exists():
        if recipe in PENDING_RECIPES:
            pytest.skip(f"recipes/{recipe}.py comes with another branch")
        pytest.fail(f"{where}: no recipes/{recipe}.py")
    assert (CONF / f"{recipe}.yaml").exists(), f"{where}: no conf/{recipe}.yaml"
    if recipe == "pipeline":  # its own check: the pipeline config, every stage's overrides, and the plan
        from safealign import pipeline

        if "--help" not in overrides:
            cfg, passed, root = pipeline.check(overrides)
            assert pipeline.plan(cfg, passed, tmp_path / root)
        return
    if recipe == "compare":
        overrides = quote_baseline(["compare.py", *overrides])[1:]  # as recipes/compare.py does
    # One run of a sweep; ordered by key (a stable sort: one key's values keep their order), so that
    # commands with the same group choices share compose()'s cache.
    runs = sorted((_first_of_sweep(o) for o in _check_choices_and_dirs(overrides)), key=lambda o: o.partition("=")[0])
    compose(recipe, runs)  # an unknown group, option or key fails here, as in the recipe
    if needs:  # marked: composing is all that can be checked offline
        return
    _validate(recipe, runs, tmp_path)


def test_every_relative_link_points_to_a_file():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            file = (page.parent / path).resolve()
            if not file.exists() and str(file.relative_to(REPO)) not in PENDING_PAGES:
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, broken
