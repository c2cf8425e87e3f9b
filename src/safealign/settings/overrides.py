"""Command-line overrides checked before Hydra sees them, so a typo gets the closest valid name.

Hydra rejects a misspelled group choice (`objective=multilvel`) or key (`train.betta=0.1`)
too, but without suggesting what was meant. Composing the config here needs only Hydra
and OmegaConf: a typo is answered without importing torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..errors import ConfigError, did_you_mean, unknown_key

# The output directories Hydra creates before the job runs: a path it cannot create would end
# in Hydra's traceback, so it is checked here first.
OUTPUT_DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def check_output_dir(key: str, value: str) -> None:
    """Raise ConfigError when `value` (a `hydra.run.dir` or `hydra.sweep.dir`) cannot be a directory.

    Only a plain path is checked: one with an interpolation (`${now:...}`) is Hydra's to resolve.
    """
    if "${" in value or not value.strip():
        return
    path = Path(value).expanduser().absolute()
    for part in [path, *path.parents]:
        if part.is_dir():
            if part != path and not os.access(part, os.W_OK | os.X_OK):
                raise ConfigError(f"{key}={value}: cannot create it: {part} is not writable")
            return
        if part.exists() or part.is_symlink():
            raise ConfigError(f"{key}={value}: {part} is a file, not a directory")


def check_overrides(argv: Sequence[str], conf_dir: str | Path, config_name: str) -> None:
    """Raise ConfigError for an unknown group choice or key among `argv`'s overrides, or an output
    directory that cannot be created."""
    conf_dir = Path(conf_dir)
    choices, keys = [], []
    swept: set[str] = set()
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in OUTPUT_DIR_KEYS:
            check_output_dir(key.lstrip("+"), value)
        if not sep or key.startswith(("hydra", "+", "~", "-")):
            continue
        if (conf_dir / key).is_dir():
            options = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
            for one in value.split(","):  # a sweep over choices: objective=helpful,harmless
                if one not in options:
                    raise ConfigError(
                        f"{key}={one}: no such {key} config. Valid: {', '.join(options)}.{did_you_mean(one, options)}"
                    )
            if "," in value:
                swept.add(key)  # its keys differ between options: Hydra checks each run's own
            else:
                choices.append(arg)
        else:  # a key: train.beta=0.1, or a top-level one such as merge.yaml's q=0.5
            keys.append(key)
    keys = [k for k in keys if k.split(".", 1)[0] not in swept]
    if not keys and not choices:
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base="1.3"):
            node: Any = compose(config_name, overrides=choices)
    except Exception as err:  # e.g. a group that is not part of this recipe's defaults (cluster=slurm)
        first = str(err).strip().split("\n")[0]
        hint = " (to add a group this recipe does not use by default, write +GROUP=OPTION, e.g. +cluster=slurm)"
        hint = hint if "No match in the defaults list" in first else ""
        raise ConfigError(f"{' '.join(choices)}: {first}{hint}") from err
    tree = OmegaConf.to_container(node, resolve=False)  # plain data: required (???) keys are there too
    for key in keys:
        parent, here = tree, []
        for part in key.split("."):
            if not isinstance(parent, dict) or part not in parent:
                where = ".".join(here) or "the config"
                valid = list(parent.keys()) if isinstance(parent, dict) else []
                raise unknown_key(key, valid, where, f" (To add a new key, write +{key}=...)")
            parent, here = parent[part], [*here, part]
