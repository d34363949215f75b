"""Unstructured pruning: torch's own ``torch.nn.utils.prune`` zeroes the smallest weights (across the model
or per layer) on a cubic schedule (Zhu & Gupta, 2017), fine-tuning after each step with the masks held.

The tensors keep their shapes: dense runtimes (onnxruntime, OpenVINO, LiteRT on CPU) multiply the zeros
like any other number, so the model is no faster. What shrinks is the compressed file: the manifest
records each layer's sparsity and the zipped size of the weights against the dense ones.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from edgepipe.compress.prune import Finetuning
from edgepipe.configs import StageConfig
from edgepipe.store import Parents, StageOutput

if TYPE_CHECKING:
    from edgepipe.stage import StageContext


class Sparsify(StageConfig):
    """Zero the smallest-magnitude weights of every convolution and linear layer."""

    stage: Literal["sparsify"] = "sparsify"
    trains: ClassVar[bool] = True
    tag: ClassVar[str | None] = "sparse"
    sparsity: float = Field(0.8, gt=0, lt=1, description="fraction of the weights set to zero at the end")
    scope: Literal["global", "layer"] = Field(
        "global", description="rank weights across all layers (global) or give every layer the same sparsity"
    )
    steps: int = Field(4, ge=1, le=100, description="reach the sparsity in this many steps (cubic schedule)")
    ignore: list[str] = Field([], description="layers to leave dense (module names)")
    finetune: Finetuning = Finetuning()


def schedule(sparsity: float, steps: int) -> list[float]:
    """The cumulative sparsity after each step: fast at first, gentle at the end."""
    return [sparsity * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)]


def zipped_size(path: Path) -> int:
    """The size of ``path`` in a deflated zip: what a sparse file costs to ship or store compressed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        z.write(path, path.name)
    return buffer.tell()


def sparsify_stage(parents: Parents, config: Sparsify, out: Path, ctx: StageContext) -> StageOutput:
    from torch.nn.utils import prune

    from edgepipe.compress.common import layers, named_layers
    from edgepipe.models import copy_spec_files, derived_output, save_torch_model
    from edgepipe.models.train import train

    parent = parents["model"]
    copy_spec_files(parent, out)
    model = ctx.torch_module(parent)
    skip = {id(m) for m in named_layers(model, config.ignore, "sparsify.ignore")}
    targets = {n: m for n, m in layers(model).items() if id(m) not in skip}
    params = [(m, "weight") for m in targets.values()]
    pre = ctx.preprocessor(parent)
    done = 0.0
    for step, goal in enumerate(schedule(config.sparsity, config.steps), start=1):
        amount = (goal - done) / (1 - done)  # of the weights still non-zero: the masks accumulate
        if config.scope == "global":
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        else:
            for m, name in params:
                prune.l1_unstructured(m, name, amount=amount)
        done = goal
        if config.finetune.epochs:
            train(model, ctx.task, pre, config.finetune, ctx.seed + step, ctx, f"sparsify step {step}/{config.steps}")
        ctx.log(f"[sparsify {step}/{config.steps}] {goal:.1%} of the weights zero")
    for m, name in params:
        prune.remove(m, name)  # the zeros become the weights; the masks go
    per_layer = {n: round(float((m.weight == 0).float().mean()), 4) for n, m in targets.items()}
    zeros = sum(int((m.weight == 0).sum()) for m in targets.values())
    total = sum(m.weight.numel() for m in targets.values())
    spec = save_torch_model(model, parent.manifest.model, out)
    summary: dict[str, Any] = {
        "target": config.sparsity,
        "scope": config.scope,
        "overall": round(zeros / max(total, 1), 4),
        "layers": per_layer,
        "file_bytes": (out / "model.safetensors").stat().st_size,
        "zip_bytes": zipped_size(out / "model.safetensors"),
        "dense_zip_bytes": zipped_size(parent.model_file),
    }
    ctx.log(
        f"[sparsify] {summary['overall']:.1%} of the weights zero; weights zip to {summary['zip_bytes']:,} bytes "
        f"(dense: {summary['dense_zip_bytes']:,}); dense runtimes run the zeros at full cost"
    )
    return derived_output(parent, {**spec, "sparsity": summary})
