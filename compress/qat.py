"""Quantization-aware training: fine-tune with the INT8 rounding in the forward pass, so the weights learn
to live on the grid the runtimes will use.

Every convolution and linear layer's weight goes through torch's ``fake_quantize_per_channel_affine``
(symmetric, per output channel, [-127, 127], scale = max|w| / 127: the weight scheme of onnxruntime's
QDQ, NNCF and LiteRT alike), and its input through torch's ``FakeQuantize`` with a moving-average
min/max observer (8-bit asymmetric). Gradients pass the rounding straight through. At the end the
weights are written already rounded to their grid, so each format's INT8 quantizer (the recipe's
``quantize`` entries) reproduces them exactly: the INT8 files of a QAT model are that format's own
quantizer's output, with weights it does not need to round. The learned activation ranges are recorded
in the manifest; each quantizer still calibrates its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from edgepipe.configs import StageConfig
from edgepipe.models.train import Optimization
from edgepipe.store import Parents, StageOutput

if TYPE_CHECKING:
    import torch

    from edgepipe.stage import StageContext

WEIGHT_RANGE = (-127, 127)


class Qat(StageConfig, Optimization):
    """Fine-tune with INT8 fake quantization of every convolution's and linear layer's weights and inputs."""

    stage: Literal["qat"] = "qat"
    trains: ClassVar[bool] = True
    tag: ClassVar[str | None] = "qat"
    faces_ptq: ClassVar[bool] = True
    epochs: int = Field(2, ge=0)
    learning_rate: float = Field(5e-4, gt=0)
    ignore: list[str] = Field([], description="layers left in float (module names)")


def weight_grid(w: torch.Tensor) -> torch.Tensor:
    """``w`` rounded to its symmetric per-output-channel INT8 grid (straight-through gradients)."""
    import torch

    scale = w.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-12) / WEIGHT_RANGE[1]
    zero = torch.zeros(w.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale.float(), zero, 0, *WEIGHT_RANGE)


def qat_stage(parents: Parents, config: Qat, out: Path, ctx: StageContext) -> StageOutput:
    import torch
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver
    from torch.nn.utils import parametrize

    from edgepipe.compress.common import layers, named_layers
    from edgepipe.models import copy_spec_files, derived_output, save_torch_model
    from edgepipe.models.train import train, training_summary

    class WeightGrid(torch.nn.Module):  # a parametrization: the layer sees its weight on the INT8 grid
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return weight_grid(w)

    parent = parents["model"]
    copy_spec_files(parent, out)
    model = ctx.torch_module(parent)
    skip = {id(m) for m in named_layers(model, config.ignore, "qat.ignore")}
    targets = {n: m for n, m in layers(model).items() if id(m) not in skip}
    observers: dict[str, Any] = {}
    hooks = []
    for name, m in targets.items():
        parametrize.register_parametrization(m, "weight", WeightGrid())
        fq = FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8)
        observers[name] = fq
        hooks.append(m.register_forward_pre_hook(lambda _m, args, fq=fq: (fq.train(_m.training)(args[0]), *args[1:])))
    history = train(model, ctx.task, ctx.preprocessor(parent), config, ctx.seed, ctx, "qat")
    for h in hooks:
        h.remove()
    for m in targets.values():
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)  # the rounded weights stay
    ranges = {
        n: [round(float(fq.activation_post_process.min_val), 6), round(float(fq.activation_post_process.max_val), 6)]
        for n, fq in observers.items()
    }
    ctx.log(f"[qat] {len(targets)} layers on the INT8 grid: {training_summary(history)} (with fake quantization)")
    spec = save_torch_model(model, parent.manifest.model, out)
    return derived_output(
        parent,
        {
            **spec,
            "training": history,
            "qat": {
                "layers": sorted(targets),
                "weights": "int8 symmetric per output channel, [-127, 127], rounded in the saved file",
                "activations": "uint8 asymmetric per tensor (moving-average min/max)",
                "activation_ranges": ranges,
            },
        },
    )
