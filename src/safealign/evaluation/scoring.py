"""The trained policy and its reference, and their log-probabilities on held-out pairs.

Sequences are rendered with the run's template and tokenized and truncated by TRL's own
code (`tokenization.tokenize_pairs`, TRL's preprocessing batched, and TRL's preference collator), so the implicit reward
is exactly the quantity training optimised. The reference is the policy with its adapter
disabled (one copy in memory); with full fine-tuning it is the base model, loaded apart. A run
that started from another run's adapter (`model.adapter`) was trained against that adapter's
model, so there the reference is that adapter, loaded beside the trained one on the same base:
the copy the run holds (`RUN_DIR/adapter/ref/`, TRL's frozen reference adapter), so that
nothing done to the starting run later changes this run's numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..devices import training_precision
from ..objectives import Pair
from ..rundir import RunDir
from ..settings import TrainSettings, adapter_dir
from .dimensions import Units

REFERENCE_ADAPTER = "reference"  # the starting adapter of a chained run, beside the trained "default"
# TRL's DPOTrainer copies a starting adapter into a frozen adapter of this name (its reference); the
# run's saved adapter/ then holds it in adapter/ref/.
TRL_REF_ADAPTER = "ref"


def own_reference(run_dir: str | Path) -> Path | None:
    """The copy of its starting adapter that a chained run holds (`RUN_DIR/adapter/ref/`), or None."""
    path = RunDir(run_dir) / RunDir.ADAPTER / TRL_REF_ADAPTER
    return path if (path / "adapter_config.json").is_file() else None


@dataclass
class PolicyModels:
    """The trained policy and how to get its reference without a second copy.

    With LoRA the reference is the policy with its adapter disabled, or, for a run started
    from `model.adapter`, the policy with that starting adapter active (`reference_adapter`);
    with full fine-tuning (`peft=none`) it is the base model, loaded separately (there is no
    other way).
    """

    policy: Any
    tokenizer: Any
    reference_model: Any | None = None
    reference_adapter: str | None = None
    on_release: Any = None

    @contextlib.contextmanager
    def reference(self) -> Iterator[Any]:
        if self.reference_model is not None:
            yield self.reference_model
        elif self.reference_adapter is not None:
            active = self.policy.active_adapter
            self.policy.set_adapter(self.reference_adapter)
            try:
                yield self.policy
            finally:
                self.policy.set_adapter(active)
        else:
            with self.policy.disable_adapter():
                yield self.policy

    @property
    def device(self) -> Any:
        return next(self.policy.parameters()).device

    def release(self) -> None:
        """Drop the policy and the reference so that the judges have the memory; `on_release` drops
        whatever else still holds them (the trainer, after training), or freeing them frees nothing."""
        self.policy = self.reference_model = None
        if self.on_release is not None:
            self.on_release()
            self.on_release = None
        release_memory()


def place(model: Any) -> Any:
    """On a GPU when there is one; bitsandbytes models are placed at load time and cannot move."""
    import torch

    quantized = getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None) is not None
    if torch.cuda.is_available() and not quantized:
        model = model.to("cuda")
    return model.eval()


def load_policy(run_dir: str | Path, settings: TrainSettings) -> PolicyModels:
    """Load the run's base model (quantized as in training) with its trained adapter on top."""
    from peft import PeftModel

    from ..modeling import load_model
    from ..trl_compat import add_fused_lm_head

    adapter = RunDir(run_dir) / RunDir.ADAPTER
    if settings.peft.method == "none":
        full = dataclasses.replace(settings.model, name_or_path=str(adapter), revision=None)
        policy = load_model(full, "none", settings.peft, reference=False)
        reference = load_model(settings.model, "none", settings.peft, reference=False).model
        for model in (policy.model, reference):
            add_fused_lm_head(model)
        return PolicyModels(place(policy.model), policy.tokenizer, place(reference))
    start = settings.model.adapter  # the run continued this adapter: it is the reference
    loaded = load_model(dataclasses.replace(settings.model, adapter=None), settings.quant, settings.peft)
    add_fused_lm_head(loaded.model)  # TRL's log-prob head, as in training; added before PEFT wraps the model
    model = PeftModel.from_pretrained(loaded.model, str(adapter))
    if settings.quant != "none":
        as_trained(model)
    if start is None:
        return PolicyModels(place(model), loaded.tokenizer)
    reference = own_reference(run_dir) or adapter_dir(start)  # `report.saved_settings` warns without the copy
    model.load_adapter(str(reference), adapter_name=REFERENCE_ADAPTER)
    model.set_adapter("default")
    return PolicyModels(place(model), loaded.tokenizer, reference_adapter=REFERENCE_ADAPTER)



def as_trained(model: Any) -> None:
    """LoRA weights in bf16, as TRL trains them on a quantized model (QLoRA's recipe).

    TRL's DPOTrainer casts a quantized model's trainable LoRA weights to bf16, and they are saved
    so; PEFT casts them back to fp32 on loading (its `autocast_adapter_dtype=False` is not
    supported for quantized models), and the scores would then differ from those of the model
    that training left in memory (by about 1e-3 in the margins).
    """
    import torch

    for name, param in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and param.dtype == torch.float32:
            param.data = param.data.to(torch.bfloat16)


def release_memory(*objects: Any) -> None:
    """Return freed model memory (accelerate's `release_memory`: garbage collection and the device cache)."""
    from accelerate.utils import release_memory as _release

    _release(*objects)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bar per `map` step: the evaluation has its own."""
    from datasets.utils import logging as datasets_logging

    enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            datasets_logging.enable_progress_bar()


def tokenize_units(units: Units, template: str, tokenizer: Any, dpo: Any) -> dict[int, dict[str, list[int]]]:
    """TRL's own preprocessing of each unit (template, EOS, tokenization, the prompt/response
    boundary, and the drop of prompts that fill `max_length`); unit index -> token ids."""
    from ..templates import to_dataset
    from ..tiny import cache_dir
    from ..tokenization import tokenize_pairs

    if not units.keys:
        return {}
    pairs = [Pair(p, a, b, 0.0, 0) for p, a, b in units.keys]
    dataset = to_dataset(pairs, template, with_margin=False).add_column("unit", list(range(len(pairs))))
    with _quiet_datasets():
        prepared = tokenize_pairs(dataset, tokenizer, dpo, "held-out", cache_dir() / "tokenized")
    return {
        row["unit"]: {
            "prompt_ids": row["prompt_ids"],
            "chosen_ids": row["chosen_ids"],
            "rejected_ids": row["rejected_ids"],
        }
        for row in prepared
    }


def score_units(
    models: PolicyModels, tokenized: Mapping[int, Mapping[str, list[int]]], dpo: Any, batch_size: int
) -> dict[int, tuple[tuple[float, float], tuple[float, float], tuple[int, int]]]:
    """Policy and reference log-probs of both responses of every unit, in one batch loop.

    Returns unit -> ((policy side 0, side 1), (reference side 0, side 1), (tokens side 0, side 1)).
    Units are sorted by length so batches carry little padding.
    """
    import torch
    from tqdm.auto import tqdm

    from ..trl_compat import DataCollatorForPreference, sequence_logps

    collator = DataCollatorForPreference(
        pad_token_id=models.tokenizer.pad_token_id,
        max_length=dpo.max_length,
        truncation_mode=dpo.truncation_mode,
        pad_to_multiple_of=dpo.pad_to_multiple_of,
    )
    order = sorted(
        tokenized,
        key=lambda u: (
            -(len(tokenized[u]["prompt_ids"]) + max(len(tokenized[u]["chosen_ids"]), len(tokenized[u]["rejected_ids"])))
        ),
    )
    out = {}
    device = models.device
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad(), training_precision(device, dpo.bf16, dpo.fp16):
        for units in tqdm(batches, desc="held-out log-probs (policy and reference)", unit="batch"):
            batch = collator([dict(tokenized[u]) for u in units])
            policy, tokens = sequence_logps(models.policy, batch, device)
            with models.reference() as reference_model:
                reference, _ = sequence_logps(reference_model, batch, device)
            n = len(units)
            for i, unit in enumerate(units):
                out[unit] = (
                    (policy[i].item(), policy[n + i].item()),
                    (reference[i].item(), reference[n + i].item()),
                    (int(tokens[i]), int(tokens[n + i])),
                )
    return out


