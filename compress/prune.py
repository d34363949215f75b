"""Structured pruning: torch-pruning's dependency graph removes whole channels, attention heads and FFN
width (and everything that depends on them: a residual's partners, a BatchNorm, the next layer's inputs),
so the pruned model has smaller tensors and every runtime runs fewer operations.

The target is a ratio of channels, or a budget: a fraction of the model's MACs, or a latency measured on
onnxruntime. Iterative pruning removes the target in ``steps`` and fine-tunes after each one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from edgepipe.configs import StageConfig
from edgepipe.models.train import Optimization
from edgepipe.store import Parents, StageOutput

if TYPE_CHECKING:
    from edgepipe.stage import StageContext


class Finetuning(Optimization):
    """Training after each pruning step (``epochs: 0``: none)."""

    epochs: int = Field(1, ge=0)
    learning_rate: float = Field(1e-3, gt=0)


class Prune(StageConfig):
    """Remove whole channels, heads and FFN width with torch-pruning; exactly one of ``ratio``, ``macs`` or
    ``latency_ms`` says how much."""

    stage: Literal["prune"] = "prune"
    trains: ClassVar[bool] = True
    tag: ClassVar[str | None] = "pruned"
    ratio: float | None = Field(None, gt=0, lt=1, description="fraction of every prunable layer's channels to remove")
    macs: float | None = Field(None, gt=0, lt=1, description="budget: keep at most this fraction of the model's MACs")
    latency_ms: float | None = Field(
        None, gt=0, description="budget: prune until onnxruntime runs the model at batch 1 within this many ms"
    )
    importance: Literal["l1", "l2", "taylor"] = Field(
        "l2", description="how channels are ranked: weight magnitude (L1, L2) or first-order Taylor (loss gradient)"
    )
    steps: int | None = Field(
        None,
        ge=1,
        le=100,
        description="prune in this many steps, fine-tuning after each (default: 1 for a ratio, 10 for a budget)",
    )
    max_ratio: float = Field(0.9, gt=0, lt=1, description="budgets: never remove more than this fraction of channels")
    global_pruning: bool = Field(False, description="rank channels across layers instead of the same ratio per layer")
    ignore: list[str] = Field([], description="layers to keep whole besides the output layer (module names)")
    finetune: Finetuning = Finetuning()
    threads: int = Field(2, ge=1, le=256, description="latency_ms: onnxruntime threads of the measurement")

    @model_validator(mode="after")
    def _one_target(self) -> Prune:
        given = [n for n in ("ratio", "macs", "latency_ms") if getattr(self, n) is not None]
        if len(given) != 1:
            said = ", ".join(given) if given else "none"
            raise ValueError(f"ratio: give exactly one of ratio, macs or latency_ms (got {said})")
        return self

    @property
    def budgeted(self) -> bool:
        return self.ratio is None


def _importance(name: str) -> Any:
    import torch_pruning as tp

    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2)


def _gradients(model: Any, ctx: StageContext, pre: Any, config: Prune, batches: int = 8) -> None:
    """Loss gradients on a few training batches: what Taylor importance ranks channels by."""
    import numpy as np
    import torch

    from edgepipe.models.train import first_output

    names = [s.name for s in pre.inputs]
    model.zero_grad(set_to_none=True)
    model.eval()
    rng = np.random.default_rng(ctx.seed)
    for i, (feeds, target) in enumerate(ctx.task.training_batches(pre, config.finetune.batch_size, rng)):
        if i >= batches:
            break
        out = model(*(torch.from_numpy(feeds[n]) for n in names))
        ctx.task.loss(first_output(out), torch.from_numpy(target)).backward()


def prune_stage(parents: Parents, config: Prune, out: Path, ctx: StageContext) -> StageOutput:
    import torch_pruning as tp

    from edgepipe.compress.common import (
        describe,
        example_args,
        macs_and_parameters,
        named_layers,
        onnx_latency_ms,
        output_layers,
    )
    from edgepipe.models import copy_spec_files, derived_output, save_torch_model
    from edgepipe.models.train import train

    parent = parents["model"]
    copy_spec_files(parent, out)
    model = ctx.torch_module(parent).eval()
    pre = ctx.preprocessor(parent)
    args = example_args(ctx, parent, 1)
    hints = dict(model.pruning_hints()) if hasattr(model, "pruning_hints") else {}
    kept = named_layers(model, [*output_layers(model, args), *config.ignore], "prune.ignore")
    ignored = list({id(m): m for m in [*hints.get("ignored_layers", []), *kept]}.values())
    heads = hints.get("num_heads", {})
    steps = config.steps or (10 if config.budgeted else 1)
    ratio = config.max_ratio if config.budgeted else float(config.ratio)  # type: ignore[arg-type]
    pruner = tp.pruner.MetaPruner(
        model,
        args,
        importance=_importance(config.importance),
        pruning_ratio=ratio,
        iterative_steps=steps,
        global_pruning=config.global_pruning,
        ignored_layers=ignored,
        num_heads=heads,
        prune_num_heads=bool(heads),
        prune_head_dims=False,
        head_pruning_ratio=ratio if heads else 0.0,
    )
    macs0, params0 = macs_and_parameters(model, args)
    latency0 = onnx_latency_ms(model, args, config.threads) if config.latency_ms else None
    history: list[dict[str, Any]] = []
    met = False
    for step in range(1, steps + 1):
        if config.importance == "taylor":
            _gradients(model, ctx, pre, config)
        pruner.step()
        model.zero_grad(set_to_none=True)
        macs, params = macs_and_parameters(model, args)
        entry: dict[str, Any] = {"step": step, "channel_ratio": round(ratio * step / steps, 4), "macs": macs}
        entry["parameters"] = params
        if config.finetune.epochs:
            label = f"prune step {step}/{steps}"
            entry["test_metrics"] = train(model, ctx.task, pre, config.finetune, ctx.seed + step, ctx, label)[
                "test_metrics"
            ]
        if config.latency_ms:
            entry["latency_ms"] = round(onnx_latency_ms(model, args, config.threads), 4)
        history.append(entry)
        ctx.log(describe(f"prune {step}/{steps}", entry))
        met = _within_budget(config, entry, macs0)
        if config.budgeted and met:
            break
    summary: dict[str, Any] = {
        "importance": config.importance,
        "channel_ratio": history[-1]["channel_ratio"],
        "macs_before": macs0,
        "macs_after": history[-1]["macs"],
        "parameters_before": params0,
        "parameters_after": history[-1]["parameters"],
        "steps": history,
    }
    if config.budgeted:
        summary |= {"budget": {"macs": config.macs, "latency_ms": config.latency_ms}, "budget_met": met}
    if latency0 is not None:
        summary |= {"latency_before_ms": round(latency0, 4), "latency_runtime": "onnxruntime"}
    if config.budgeted and not met:
        ctx.log(f"[prune] BUDGET NOT MET at {summary['channel_ratio']:.0%} of channels removed (max_ratio)")
    spec = save_torch_model(model, parent.manifest.model, out)
    return derived_output(parent, {**spec, "pruning": summary})


def _within_budget(config: Prune, entry: dict[str, Any], macs0: int) -> bool:
    if config.macs is not None:
        return bool(entry["macs"] <= config.macs * macs0)
    if config.latency_ms is not None:
        return bool(entry["latency_ms"] <= config.latency_ms)
    return True
