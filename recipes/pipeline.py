"""Run a published pipeline, stage by stage, in one command; the same command again resumes it.

    python recipes/pipeline.py pipeline=safedpo                          # embedded default: tiny model, offline
    python recipes/pipeline.py pipeline=modpo model=alpaca-7b data=pku_saferlhf_10k
    python recipes/pipeline.py pipeline=sacpo train.max_steps=4 pipeline.q=[0,1] hydra.run.dir=runs/sacpo
    python recipes/pipeline.py pipeline=objectives pipeline.seeds=[0,1,2] overwrite=true

Overrides other than pipeline=, pipeline.* and overwrite= reach every stage they apply to (all
of them to sft and dpo, eval.* to merge and evaluate). Each stage writes its own run
directory under hydra.run.dir (default outputs/pipeline/NAME); the run ends with a table of
the stages. Pipelines: conf/pipeline/*.yaml; how to write one: docs/pipelines.md.
The engine: src/safealign/pipeline.py.
"""

import sys

HELP = __doc__


def main(argv: list[str]) -> int:
    from safealign.cli import debug, fail
    from safealign.errors import SafealignError

    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        from safealign.cli import CONF_DIR

        print("pipelines: " + ", ".join(sorted(p.stem for p in (CONF_DIR / "pipeline").glob("*.yaml"))))
        return 0
    from safealign import pipeline

    try:
        return pipeline.run(argv)
    except SafealignError as err:
        if debug():
            raise
        fail(str(err))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
