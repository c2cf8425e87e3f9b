"""Whether a training run learnt: a run whose weights did not move is `failed`, never `done`.

Why: a run that finishes is not a run that learns. A LoRA setting once trained nothing (every
gradient 0, every `lora_B` still 0) and still ended `done`, with 0.500 held-out accuracy on
every dimension. `LearningCheck` is a Trainer callback that records, for every trainable
tensor, a strided sample of its values when training begins (a few thousand numbers per
tensor, so it costs little even for full fine-tuning), the gradient norm at the first step
of this process, and then, after training, which tensors changed. `problem()` says why a run
did not learn, naming the setting that most likely caused it; `jobs/training.py` turns that
into a failed run, before the adapter is saved.

Under DeepSpeed ZeRO-3 or FSDP the parameters a rank holds may be empty placeholders or
shards: tensors with no elements are skipped, and where no tensor can be sampled only the
gradient norms decide.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from transformers import TrainerCallback

SAMPLE = 4096  # values sampled per tensor


def sample(tensor: torch.Tensor) -> torch.Tensor:
    """Up to SAMPLE values of `tensor`, evenly strided over it, as an fp32 copy on the CPU."""
    flat = tensor.detach().reshape(-1)
    stride = max(1, flat.numel() // SAMPLE)
    return flat[::stride][:SAMPLE].float().cpu().clone()


class LearningCheck(TrainerCallback):
    """Records what training must change (the trainable tensors) and whether it did.

    `first_grad_norm_clipped` is the norm of the trainable tensors' gradients at the first
    optimizer step of this process, after clipping to `max_grad_norm` (the Trainer calls its
    callbacks only after it clips; clipping keeps 0 at 0, which is what the check needs), so it
    is at most about max_grad_norm, unlike the pre-clipping `grad_norms` the Trainer logs; None
    where the gradients are not in `param.grad` (DeepSpeed keeps its own).
    """

    def __init__(self) -> None:
        self.start_step = 0
        self.before: dict[str, torch.Tensor] = {}
        self.trainable: list[str] = []
        self.first_grad_norm_clipped: float | None = None
        self._model: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.start_step = state.global_step  # a resumed run starts from its checkpoint's step
        self._model = model
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad] if model is not None else []
        self.trainable = [n for n, _ in params]
        with torch.no_grad():
            self.before = {n: sample(p) for n, p in params if p.numel() > 0}

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.first_grad_norm_clipped is not None or self._model is None:
            return
        grads = [p.grad for p in self._model.parameters() if p.requires_grad and p.grad is not None]
        if grads:
            norms = torch.stack([g.detach().float().norm() for g in grads])
            self.first_grad_norm_clipped = float(torch.linalg.vector_norm(norms))

    def changed(self) -> tuple[list[str], list[str]]:
        """The sampled trainable tensors that changed since training began, and those that did not."""
        now = dict(self._model.named_parameters()) if self._model is not None else {}
        changed, unchanged = [], []
        with torch.no_grad():
            for name, before in self.before.items():
                param = now.get(name)
                same = param is not None and param.numel() > 0 and torch.equal(sample(param), before)
                (unchanged if same else changed).append(name)
        return changed, unchanged

    def report(self, state: Any) -> dict[str, Any]:
        """What metrics.json records under `learning`: the steps this process trained (from `resumed_at_step`),
        tensors changed, first and logged gradient norms."""
        changed, unchanged = self.changed()
        return {
            "steps": state.global_step - self.start_step,
            "resumed_at_step": self.start_step,
            "trainable_tensors": len(self.trainable),
            "sampled_tensors": len(self.before),
            "changed_tensors": len(changed),
            "unchanged": unchanged[:20],
            "first_grad_norm_clipped": self.first_grad_norm_clipped,
            "grad_norms": logged(state.log_history, "grad_norm", self.start_step),
        }

    def problem(self, state: Any, train: Mapping[str, Any], peft: Any = None) -> str | None:
        """Why this run did not learn, naming the likely setting; None when it learnt (or trained no step here)."""
        report = self.report(state)
        steps = report["steps"]
        if steps <= 0:
            return None  # resumed at the end of its schedule: nothing was trained in this process
        if not self.trainable:
            return (f"training did not learn: no parameter requires a gradient ({likely(train, peft, 'none')}); "
                    "the adapter was not saved")  # fmt: skip
        norms = [n for n in [report["first_grad_norm_clipped"], *report["grad_norms"]] if n is not None]
        zero_grads = bool(norms) and all(n == 0 for n in norms)
        frozen = report["sampled_tensors"] > 0 and report["changed_tensors"] == 0
        if not (zero_grads or frozen):
            return None
        what = []
        if zero_grads:
            what.append("the gradient norm was 0 at every logged step")
        if frozen:
            what.append(f"none of the {report['sampled_tensors']} trainable tensors changed")
        cause = likely(train, peft, "zero_grad" if zero_grads else "frozen", logged(state.log_history, "learning_rate",
                                                                                   self.start_step))  # fmt: skip
        span = f"{steps} step" if steps == 1 else f"{steps} steps"
        if self.start_step:  # a resumed run: this process trained only the last steps
            which = f"step {state.global_step}" if steps == 1 else f"steps {self.start_step + 1}-{state.global_step}"
            span += f" ({which}, after resuming at step {self.start_step})"
        return f"training did not learn in {span}: {' and '.join(what)} ({cause}); the adapter was not saved"


def logged(history: Iterable[Mapping[str, Any]], key: str, after: int = 0) -> list[float]:
    """The finite values of `key` in the Trainer's log history, at steps after `after`."""
    return [float(h[key]) for h in history if isinstance(h.get(key), (int, float)) and h.get("step", 0) > after
            and math.isfinite(h[key])]  # fmt: skip


def likely(train: Mapping[str, Any], peft: Any, kind: str, rates: Iterable[float] = ()) -> str:
    """The setting that most likely kept the run from learning (`kind`: none trainable, zero gradients, or
    non-zero gradients that changed nothing), as a hint for the error message."""
    lr, rates = train.get("learning_rate"), list(rates)
    modules = getattr(peft, "target_modules", None) if getattr(peft, "method", None) == "lora" else None
    modules = modules if modules is None or isinstance(modules, str) else list(modules)
    if kind == "none":
        return (f"does peft.target_modules={modules} name layers of this model?" if modules is not None
                else "check peft and model.adapter")  # fmt: skip
    if lr == 0 or (rates and all(r == 0 for r in rates)):
        return f"train.learning_rate={lr}: give a learning rate > 0"
    if kind == "frozen":  # gradients arrived, the optimizer moved nothing
        return (f"the gradients were non-zero but no update was applied: check train.learning_rate={lr} and its "
                "warm-up (train.warmup_steps, train.warmup_ratio: a linear warm-up's first step has learning rate 0)")
    hint = f"peft.target_modules={modules}" if modules is not None else "the trained parameters"
    checkpointing = ", train.gradient_checkpointing" if train.get("gradient_checkpointing") else ""
    return (f"no gradient reached {hint}; check that setting{checkpointing} and model.adapter, and compare with "
            "train.precompute_ref=false")
