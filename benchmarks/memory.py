"""Peak memory of a short training run for quant=nf4, int8 and none, and the model's own bytes as loaded.

Each configuration trains a few steps through `safealign.jobs.dpo.run` (tiny model, LoRA,
shipped sample) in a fresh child process, whose peak RSS `os.wait4` reports; with a GPU the
child also reports `torch.cuda.max_memory_allocated`. A child that only imports the stack
(torch, transformers, TRL, peft, bitsandbytes, safealign) gives the floor: on the tiny model
the Python/torch runtime, not the weights, makes up nearly all of the RSS, so the model's own
parameter and buffer bytes, as `safealign.modeling.load_model` loads them, are reported too.

    python benchmarks/memory.py [--repeats 3] [--steps 5] [--out memory.json]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any

import common

QUANTS = ("nf4", "int8", "none")
MIB = 2**20


def child(config: str, steps: int) -> None:
    """In a fresh process: import the stack (`imports`) or train `steps` steps with quant=`config`."""
    common.quiet_libraries()
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import safealign.jobs.dpo

    if config != "imports":
        cfg = common.compose(
            [
                f"quant={config}",
                f"train.max_steps={steps}",
                "train.report_to=[]",
                "train.save_strategy=no",
                "data.test_split=null",
            ]
        )
        safealign.jobs.dpo.run(cfg, Path(common.scratch(prefix="bench-memory-")) / "run")
    gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    common.emit({"gpu_peak_bytes": gpu, "self_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})


def model_bytes(quant: str) -> dict[str, Any]:
    """Bytes of the parameters and buffers of the base model as safealign loads it (no adapter)."""
    from omegaconf import OmegaConf

    from safealign.modeling import load_model
    from safealign.settings import PeftConfig

    loaded = load_model(OmegaConf.load(common.REPO / "conf" / "model" / "tiny.yaml"), quant, PeftConfig("lora"))
    model = loaded.model
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    return {
        "parameter_bytes": params,
        "buffer_bytes": buffers,
        "parameters_stored": sum(p.numel() for p in model.parameters()),
        "dtypes": dtypes,
        "footprint_bytes": model.get_memory_footprint(),
    }


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=3)
    p.add_argument("--steps", type=int, default=5, help="training steps per child (default 5)")
    p.add_argument("--child", choices=["imports", *QUANTS], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    common.quiet_libraries()
    started = time.perf_counter()
    common.tiny_model_dir()

    configs = ("imports", *QUANTS)
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for i in range(args.repeats):
        for config in configs:
            # Memory does not depend on what else runs, so there is no waiting for a quiet machine here.
            result, rss = common.run_child(Path(__file__), ["--child", config, "--steps", str(args.steps)])
            runs[config].append({**result, "peak_rss_bytes": rss})
            print(f"  {config} {i + 1}/{args.repeats}: peak RSS {rss / MIB:.0f} MiB", flush=True)

    results: dict[str, Any] = {}
    table_rows = []
    for config in configs:
        rss = common.summarize([r["peak_rss_bytes"] / MIB for r in runs[config]])
        gpu = [r["gpu_peak_bytes"] for r in runs[config] if r["gpu_peak_bytes"] is not None]
        gpu_s = common.summarize([g / MIB for g in gpu]) if gpu else None
        weights = model_bytes(config) if config in QUANTS else None
        results[config] = {"peak_rss_mib": rss, "gpu_peak_mib": gpu_s, "model": weights, "runs": runs[config]}
        table_rows.append(
            [
                "imports only (floor)" if config == "imports" else f"quant={config}, {args.steps} steps",
                common.fmt_summary(rss, 4),
                common.fmt_summary(gpu_s, 4) if gpu_s else "no GPU",
                f"{weights['parameter_bytes'] / MIB:.2f}" if weights else "",
                f"{weights['buffer_bytes'] / MIB:.2f}" if weights else "",
                ", ".join(weights["dtypes"]) if weights else "",
            ]
        )
    table = common.markdown_table(
        [
            "configuration",
            "peak RSS MiB",
            "peak GPU MiB",
            "model parameters MiB",
            "model buffers MiB",
            "parameter dtypes",
        ],
        table_rows,
    )
    table += (
        f"\n\nvalues: median (min–max) over {args.repeats} fresh processes; model bytes: the tiny base model as "
        "`safealign.modeling.load_model` returns it (before LoRA; nf4/int8 weights are stored packed as "
        "uint8/int8, bitsandbytes' quantization state is not counted)."
    )
    params = {"steps": args.steps, "model": "tiny", "peft": "lora", "data": "shipped sample (train split)"}
    common.finish("memory", args, params, results, table, started)


if __name__ == "__main__":
    main()
