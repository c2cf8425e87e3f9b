"""Everything safealign takes from TRL's private internals, in one place.

Why one module: TRL moves its private methods between releases. Each internal used here
is listed in `INTERNALS`; `check_internals()` runs on import and fails at once, naming
what moved, instead of failing deep inside a training run (`tests/test_trl_compat.py`
runs it too). What this module uses:

- `DPOTrainer._prepare_dataset`: TRL's own tokenization (template, EOS, prompt/response
  boundary, the drop of prompts that fill `max_length`), so held-out scoring sees exactly
  the token ids training saw;
- `DataCollatorForPreference`, `add_fused_lm_head`: batching and the log-prob head;
- `data_utils.common_prefix_length`, `is_conversational`: the prompt/response boundary and
  the plain-text test that `safealign.tokenization` (TRL's tokenization, batched) needs;
- `hash_module` (as `dpo_trainer` calls it): a reference hash that leaves out the trained
  adapter's random initial weights, so seed sweeps share the reference cache;
- `RewardTrainer._set_signature_columns_if_needed`, `_metrics`, the reward collator and
  `suppress_seqcls_warning` (quiet about the new score head of a causal LM loaded for scoring):
  `JudgeTrainer` keeps each response's safety sign in the batch and adds Safe RLHF's
  classification term to TRL's pairwise loss for a cost model (`recipes/reward.py judge=cost`);
- `_precompute_ref_logps`, `_precompute_model_hash`, `_compute_loss`,
  `compute_ref_log_probs`, `_set_signature_columns_if_needed`, `_metrics`: the hooks
  `MarginDPOTrainer` overrides to add a per-pair margin, the `ipo_sum` loss, an on-disk
  reference cache, pre-tokenized datasets, and the margin-free `rewards/*` it logs.

The TRL config fields that settings check `train` keys against (public dataclasses, not
internals) are snapshotted by `safealign.trl_fields`, so config checking never imports TRL.
Safe RLHF's cost loss itself is in `safealign.losses`; `JudgeTrainer` adds it to TRL's path.

A pair's margin m enters every loss through the reference: adding m/β to the chosen
reference log-prob turns the log-ratio difference h into h - m/β, so the sigmoid loss
becomes -log σ(β·h - m), hinge relu(1 - β·h + m), and so on, without copying TRL's loss
code. Log-ratios are summed over the completion tokens, so m is a per-sequence margin. The
length-normalised losses (`ipo`, `sigmoid_norm`) divide the chosen log-ratio by the chosen
length, so there the offset is scaled by that length to keep the same meaning: the IPO
target 1/(2β) moves to (1/2 + m)/β for the per-token average. Pairs without margins, with
TRL's loss types, never reach this code path: `templates.to_dataset` only adds the `margin`
column when some margin is non-zero.

safealign's own loss type `ipo_sum` (`losses.OWN_LOSS_TYPES`) is IPO on summed log-ratios,
(h - 1/(2β))², as the BFPO authors compute it; with a margin it is (h - (1/2 + m)/β)²,
BFPO's (h - target/β)² for m = target - 1/2. TRL does not know it: `_compute_loss` hands TRL
the other loss types (swapping `loss_types` and `loss_weights` for the call; TRL's forward
pass, reference handling and metrics stay TRL's) and adds the `ipo_sum` term from the same
forward pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import trl
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from trl import DPOTrainer, RewardTrainer
from trl import data_utils as trl_data_utils
from trl.trainer import dpo_trainer, reward_trainer
from trl.trainer import utils as trl_utils

from . import io
from .losses import LENGTH_NORMALISED, OWN_LOSS_TYPES, SUMMED_IPO, check_own_losses, classification_term

log = logging.getLogger(__name__)

# (object, attribute): the private names safealign relies on.
INTERNALS = (
    (DPOTrainer, "_prepare_dataset"),
    (DPOTrainer, "_precompute_ref_logps"),
    (DPOTrainer, "_compute_loss"),
    (DPOTrainer, "compute_ref_log_probs"),
    (DPOTrainer, "_set_signature_columns_if_needed"),
    (dpo_trainer, "DataCollatorForPreference"),
    (trl_utils, "add_fused_lm_head"),
    (trl_utils, "pad"),
    (dpo_trainer, "hash_module"),
    (trl_data_utils, "common_prefix_length"),
    (trl_data_utils, "is_conversational"),
    (RewardTrainer, "_set_signature_columns_if_needed"),
    (reward_trainer, "DataCollatorForPreference"),
    (reward_trainer, "suppress_seqcls_warning"),
)
common_prefix_length = trl_data_utils.common_prefix_length
# Attributes DPOTrainer sets on itself in __init__ that the overrides read.
INSTANCE_ATTRIBUTES = ("_precompute_model_hash", "precompute_ref_logps", "loss_types", "loss_weights", "beta",
                       "_metrics")  # fmt: skip
REWARD_ATTRIBUTES = ("_metrics", "_signature_columns")  # RewardTrainer's own, read or filled by JudgeTrainer
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def check_internals() -> None:
    """Fail loudly, naming each missing internal, when the installed TRL moved one."""
    missing = [f"{getattr(owner, '__name__', owner)}.{name}" for owner, name in INTERNALS if not hasattr(owner, name)]
    source = inspect.getsource(DPOTrainer.__init__)
    missing += [f"DPOTrainer().{name}" for name in INSTANCE_ATTRIBUTES if f"self.{name}" not in source]
    source = inspect.getsource(RewardTrainer)
    missing += [f"RewardTrainer().{name}" for name in REWARD_ATTRIBUTES if f"self.{name}" not in source]
    if missing:
        raise ImportError(
            f"safealign needs TRL internals that trl {trl.__version__} does not have: {', '.join(missing)}. "
            "Install the TRL version pyproject.toml pins, or update safealign/trl_compat.py."
        )


check_internals()
DataCollatorForPreference = dpo_trainer.DataCollatorForPreference
add_fused_lm_head = trl_utils.add_fused_lm_head
pad = trl_utils.pad
suppress_seqcls_warning = reward_trainer.suppress_seqcls_warning


class _TokenizerHolder:
    """What `DPOTrainer._prepare_dataset` reads from the trainer: only its tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer


def prepare_dataset(dataset: Any, tokenizer: Any, args: Any, name: str) -> Any:
    """TRL's own preprocessing of a preference dataset, without building a trainer."""
    return DPOTrainer._prepare_dataset(_TokenizerHolder(tokenizer), dataset, tokenizer, args, name)


def is_plain_text(example: dict[str, Any], tokenizer: Any) -> bool:
    """Whether TRL tokenizes this example as plain text (no chat template, no multimodal processor),
    the case `safealign.tokenization` batches."""
    from transformers import ProcessorMixin

    conversational = trl_data_utils.is_conversational(example)
    return "prompt" in example and not conversational and not isinstance(tokenizer, ProcessorMixin)


def sequence_logps(model: Any, batch: dict[str, Any], device: Any) -> tuple[Any, Any]:
    """Summed log-probs of the completion tokens, and their number, as TRL computes them in training
    (the model must carry TRL's fused log-prob head, `add_fused_lm_head`)."""
    input_ids = batch["input_ids"].to(device)
    completion_mask = batch["completion_mask"].to(device)
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    out = model(
        input_ids=input_ids,
        attention_mask=batch["attention_mask"].to(device),
        labels=labels,
        use_cache=False,
        fused_lm_head=True,
    )
    per_token = out.log_probs[:, -(completion_mask.size(1) - 1) :]
    return per_token.sum(dim=1).double().cpu(), completion_mask[:, 1:].sum(dim=1).cpu()


@dataclass
class MarginCollator(DataCollatorForPreference):
    """TRL's preference collator, passing the `margin` column through as a tensor."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        if "margin" in examples[0]:
            batch["margin"] = torch.tensor([e["margin"] for e in examples], dtype=torch.float32)
        return batch


def content_hash(dataset: Any, columns: tuple[str, ...] = ("prompt_ids", "chosen_ids", "rejected_ids")) -> str:
    """sha256 of the token ids of a tokenized preference dataset, read straight from Arrow buffers."""
    digest = hashlib.sha256()
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    for column in columns:
        array = table.column(column).combine_chunks()
        digest.update(column.encode())
        digest.update(array.offsets.to_numpy().tobytes())
        digest.update(array.values.to_numpy().tobytes())
    return digest.hexdigest()


class MarginDPOTrainer(DPOTrainer):
    """`DPOTrainer` that folds a per-pair `margin` into the chosen reference log-prob.

    With `ref_cache_dir`, precomputed reference log-probs are cached on disk, keyed by the
    hash of the reference weights that TRL computes for its own precompute, the exact token
    ids (so the data, template and truncation) and the settings that change the numbers, and
    reused by later runs, e.g. the other runs of a sweep that vary only β or the learning rate.
    A cache file that cannot be read is a derived file: it is rebuilt, with a warning.
    """

    def __init__(
        self, *args: Any, ref_cache_dir: str | Path | None = None, ref_identity: str = "", **kwargs: Any
    ) -> None:
        self._ref_cache_dir = Path(ref_cache_dir) if ref_cache_dir else None
        # Before TRL wraps anything (DeepSpeed ZeRO-3 leaves placeholder weights that any model of the same
        # shape shares): which model the reference is, beside the hash of its weights.
        self._model_identity = model_identity(kwargs.get("ref_model") or kwargs.get("model"), ref_identity)
        self.ref_cache_hits: list[str] = []
        train_dataset = kwargs.get("train_dataset")
        self._has_margin = train_dataset is not None and "margin" in train_dataset.column_names
        args_ = kwargs.get("args")
        if self._has_margin and kwargs.get("data_collator") is None:
            kwargs["data_collator"] = MarginCollator(
                pad_token_id=kwargs["processing_class"].pad_token_id,
                max_length=args_.max_length,
                truncation_mode=args_.truncation_mode,
                pad_to_multiple_of=args_.pad_to_multiple_of,
            )
        if args_ is not None:  # checked with the settings too; here for direct use of this trainer
            check_own_losses(args_.loss_type, args_.ld_alpha, args_.use_weighting)
        with _reference_hash(kwargs.get("ref_model")):
            super().__init__(*args, **kwargs)
        # TRL computes its own loss types; safealign's `ipo_sum`, with this weight, is added in `_compute_loss`.
        self._summed_ipo = sum(w for t, w in zip(self.loss_types, self.loss_weights, strict=True) if t == SUMMED_IPO)
        if self._has_margin or SUMMED_IPO in self.loss_types:
            # From here on the reference log-probs always travel in the batch: TRL's
            # precomputed ones, or computed per batch in `_compute_loss` below.
            self.precompute_ref_logps = True

    def _ref_cache_path(self, dataset: Any) -> Path | None:
        if self._ref_cache_dir is None:
            return None
        key = json.dumps([self._precompute_model_hash, self._model_identity, content_hash(dataset),
                          self.args.max_length, self.args.truncation_mode, self.args.ld_alpha,
                          self.args.pad_to_multiple_of, self.args.bf16, self.args.fp16,
                          self.accelerator.device.type])  # fmt: skip
        return self._ref_cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"

    def _load_cached(self, path: Path, rows: int) -> dict[str, Any] | None:
        try:
            cached = load_file(path)
            if all(cached[c].shape == (rows,) for c in REF_COLUMNS):
                return cached
            problem = "it holds another number of rows"
        except (OSError, SafetensorError, KeyError, ValueError) as err:
            problem = str(err)
        log.warning("reference log-prob cache %s is unusable (%s); computing it again", path, problem)
        return None

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        # One decision for every rank, rank 0's: the miss path holds collectives, so ranks that decided
        # differently (a file written between two checks, a hash of ZeRO-3 shards) would wait forever.
        path = rank0_value(self._ref_cache_path(dataset))
        main = self.accelerator.is_main_process
        cached = rank0_value(self._load_cached(path, len(dataset)) if main and path is not None and path.exists()
                             else None)  # fmt: skip
        if cached is not None:
            self.ref_cache_hits.append(name)
            for column in REF_COLUMNS:
                dataset = dataset.add_column(column, cached[column].tolist())
            return dataset
        dataset = super()._precompute_ref_logps(dataset, name, batch_size)
        if path is not None and self.accelerator.is_main_process:
            tensors = {c: torch.tensor(dataset[c], dtype=torch.float32) for c in REF_COLUMNS}
            with io.atomic_path(path) as tmp:
                save_file(tensors, tmp)
        return dataset

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        """Datasets that `safealign.tokenization` already tokenized (and cached) pass through as they are."""
        if "prompt_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._has_margin and "margin" not in self._signature_columns:
            self._signature_columns.append("margin")

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "margin"})

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        if "margin" not in inputs and SUMMED_IPO not in self.loss_types:
            return super()._compute_loss(model, inputs, return_outputs)
        inputs = dict(inputs)
        margin = inputs.pop("margin", None)
        if "ref_chosen_logps" not in inputs:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or self.model, inputs)
            inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = ref_chosen, ref_rejected
        ref_chosen = inputs["ref_chosen_logps"]
        if margin is not None:
            offset = margin.to(ref_chosen.device, ref_chosen.dtype) / self.beta
            if LENGTH_NORMALISED & set(self.loss_types):
                chosen_mask = inputs["completion_mask"].chunk(2, dim=0)[0]
                offset = offset * chosen_mask.sum(dim=1).clamp(min=1).to(offset.dtype)
            inputs["ref_chosen_logps"] = ref_chosen + offset
        recorder = _OutputRecorder(model)
        with self._trl_loss_types():
            result = super()._compute_loss(recorder, inputs, return_outputs)
        if SUMMED_IPO in self.loss_types:
            own = self._summed_ipo * self._summed_ipo_loss(recorder.outputs, inputs)
            result = (result[0] + own, *result[1:]) if return_outputs else result + own
        if margin is not None and self.args.ld_alpha is None:
            self._log_offset_free(recorder.outputs, inputs, ref_chosen)
        return result

    @contextlib.contextmanager
    def _trl_loss_types(self) -> Iterator[None]:
        """While TRL's `_compute_loss` runs: only the loss types TRL knows (with none left, TRL's loss is 0)."""
        types, weights = self.loss_types, self.loss_weights
        kept = [(t, w) for t, w in zip(types, weights, strict=True) if t not in OWN_LOSS_TYPES]
        self.loss_types, self.loss_weights = [t for t, _ in kept], [w for _, w in kept]
        try:
            yield
        finally:
            self.loss_types, self.loss_weights = types, weights

    def _summed_ipo_loss(self, outputs: Any, inputs: dict[str, Any]) -> Any:
        """`ipo_sum` from TRL's forward pass: the mean of (h - 1/(2β))² over pairs, h the difference of summed
        log-ratios; a margin m, already added to the chosen reference as m/β, makes it (h - (1/2 + m)/β)²."""
        seq_len = inputs["completion_mask"].size(1) - 1
        logps = outputs.log_probs[:, -seq_len:].sum(dim=1)  # TRL's summed log-probs (no ld_alpha, refused)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)
        h = (chosen_logps - inputs["ref_chosen_logps"]) - (rejected_logps - inputs["ref_rejected_logps"])
        return ((h - 1 / (2 * self.beta)) ** 2).mean()

    def _log_offset_free(self, outputs: Any, inputs: dict[str, Any], ref_chosen: Any) -> None:
        """Log TRL's `rewards/*` without the margin offset; keep the offset-included ones as `*_with_offset`.

        TRL computed its rewards from the shifted reference, so its `rewards/accuracies` and
        `rewards/margins` say how often β·h exceeds the margin, not whether the policy prefers
        the chosen response. Recomputed here from the same forward pass (no extra compute).
        """
        metrics = self._metrics["train" if self.model.training else "eval"]
        seq_len = inputs["completion_mask"].size(1) - 1
        logps = outputs.log_probs[:, -seq_len:].detach().sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)
        chosen = self.beta * (chosen_logps - ref_chosen.to(logps.dtype))
        rejected = self.beta * (rejected_logps - inputs["ref_rejected_logps"].to(logps.dtype))
        gather = self.accelerator.gather
        metrics["rewards/accuracies_with_offset"].append(metrics["rewards/accuracies"].pop())
        metrics["rewards/margins_with_offset"].append(metrics["rewards/margins"].pop())
        metrics["rewards/chosen"][-1] = gather(chosen).mean().item()
        metrics["rewards/accuracies"].append(gather((chosen > rejected).float()).mean().item())
        metrics["rewards/margins"].append(gather(chosen - rejected).mean().item())


def rank0_value(value: Any) -> Any:
    """Rank 0's `value` on every rank of a distributed run (the value itself in a single process)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def model_identity(model: Any, extra: str = "") -> str:
    """What names a model independently of its weights' values: its name or path, revision, and every
    parameter's name and full shape (`ds_shape` under ZeRO-3, whose local tensors are empty placeholders).
    `extra`: what the caller knows beyond that (e.g. the starting adapter's path and contents)."""
    if model is None:
        return extra
    config = getattr(model, "config", None)
    digest = hashlib.sha256()
    digest.update(json.dumps([getattr(config, "_name_or_path", None), getattr(config, "_commit_hash", None),
                              extra]).encode())  # fmt: skip
    for name, param in model.named_parameters():
        digest.update(f"{name}:{tuple(getattr(param, 'ds_shape', param.shape))};".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _reference_hash(ref_model: Any) -> Iterator[None]:
    """While TRL's `__init__` runs: hash only what the reference computes with.

    TRL keys precomputed reference log-probs by `hash_module(model)`, which includes the new
    LoRA adapter's random initial weights: runs that differ only in `train.seed` would never
    share the cache although their reference (the adapter disabled) is the same. Without a
    separate `ref_model`, the trained adapter's weights are left out of the hash (a frozen
    "ref" adapter, when there is one, stays in).
    """
    original = dpo_trainer.hash_module

    def reference_only(module: Any) -> str:
        trained = getattr(module, "active_adapters", None)
        if ref_model is not None or not trained or not hasattr(module, "peft_config"):
            return original(module)
        names = {f".{name}." for name in trained if name != "ref"}
        digest = hashlib.sha256()
        for key, tensor in sorted(module.state_dict().items()):
            if not any(n in key for n in names):
                tensor = tensor.detach().cpu()
                digest.update(f"{key}:{tensor.dtype}".encode())
                digest.update(tensor.float().numpy().tobytes() if tensor.dtype.is_floating_point else
                              tensor.numpy().tobytes())  # fmt: skip
        return digest.hexdigest()

    dpo_trainer.hash_module = reference_only
    try:
        yield
    finally:
        dpo_trainer.hash_module = original


class _OutputRecorder:
    """Calls the model and keeps its first output, so the loss's own forward pass can be read again."""

    def __init__(self, model: Any) -> None:
        self.model, self.outputs = model, None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.model(*args, **kwargs)
        if self.outputs is None:
            self.outputs = out
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


SIGN_COLUMNS = ("chosen_sign", "rejected_sign")  # +1 unsafe, -1 safe: a cost model's per-response labels


class JudgeCollator(reward_trainer.DataCollatorForPreference):
    """TRL's reward collator (chosen rows, then rejected rows), with the safety signs when the examples have them."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        if SIGN_COLUMNS[0] in examples[0]:
            for column in SIGN_COLUMNS:
                out[column] = torch.tensor([e[column] for e in examples], dtype=torch.float)
        return out


class JudgeTrainer(RewardTrainer):
    """TRL's RewardTrainer; with sign columns in the data (a cost model) its loss is Safe RLHF's cost loss.

    TRL's own `compute_loss` gives the pairwise term (and its metrics: accuracy, margin); the
    "chosen" response is the one whose score must be higher (the more helpful response for a
    reward model, the more harmful one for a cost model). The classification term is added on
    the scores of the same forward pass. A reward model (no sign columns) trains on TRL's path.
    """

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *SIGN_COLUMNS]))

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        signs = [inputs.pop(c, None) for c in SIGN_COLUMNS]
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if signs[0] is not None:
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            signs = [s.to(chosen.device, chosen.dtype) for s in signs]
            loss = loss + classification_term(chosen, signs[0]) + classification_term(rejected, signs[1])
            with torch.no_grad():
                right = torch.cat([(chosen > 0) == (signs[0] > 0), (rejected > 0) == (signs[1] > 0)]).float().mean()
            self._metrics["train" if self.model.training else "eval"]["sign_accuracy"].append(right.item())
        return (loss, outputs) if return_outputs else loss
