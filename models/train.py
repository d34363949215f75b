"""Training in torch: the ``train`` source (a zoo family trained on the recipe's task) and the ``finetune``
stage (more training of any torch artifact). The loss and the batches come from the task kind, so the
same loop trains a classifier on digits and a language model on standard-library text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from edgepipe.configs import Section, SourceConfig, StageConfig
from edgepipe.errors import InputError
from edgepipe.store import Parents, StageOutput

if TYPE_CHECKING:
    import torch

    from edgepipe.stage import StageContext
    from edgepipe.tasks import Preprocessor, Task

# A training loss besides the task's own: (first output, targets, the batch's feeds) -> loss.
Objective = Callable[["torch.Tensor", "torch.Tensor", dict[str, np.ndarray]], "torch.Tensor"]

# A progress line at most this often while training (an epoch of a language model takes minutes).
PROGRESS_EVERY_S = 30.0


class Optimization(Section):
    """How to train: AdamW with a one-cycle learning-rate schedule, on the task's training split."""

    epochs: int = Field(5, ge=0)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (default: all epochs)")


class TokenizerConfig(Section):
    """A byte-level BPE trained on the task's training text (text tasks)."""

    vocab_size: int = Field(512, ge=260, le=65536)


class TrainSource(SourceConfig, Optimization):
    """A registered model family, trained here on the recipe's task."""

    kind: Literal["train"] = "train"
    family: str = "cnn"
    params: dict[str, Any] = {}
    tokenizer: TokenizerConfig | None = Field(None, description="text tasks: the tokenizer to train first")


class Finetune(StageConfig, Optimization):
    """More training of the model so far on the task's training split (e.g. after pruning)."""

    stage: Literal["finetune"] = "finetune"
    trains: ClassVar[bool] = True
    epochs: int = Field(2, ge=0)
    learning_rate: float = Field(1e-3, gt=0)


def first_output(out: Any) -> Any:
    """A module's first output (a tensor, or the first of a tuple or list of them)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)


def predict(model: torch.nn.Module, feeds: list[dict[str, np.ndarray]], names: list[str]) -> list[np.ndarray]:
    """The first output of ``model`` on each feed dict (inputs passed in ``names`` order)."""
    import torch

    model.eval()
    with torch.inference_mode():
        outs = []
        for f in feeds:
            out = model(*(torch.from_numpy(np.ascontiguousarray(f[n])) for n in names))
            outs.append(first_output(out).numpy())
    return outs


def train(
    model: torch.nn.Module,
    task: Task,
    pre: Preprocessor,
    config: Optimization,
    seed: int,
    ctx: StageContext,
    label: str = "train",
    objective: Objective | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place with the task's loss (or ``objective``: a distillation's loss, which also
    sees the batch's feeds); return a history with the test metrics reached."""
    import torch

    seed_everything(seed)
    rng = np.random.default_rng(seed)
    names = [s.name for s in pre.inputs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    per_epoch = sum(1 for _ in task.training_batches(pre, config.batch_size, np.random.default_rng(seed)))
    steps = max(1, min(config.epochs * per_epoch, config.max_steps or 1 << 62))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=steps)
    history: list[float] = []
    start, step = time.perf_counter(), 0
    reported = start
    for epoch in range(config.epochs):
        model.train()
        total, count = 0.0, 0
        for feeds, target in task.training_batches(pre, config.batch_size, rng):
            if step >= steps:
                break
            optimizer.zero_grad(set_to_none=True)
            out = model(*(torch.from_numpy(feeds[n]) for n in names))
            out = first_output(out)
            labels = torch.from_numpy(target)
            loss = objective(out, labels, feeds) if objective else task.loss(out, labels)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            total += loss.item() * len(target)
            count += len(target)
            ctx.progress(f"[{label}] {steps} steps", step, steps)
            if (now := time.perf_counter()) - reported >= PROGRESS_EVERY_S:  # a long epoch shows it is moving
                reported, took = now, now - start
                left = took / step * (steps - step)
                ctx.log(
                    f"[{label}] epoch {epoch + 1}/{config.epochs}, step {step}/{steps}: loss {total / count:.4f} "
                    f"({took:.0f} s, about {left / 60:.1f} min left)"
                )
        history.append(round(total / max(count, 1), 5))
        if epoch == config.epochs - 1 or step >= steps:
            ctx.progress(f"[{label}] {steps} steps", steps, steps)  # the bar goes; the epoch's line stays
        took = time.perf_counter() - start
        ctx.log(f"[{label}] epoch {epoch + 1}/{config.epochs}: loss {history[-1]:.4f} ({took:.0f} s, {step} steps)")
    data = task.eval_set(pre)
    metrics, _, _ = task.quality(predict(model, data.batches, names), data, None)
    return {
        "epochs": config.epochs,
        "steps": step,
        "loss_per_epoch": history,
        "test_metrics": metrics,
        "seconds": round(time.perf_counter() - start, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),  # results can differ in the last bits across thread counts
    }


def training_summary(history: dict[str, Any]) -> str:
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in history["test_metrics"].items())
    return f"{history['parameters']:,} parameters, test {metrics} after {history['steps']} steps"


def train_source(parents: Parents, config: TrainSource, out: Path, ctx: StageContext) -> StageOutput:
    """Build a zoo family for the task (training its tokenizer first on text tasks) and train it."""
    from edgepipe.models import build_module, family_module, save_torch_model, validate_params, zoo_spec
    from edgepipe.tasks import Preprocessor

    family_module(config.family)  # unavailable (exit 3) before any work when torch is missing
    tokenizer, preprocessing = None, dict[str, Any]()
    if ctx.task.needs_tokenizer:
        tokenizer = ctx.task.train_tokenizer((config.tokenizer or TokenizerConfig()).vocab_size)
        tokenizer.save(out / "tokenizer.json")
        preprocessing = {"files": ["tokenizer.json"], "tokenizer": {"file": "tokenizer.json", "kind": tokenizer.kind}}
    io = ctx.task.model_io(tokenizer)
    params = validate_params(config.family, config.params).model_dump(mode="json")
    spec = zoo_spec(config.family, params, io)
    seed_everything(ctx.seed)
    model = build_module(spec, out)
    # The model's own limit (a language model's context length) is what an app may feed it; the task's
    # lengths must fit it, and this is said before any training.
    limit = getattr(model, "max_length", None)
    needs = {
        "context_length": io.max_length,
        "sequence_lengths": max((n for n in ctx.task.sequence_lengths() if n), default=None),
    }
    for field, needed in needs.items():
        if limit is not None and needed is not None and needed > limit:
            raise InputError(f"task.{field}: {needed} is longer than the model's maximum {limit} (source.params)")
    if limit is not None:
        preprocessing["max_length"] = limit
    history = train(model, ctx.task, Preprocessor(io.inputs, tokenizer, io.max_length), config, ctx.seed, ctx)
    ctx.log(f"[train] {config.family}: {training_summary(history)}")
    spec = save_torch_model(model, spec, out)
    return StageOutput(
        format="torch",
        precision="fp32",
        primary="model.safetensors",
        inputs=io.inputs,
        outputs=io.outputs,
        model={**spec, "training": history},
        preprocessing=preprocessing,
    )


def finetune_stage(parents: Parents, config: Finetune, out: Path, ctx: StageContext) -> StageOutput:
    """Train the parent torch model further; its module spec (and so any change of shape) is kept."""
    from edgepipe.models import copy_spec_files, derived_output, save_torch_model

    parent = parents["model"]
    copy_spec_files(parent, out)
    model = ctx.torch_module(parent)
    history = train(model, ctx.task, ctx.preprocessor(parent), config, ctx.seed, ctx, label="finetune")
    ctx.log(f"[finetune] {training_summary(history)}")
    spec = save_torch_model(model, parent.manifest.model, out)
    return derived_output(parent, {**spec, "training": history})
