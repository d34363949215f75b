"""TFLite (LiteRT): export with litert-torch, quantize with ai-edge-quantizer, and an embedded bundle for
TFLite Micro. Where the converter or TFLite Micro cannot take a model, the step raises UnsupportedModel:
its row says why and the run goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from edgepipe.configs import QuantizeConfig, TargetConfig
from edgepipe.errors import UnsupportedModel, converting
from edgepipe.stage import StageContext
from edgepipe.store import Parents, StageOutput
from edgepipe.tensors import Feeds, TensorSpec

MODEL_FILE = "model.tflite"


class _Aeq(QuantizeConfig):
    per_channel: bool = Field(
        True, description="one weight scale per output channel (some MCU kernels take per-tensor only)"
    )

    def name_parts(self) -> list[str]:
        return [] if self.per_channel else ["per-tensor"]

    def granularity(self) -> Any:
        from ai_edge_quantizer import qtyping

        return qtyping.QuantGranularity.CHANNELWISE if self.per_channel else qtyping.QuantGranularity.TENSORWISE


class AeqStatic(_Aeq):
    """ai-edge-quantizer, full integer: int8 weights, int8 (or int16) activations calibrated on the
    calibration split; inputs and outputs become integer tensors too, unless ``float_io``."""

    method: Literal["static"] = "static"
    activations: Literal["int8", "int16"] = "int8"
    float_io: bool = Field(False, description="keep float inputs and outputs (QUANTIZE/DEQUANTIZE inside)")
    calibration_samples: int | None = Field(None, ge=1, description="default: the whole calibration split")
    # minmax: the global range over every sample. moving-average: the quantizer's default, which on the
    # digits CNN clipped the logits' range and moved outputs by up to 8.
    calibration: Literal["minmax", "moving-average"] = "minmax"

    def name_parts(self) -> list[str]:
        parts = super().name_parts()
        if self.float_io:
            parts.append("float-io")
        if self.calibration != "minmax":
            parts.append(self.calibration)
        return [*parts, *([f"cal-{self.calibration_samples}"] if self.calibration_samples else [])]

    @property
    def precision(self) -> str:
        """``a16w8`` with 16-bit activations: the shipped model says what it computes in."""
        return "a16w8" if self.activations == "int16" else "int8"

    def configure(self, q: Any) -> None:
        from ai_edge_quantizer import qtyping
        from ai_edge_quantizer.recipe import AlgorithmName

        ops = qtyping.TFLOperationName
        bits = 16 if self.activations == "int16" else 8
        q.add_static_config(".*", ops.ALL_SUPPORTED, bits, 8, self.granularity())
        if self.float_io:
            for op in (ops.INPUT, ops.OUTPUT):
                q.update_quantization_recipe(".*", op, algorithm_key=AlgorithmName.NO_QUANTIZE)


class AeqDynamic(_Aeq):
    """ai-edge-quantizer, dynamic range: int8 weights, activations quantized on the fly (no calibration).
    A "hybrid" model: TFLite Micro cannot run it."""

    method: Literal["dynamic"] = "dynamic"

    def configure(self, q: Any) -> None:
        from ai_edge_quantizer import qtyping

        q.add_dynamic_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 8, self.granularity())


class AeqWeightOnly(_Aeq):
    """ai-edge-quantizer, weight only: int8 weights dequantized to float before each operator."""

    method: Literal["weight-only"] = "weight-only"

    def configure(self, q: Any) -> None:
        from ai_edge_quantizer import qtyping

        q.add_weight_only_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 8, self.granularity())


class AeqFloat16(QuantizeConfig):
    """ai-edge-quantizer's float casting: float16 weights (half the file), computed in float32."""

    method: Literal["fp16"] = "fp16"

    @property
    def precision(self) -> str:
        return "fp16"

    def configure(self, q: Any) -> None:
        from ai_edge_quantizer import qtyping
        from ai_edge_quantizer.recipe import AlgorithmName

        q.add_weight_only_config(
            ".*", qtyping.TFLOperationName.ALL_SUPPORTED, 16, algorithm_key=AlgorithmName.FLOAT_CASTING
        )


class Target(TargetConfig):
    """TFLite export through litert-torch (inputs and outputs keep torch's layout unless channels_last_io)."""

    format: Literal["tflite"] = "tflite"
    channels_last_io: bool = Field(False, description="NHWC image inputs and outputs, as microcontroller apps expect")
    bundle: bool = Field(False, description="also make a TFLite Micro bundle of each variant it can run")

    quantizers: ClassVar[dict[str, type[QuantizeConfig]]] = {
        "static": AeqStatic,
        "dynamic": AeqDynamic,
        "weight-only": AeqWeightOnly,
        "fp16": AeqFloat16,
    }
    default_method: ClassVar[str | None] = "static"

    def post_stages(self) -> list[str]:
        return ["bundle"] if self.bundle else []


def read_io_spec(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs as the LiteRT interpreter sees them (quantization from its tensor details)."""
    from edgepipe.runtimes import get_runtime

    with get_runtime("litert").load(path) as session:
        return session.inputs, session.outputs


def _renamed(specs: list[TensorSpec], known: list[TensorSpec]) -> list[TensorSpec]:
    """The file's tensors under the torch model's names, in order (the converter names them args_0, ...):
    the manifest then speaks of ``input_ids``, not ``serving_default_args_0``."""
    if len(specs) != len(known):
        return specs
    return [
        s.model_copy(update={"name": k.name, "value_range": k.value_range}) for s, k in zip(specs, known, strict=True)
    ]


def shapes(parent: Any, ctx: StageContext) -> dict[str, dict[str, int]]:
    """The static shapes a TFLite file is made for, one signature each: batch 1 (as edge apps and TFLite
    Micro run it), and every other dynamic dimension (a sequence) at each of the task's lengths.
    litert-torch 0.10 cannot lower dynamic dimensions of every model, and TFLite Micro needs static ones."""
    symbols = {sym for s in parent.manifest.inputs for axis, sym in s.symbolic_dims.items() if axis > 0}
    lengths = [n for n in ctx.task.sequence_lengths() if n]
    if not symbols:
        return {"serving_default": {}}
    if not lengths:
        raise UnsupportedModel(f"TFLite needs static shapes, and the task gives no length for {sorted(symbols)}")
    return {f"length_{n}": {sym: n for sym in symbols} for n in lengths}


def _example(parent: Any, ctx: StageContext, dims: dict[str, int]) -> list[Any]:
    """Batch-1 example inputs at these dimension sizes (integer ids as int32: TFLite's index type)."""
    import torch

    feeds = ctx.example_feeds(parent, 1) if not dims else None
    out = []
    for spec in parent.manifest.inputs:
        if feeds is not None:
            out.append(torch.from_numpy(feeds[spec.name][:1]).clone())
            continue
        shape = [
            1 if axis == 0 else dims.get(str(d), d) if isinstance(d, str) else d for axis, d in enumerate(spec.shape)
        ]
        low = (spec.value_range or [0, 0])[0]
        out.append(torch.full([int(n) for n in shape], low, dtype=getattr(torch, spec.dtype)))
    return out


def export(parents: Parents, config: Target, out_dir: Path, ctx: StageContext) -> StageOutput:
    """torch -> TFLite FP32 with litert-torch: static shapes, one signature per sequence length."""
    import os

    from edgepipe.capture import captured_output

    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    parent = parents["model"]
    signatures = shapes(parent, ctx)
    path = out_dir / MODEL_FILE
    with captured_output():  # its progress lines and C++ logs are not the user's
        import litert_torch

        module = ctx.torch_module(parent).eval()
        with converting("litert-torch"):
            if config.channels_last_io:
                module = litert_torch.to_channel_last_io(module, args=[0], outputs=[0])
            converter: Any = litert_torch
            for name, dims in signatures.items():
                converter = converter.signature(name, module, tuple(_example(parent, ctx, dims)))
            converter.convert().export(str(path))
    inputs, outputs = read_io_spec(path)
    return StageOutput(
        format="tflite",
        precision="fp32",
        primary=MODEL_FILE,
        inputs=_renamed(inputs, parent.manifest.inputs),
        outputs=_renamed(outputs, parent.manifest.outputs),
        model={
            "exporter": "litert_torch.convert",
            "channels_last_io": config.channels_last_io,
            "signatures": signatures,
        },
    )


def _calibration(parent: Any, ctx: StageContext, limit: int | None) -> dict[str, list[Feeds]]:
    """Calibration samples keyed as the quantizer asks: by signature, then by its input names, each cut to
    the signature's shape (batch 1, its sequence length)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(parent.model_file))
    samples = ctx.calibration_feeds(parent, batch_size=1, limit=limit)
    data: dict[str, list[Feeds]] = {}
    for key, signature in it.get_signature_list().items():
        details = it.get_signature_runner(key).get_input_details()
        names = signature["inputs"]
        data[key] = [
            {
                n: np.ascontiguousarray(
                    f[spec.name][tuple(slice(0, d) for d in details[n]["shape"])], dtype=details[n]["dtype"]
                )
                for n, spec in zip(names, parent.manifest.inputs, strict=True)
            }
            for f in samples
        ]
    return data


def quantize(parents: Parents, config: QuantizeConfig, out_dir: Path, ctx: StageContext) -> StageOutput:
    """TFLite FP32 -> INT8 (or FP16 weights) with ai-edge-quantizer, from the config's own options."""
    from edgepipe.capture import captured_output
    from edgepipe.export.tflite_inspect import summarize

    parent = parents["model"]
    path = out_dir / MODEL_FILE
    samples = None
    with captured_output():
        from ai_edge_quantizer import quantizer

        q = quantizer.Quantizer(str(parent.model_file))
        config.configure(q)  # type: ignore[attr-defined]
        if q.need_calibration:
            data = _calibration(parent, ctx, getattr(config, "calibration_samples", None))
            samples = max(len(v) for v in data.values())
            result = q.quantize(
                _calibrate(q, data, getattr(config, "calibration", "minmax")), enable_progress_report=False
            )
        else:
            result = q.quantize(enable_progress_report=False)
        result.export_model(str(path), overwrite=True)
    inputs, outputs = read_io_spec(path)
    return StageOutput(
        format="tflite",
        precision=config.precision,
        primary=MODEL_FILE,
        inputs=_renamed(inputs, parent.manifest.inputs),
        outputs=_renamed(outputs, parent.manifest.outputs),
        model=parent.manifest.model,
        quantization={
            "tool": "ai_edge_quantizer",
            "requested": config.model_dump(mode="json"),
            "precision": config.precision,
            "calibration": {"split": "calibration", "samples": samples, "method": getattr(config, "calibration", None)}
            if samples
            else None,
            # Read back from the quantized flatbuffer: operators, tensor and weight types, hybrid or not.
            **summarize(path),
        },
    )


def _calibrate(q: Any, data: dict[str, list[Feeds]], method: str) -> Any:
    """Calibration statistics: the quantizer's own moving average, or the global min/max over every sample
    (one calibrate call per sample, merged with the quantizer's own min/max update)."""
    if method != "minmax":
        return q.calibrate(data, num_threads=2)
    from ai_edge_quantizer.utils import qsv_utils

    merged: dict[str, Any] = {}
    for key, samples in data.items():
        for sample in samples:
            for tensor, stats in q.calibrate({key: [sample]}, num_threads=2).items():
                merged[tensor] = (
                    qsv_utils.min_max_update(merged.get(tensor, {}), stats) if stats else merged.get(tensor, stats)
                )
    return merged


def post_stage(name: str, parents: Parents, target: Target, out_dir: Path, ctx: StageContext) -> StageOutput:
    """The steps after a TFLite artifact: ``bundle``, the TFLite Micro bundle (see export/tflite_micro.py)."""
    from edgepipe.export.tflite_micro import bundle_stage

    if name != "bundle":
        raise ValueError(f"tflite has no step '{name}'")
    return bundle_stage(parents["model"], out_dir, ctx)
