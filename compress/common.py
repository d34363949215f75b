"""What the compression stages share: the model's example inputs, which layers they leave whole, its
MACs, and its latency measured on onnxruntime (a pruning budget in milliseconds is a measured one)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepipe.errors import InputError

if TYPE_CHECKING:
    import torch

    from edgepipe.artifact import Artifact
    from edgepipe.stage import StageContext

# Latency of a candidate during a budgeted search: enough calls for a stable median in one process.
_WARMUP, _RUNS = 10, 60


def example_args(ctx: StageContext, parent: Artifact, n: int = 1) -> tuple[torch.Tensor, ...]:
    """``n`` calibration examples as the module's positional inputs, in the specs' order."""
    import torch

    feeds = ctx.example_feeds(parent, n)
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[s.name])).clone() for s in parent.manifest.inputs)


def layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The weight layers compression works on: convolutions and linear layers, by name."""
    from torch import nn

    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}


def output_layers(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> list[str]:
    """The layers that write the model's first output (a classifier, a language model's head): pruning
    them would change what the model predicts over, not how much it costs."""
    import torch

    from edgepipe.models.train import first_output

    found = layers(model)
    produced: list[tuple[str, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: produced.append((name, out)))
        for name, m in found.items()
    ]
    try:
        with torch.no_grad():
            out = model.eval()(*args)
    finally:
        for h in hooks:
            h.remove()
    first = first_output(out)
    return [name for name, t in produced if t.shape[-1] == first.shape[-1] and t.data_ptr() == first.data_ptr()] or [
        name for name, t in produced[-1:] if t.shape[-1] == first.shape[-1]
    ]


def named_layers(model: torch.nn.Module, names: list[str], field: str) -> list[torch.nn.Module]:
    """The modules ``names`` lists; a name the model lacks is an error naming the field."""
    own = dict(model.named_modules())
    if missing := [n for n in names if n not in own]:
        sample = ", ".join(list(layers(model))[:6])
        raise InputError(f"{field}: the model has no layer '{missing[0]}' (its layers include: {sample}, ...)")
    return [own[n] for n in names]


def macs_and_parameters(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass on ``args`` and the parameter count (torch-pruning's count)."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model.eval(), args)
    return int(macs), int(params)


def onnx_latency_ms(model: torch.nn.Module, args: tuple[torch.Tensor, ...], threads: int) -> float:
    """The median latency of ``model`` exported to ONNX and run by onnxruntime on ``args`` (one process:
    a budget's yardstick, not a reported result; the run's benchmark measures the final files)."""
    import onnxruntime as ort
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.onnx"
        names = [f"input{i}" for i in range(len(args))]
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, input_names=names)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {n: a.numpy() for n, a in zip(names, args, strict=True)}
    times = []
    for i in range(_WARMUP + _RUNS):
        t0 = time.perf_counter()
        session.run(None, feeds)
        if i >= _WARMUP:
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def describe(stage: str, summary: dict[str, Any]) -> str:
    """A one-line record of what a stage did, for the run log."""
    return f"[{stage}] " + ", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, (dict, list)))
