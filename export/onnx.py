"""ONNX: export with torch.onnx, quantize with onnxruntime's static (QDQ) or dynamic quantizer."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from edgepipe.blame import Blame
from edgepipe.configs import CalibrationSweep, QuantizeConfig, TargetConfig, short_hash
from edgepipe.errors import InputError, converting
from edgepipe.export.onnx_inspect import quantization_summary, read_io_spec
from edgepipe.stage import StageContext
from edgepipe.store import Parents, StageOutput
from edgepipe.tensors import with_ranges

MODEL_FILE = "model.onnx"
# The operators that do the arithmetic INT8 is for: what a restricted quantization quantizes.
COMPUTE_OPS = ("MatMul", "Gemm", "Conv")
# Blame (export.onnx_blame): calibration samples, and how many single quantizers are measured at the
# output (the locally worst first).
BLAME_SAMPLES = 8
BLAME_MEASURED = 64


class _OrtQuant(QuantizeConfig):
    per_channel: bool = True
    weight_type: Literal["int8", "uint8"] = "int8"
    # 7-bit weights: onnxruntime's advice for x86 CPUs without VNNI (AVX2 only), whose u8 x s8 kernels
    # can saturate int16 intermediates. Costs a little accuracy where it is not needed.
    reduce_range: bool = False
    op_types: list[str] | None = Field(None, description="quantize only these operator types (default: all)")
    exclude_nodes: list[str] = Field([], description="node names to keep in float")

    def name_parts(self) -> list[str]:
        parts = [] if self.per_channel else ["per-tensor"]
        if self.weight_type != "int8":
            parts.append(f"weight-{self.weight_type}")
        if self.reduce_range:
            parts.append("reduce-range")
        if self.op_types:
            parts.append("ops-" + "-".join(sorted(self.op_types)).lower())
        if self.exclude_nodes:
            parts.append(f"excl-{len(self.exclude_nodes)}-{short_hash(sorted(self.exclude_nodes))}")
        return parts

    def alternatives(self, parent: Any, ctx: StageContext, blame: Blame | None = None) -> Iterator[QuantizeConfig]:
        """Per-channel weights if not asked for, then the layers whose input activations have the largest
        outliers kept in float, 1 to 12 of them, fewest first (outliers stretch a tensor's single scale)."""
        base = self if self.per_channel else self.model_copy(update={"per_channel": True})
        if base is not self:
            yield base
        yield from _keeping_outliers(base, parent, ctx)

    def tool_options(self) -> dict[str, Any]:
        """The keyword arguments of onnxruntime's quantize_static / quantize_dynamic these fields set."""
        return {
            "per_channel": self.per_channel,
            "weight_type": _qtype(self.weight_type),
            "reduce_range": self.reduce_range,
            "op_types_to_quantize": self.op_types,
            "nodes_to_exclude": self.exclude_nodes,
        }


class OrtStaticQuant(_OrtQuant):
    """onnxruntime ``quantize_static``: weights and activations, calibrated on the calibration split."""

    method: Literal["static"] = "static"
    # uint8 activations run much faster than int8 on x86 (signed ones were measured up to 5x slower).
    activation_type: Literal["uint8", "int8"] = "uint8"
    calibration_samples: int | None = Field(None, ge=1, description="default: the whole calibration split")
    calibration_seed: int | None = Field(
        None, description="draw calibration_samples at random with this seed (default: the split's first ones)"
    )
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    symmetric_activations: bool = False
    quant_format: Literal["qdq", "qoperator"] = "qdq"
    calibration_sweep: CalibrationSweep | None = None

    sweep_methods: ClassVar[tuple[str, ...]] = ("minmax", "entropy", "percentile")

    def sweep_point(self, method: str, samples: int, seed: int) -> QuantizeConfig:
        return self.model_copy(
            update={
                "calibrate_method": method,
                "calibration_samples": samples,
                "calibration_seed": seed,
                "calibration_sweep": None,
            }
        )

    def name_parts(self) -> list[str]:
        parts = super().name_parts()
        if self.activation_type != "uint8":
            parts.append(f"act-{self.activation_type}")
        if self.calibration_samples:
            parts.append(f"cal-{self.calibration_samples}")
        if self.calibration_seed is not None:
            parts.append(f"seed-{self.calibration_seed}")
        if self.calibration_sweep:
            parts.append("sweep")
        if self.calibrate_method != "minmax":
            parts.append(self.calibrate_method)
        if self.symmetric_activations:
            parts.append("sym-act")
        if self.quant_format != "qdq":
            parts.append(self.quant_format)
        return parts

    def blame(self, parent: Any, quantized: Path, ctx: StageContext) -> Blame | None:
        """onnxruntime's qdq_loss_debug on 8 calibration samples, each quantizer's cost at the output
        (``export.onnx_blame``); QDQ models only."""
        if self.quant_format != "qdq":
            return None
        from edgepipe.export.onnx_blame import blame

        return blame(parent.model_file, quantized, ctx.calibration_feeds(parent, 1, BLAME_SAMPLES), BLAME_MEASURED)

    def alternatives(self, parent: Any, ctx: StageContext, blame: Blame | None = None) -> Iterator[QuantizeConfig]:
        """With this configuration's blame, the fixes it proposes (``export.onnx_blame.fixes``). Without:
        only the matrix products and convolutions (a quantized Add, Softmax or attention-mask path collapses
        a transformer), percentile calibration, then the outlier layers kept in float."""
        if blame is not None:
            from edgepipe.export.onnx_blame import fixes

            yield from fixes(self, blame)
            return
        base = self
        if self.op_types is None:
            base = self.model_copy(update={"op_types": list(COMPUTE_OPS)})
            yield base
        if self.calibrate_method == "minmax":
            yield base.model_copy(update={"calibrate_method": "percentile"})
        yield from _keeping_outliers(base.model_copy(update={"per_channel": True}), parent, ctx)

    def faster(self) -> Iterator[QuantizeConfig]:
        """Per-tensor weights; onnxruntime's QOperator form (fused operators in the file itself)."""
        if self.per_channel:
            yield self.model_copy(update={"per_channel": False})
        if self.quant_format == "qdq":
            yield self.model_copy(update={"quant_format": "qoperator"})


def _keeping_outliers(base: _OrtQuant, parent: Any, ctx: StageContext) -> Iterator[QuantizeConfig]:
    from edgepipe.export.onnx_blame import outlier_ranking

    ranked = [
        n
        for n in outlier_ranking(parent.model_file, ctx.calibration_feeds(parent, 1, 8))
        if n not in base.exclude_nodes
    ]
    for k in (1, 2, 3, 4, 6, 8, 12):
        if k > len(ranked):
            break
        yield base.model_copy(update={"exclude_nodes": [*base.exclude_nodes, *ranked[:k]]})


class OrtDynamicQuant(_OrtQuant):
    """onnxruntime ``quantize_dynamic``: int8 weights, activations quantized at run time (no calibration)."""

    method: Literal["dynamic"] = "dynamic"


class Target(TargetConfig):
    """ONNX export options: the torch exporter and the opset."""

    format: Literal["onnx"] = "onnx"
    opset: int | None = Field(None, ge=13, description="default: the exporter's own")
    exporter: Literal["dynamo", "torchscript"] = "dynamo"

    quantizers: ClassVar[dict[str, type[QuantizeConfig]]] = {"static": OrtStaticQuant, "dynamic": OrtDynamicQuant}
    default_method: ClassVar[str | None] = "static"


def _strip_debug_metadata(model: Any) -> None:
    """Drop the dynamo exporter's per-node debug records (stack traces with this machine's file paths,
    FX node dumps): they are ~2% of a small model, leak local paths and make the bytes machine-dependent."""
    for node in model.graph.node:
        node.ClearField("metadata_props")
        node.ClearField("doc_string")
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output, *model.graph.initializer]:
        value.ClearField("metadata_props")


def _torch_export(module: Any, args: tuple[Any, ...], path: Path, config: Target, ins: Any, outs: Any) -> None:
    """torch.onnx.export with the target's exporter, names and dynamic dimensions from the specs."""
    import torch

    input_names, output_names = [s.name for s in ins], [s.name for s in outs]
    if config.exporter == "dynamo":
        dims: dict[str, Any] = {}  # one Dim per symbolic name, shared by every tensor that uses it
        # Positional (one entry per input, in order): forward's parameter names need not match the specs'.
        dynamic_shapes = tuple(
            {
                axis: dims.setdefault(sym, torch.export.Dim(sym, min=1, max=1 << 16))
                for axis, sym in s.symbolic_dims.items()
            }
            for s in ins
        )
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            external_data=False,
            opset_version=config.opset,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
            input_names=input_names,
            output_names=output_names,
        )
    else:
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=config.opset or 17,
            dynamic_axes={s.name: s.symbolic_dims for s in [*ins, *outs] if s.symbolic_dims},
            input_names=input_names,
            output_names=output_names,
        )


def export(parents: Parents, config: Target, out_dir: Path, ctx: StageContext) -> StageOutput:
    """torch -> ONNX FP32, names and dynamic dimensions taken from the parent's input/output specs,
    checked with onnx's full checker."""
    import onnx
    import torch

    # The exporter logs a warning per missing torchvision op on every export: not the user's concern.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    parent = parents["model"]
    module = ctx.torch_module(parent)
    ins, outs = parent.manifest.inputs, parent.manifest.outputs
    # Batch 2: a dynamic dimension traced at size 1 gets specialised away. Contiguous copies: a strided
    # numpy view makes the dynamo exporter add an as_strided subgraph.
    example = ctx.example_feeds(parent, 2)
    args = tuple(torch.from_numpy(example[s.name]).clone() for s in ins)
    path = out_dir / MODEL_FILE
    with converting(f"torch.onnx ({config.exporter})"):
        _torch_export(module, args, path, config, ins, outs)
    model = onnx.load(str(path))
    _strip_debug_metadata(model)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    inputs, outputs = read_io_spec(path)
    return StageOutput(
        format="onnx",
        precision="fp32",
        primary=MODEL_FILE,
        inputs=with_ranges(inputs, ins),
        outputs=outputs,
        model={"exporter": config.exporter, "opset": opset},
    )


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _pre_process(source: Path, prepared: Path) -> str:
    """onnxruntime's recommended pre-processing (shape inference, graph optimization); on a graph its
    symbolic shape inference cannot take, the model is quantized as it is and the manifest says why."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(prepared), auto_merge=True)
        return "done"
    except Exception as e:  # onnxruntime raises plain Exceptions from its shape inference
        from edgepipe.errors import first_line

        prepared.write_bytes(source.read_bytes())
        return f"skipped: {type(e).__name__}: {first_line(e, 160)}"


def quantize(parents: Parents, config: _OrtQuant, out_dir: Path, ctx: StageContext) -> StageOutput:
    """ONNX FP32 -> INT8 with onnxruntime.quantization (static, calibrated; or dynamic)."""
    parent = parents["model"]
    prepared = out_dir / "prepared.onnx"
    with _quiet_root_logger():
        return _quantize(parent, prepared, config, out_dir, ctx)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer warns on the root logger for every layer norm it leaves per-tensor."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _quantize(parent: Any, prepared: Path, config: _OrtQuant, out_dir: Path, ctx: StageContext) -> StageOutput:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static

    pre_process = _pre_process(parent.model_file, prepared)
    if config.exclude_nodes:  # names the pre-processing fused away would silently keep nothing in float
        import onnx

        names = {n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node}
        if missing := [n for n in config.exclude_nodes if n not in names]:
            prepared.unlink()
            raise InputError(
                f"exclude_nodes: {parent.model_file} has no node {missing[0]!r} "
                f"({len(missing)} of {len(config.exclude_nodes)} not found)"
            )
    path = out_dir / MODEL_FILE
    calibration: dict[str, Any] | None = None
    if isinstance(config, OrtStaticQuant):
        # Histogram methods stack every batch's tensors: they need batches of one size (batch 1).
        batch = 16 if config.calibrate_method == "minmax" else 1
        batches = ctx.calibration_feeds(parent, batch, config.calibration_samples, config.calibration_seed)
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[config.calibrate_method]
        with contextlib.redirect_stdout(io.StringIO()):  # its histogram methods print progress
            quantize_static(
                str(prepared),
                str(path),
                _CalibrationReader(batches),
                quant_format=QuantFormat.QDQ if config.quant_format == "qdq" else QuantFormat.QOperator,
                activation_type=_qtype(config.activation_type),
                calibrate_method=method,
                extra_options={"ActivationSymmetric": config.symmetric_activations},
                **config.tool_options(),
            )
        calibration = {
            "split": "calibration",
            "samples": sum(len(next(iter(b.values()))) for b in batches),
            "method": config.calibrate_method,
            "seed": config.calibration_seed,
        }
        tool = "onnxruntime.quantization.quantize_static"
    else:
        quantize_dynamic(str(prepared), str(path), **config.tool_options())
        tool = "onnxruntime.quantization.quantize_dynamic"
    prepared.unlink()
    inputs, outputs = read_io_spec(path)
    return StageOutput(
        format="onnx",
        precision=config.precision,
        primary=MODEL_FILE,
        inputs=with_ranges(inputs, parent.manifest.inputs),
        outputs=outputs,
        model=parent.manifest.model,
        quantization={
            "tool": tool,
            "requested": config.model_dump(mode="json"),
            "precision": config.precision,
            "pre_process": pre_process,
            "calibration": calibration,
            # Read back from the quantized graph: what the tool really did.
            **quantization_summary(path),
        },
    )


def _qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]
