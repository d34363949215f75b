"""The known traps ``edgepipe explain`` names when they occur, and what this CPU's integer and matrix
extensions mean for a model. Each trap reads an ``OpReport`` (what the runtime said it ran) and, where it
needs one, the model file or the CPU's flags; none guesses from the file name."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgepipe.benchmarks.op_report import OpReport, Placement

# The share of a model's operator time from which Q/DQ left unfused, or compute kept in float, is worth a line.
UNFUSED_SHARE = 0.05
# Matrix products and convolutions by the runtimes' names: in an INT8 model, the arithmetic INT8 is for.
COMPUTE_TYPES = {"MatMul", "FusedMatMul", "Gemm", "Conv", "FusedConv", "Convolution", "GroupConvolution",
                 "FullyConnected", "FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL"}  # fmt: skip
VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


class Finding(BaseModel):
    """One trap that occurs here: a code a script can test, one sentence, the time it costs."""

    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    share: float | None = None  # of the model's operator time
    nodes: list[str] = []


def extensions(cpu: dict[str, Any]) -> tuple[list[str], list[str]]:
    """This CPU's integer and matrix extensions by name, and what each means for INT8 and bf16 models."""
    flags = set(cpu.get("flags") or [])
    names: list[str] = []
    notes: list[str] = []
    if "amx_int8" in flags or "amx_bf16" in flags:
        names.append("AMX (" + ", ".join(t for t in ("int8", "bf16", "fp16") if f"amx_{t}" in flags) + ")")
        notes.append(
            "AMX: INT8 and bf16 matrix products run on tile units; OpenVINO's kernels for them are named "
            "*_amx_*, and OpenVINO computes FP32 models in bf16 unless told f32"
        )
    if flags & {"avx512_vnni", "avx_vnni"}:
        names.append("AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-VNNI")
        notes.append("VNNI: u8 x s8 dot products accumulate in 32 bits in one instruction (no saturation)")
    if "avx512_bf16" in flags:
        names.append("AVX-512 BF16")
    if "avx512_fp16" in flags:
        names.append("AVX-512 FP16")
    if "avx512f" in flags:
        names.append("AVX-512")
    if "avx2" in flags:
        names.append("AVX2")
        if not flags & set(VNNI):
            notes.append(
                "no VNNI: INT8 products go through 16-bit intermediates (vpmaddubsw): smaller INT8 gains, and "
                "u8 x s8 can saturate unless weights are 7-bit (reduce_range)"
            )
    if "asimddp" in flags:
        names.append("Arm dot product (SDOT/UDOT)")
        notes.append("dot product: int8 dot products in one instruction, the base of Arm INT8 speed-ups")
    if "i8mm" in flags:
        names.append("Arm i8mm (SMMLA)")
    if "sve" in flags:
        names.append("SVE2" if "sve2" in flags else "SVE")
    if cpu.get("arch") in ("aarch64", "arm64") and "asimddp" not in flags:
        notes.append("no Arm dot product: INT8 runs on plain NEON multiplies, with small gains")
    return names, notes


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _types(places: list[Placement]) -> str:
    counts = Counter(p.op_type for p in places)
    return ", ".join(f"{n} {t}" for t, n in counts.most_common())


def _share(places: list[Placement], report: OpReport) -> float | None:
    if not report.ops_ms or any(p.ms is None for p in places):
        return None
    return sum(p.ms or 0 for p in places) / report.ops_ms


def _percent(share: float | None) -> str:
    return "" if share is None else f" ({share:.0%} of the time)"


def findings(report: OpReport, cpu: dict[str, Any], model_file: Path) -> list[Finding]:
    """The traps that occur in this model on this runtime and CPU, most costly first."""
    out: list[Finding] = []
    for group in report.groups:
        if group.op_type == "ConvInteger":
            out.append(
                Finding(
                    code="conv_integer",
                    message=f"dynamic quantization made {group.count} convolutions ConvInteger, which onnxruntime "
                    f"runs with a slow generic kernel on CPU{_percent(group.share)}: quantize convolutions "
                    "statically (method: static) or leave Conv out of op_types",
                    share=group.share,
                    nodes=group.nodes,
                )
            )
    if names := report.details.get("qoperator_int8_activations"):
        out.append(
            Finding(
                code="qoperator_int8_activations",
                message=f"{len(names)} QLinear operators take signed int8 activations (QOperator form): "
                "onnxruntime's x86 kernels are built for uint8 activations (up to 5x slower measured); "
                "quantize with activation_type: uint8",
                nodes=list(names)[:8],
            )
        )
    # An INT8 model (not a bf16 or FP16 one with a few 8-bit layers, e.g. an embedding lookup).
    if report.by_precision.get("int8", 0) + report.by_precision.get("int4", 0) >= 0.2:
        floats = [g for g in report.groups if g.op_type in COMPUTE_TYPES and g.precision in ("fp32", "bf16", "fp16")]
        count, share = sum(g.count for g in floats), sum(g.share or 0 for g in floats) if report.clock else None
        if floats and (share is None or share >= UNFUSED_SHARE):
            kinds = ", ".join(f"{g.count} {g.op_type}" for g in floats)
            out.append(
                Finding(
                    code="compute_in_float",
                    message=f"{count} matrix products or convolutions still compute in float ({kinds})"
                    f"{_percent(share)}: layers kept out of INT8 (exclude_nodes, ignored_scope) or that the "
                    "quantizer does not take",
                    share=share,
                    nodes=[n for g in floats for n in g.nodes][:8],
                )
            )
    if saturating := _u8s8_without_vnni(report, cpu, model_file):
        out.append(saturating)
    if places := report.float_between_quantized:
        share = _share(places, report)
        out.append(
            Finding(
                code="float_between_quantized",
                message=f"{_n(len(places), 'float op')} between quantized ones ({_types(places)}){_percent(share)}, "
                "each with a dequantize before and a quantize after",
                share=share,
                nodes=[p.node for p in places][:8],
            )
        )
    out += _openvino_bf16(report)
    if places := report.not_delegated:
        delegate = report.details.get("delegate") or {}
        out.append(
            Finding(
                code="not_delegated",
                message=f"{len(places)} of {delegate.get('total_ops', '?')} operators run outside "
                f"{delegate.get('name', 'the delegate')} on the interpreter's builtin kernels ({_types(places)})",
                nodes=[p.node for p in places][:8],
            )
        )
    out += _llama_cpp_build(report, cpu)
    if places := report.unfused_qdq:
        share = _share(places, report)
        if (share is None and len(places) > 2) or (share or 0) >= UNFUSED_SHARE:
            out.append(
                Finding(
                    code="unfused_qdq",
                    message=f"{_n(len(places), 'quantize/dequantize op')} left unfused{_percent(share)}",
                    share=share,
                    nodes=[p.node for p in places][:8],
                )
            )
    return sorted(out, key=lambda f: -(f.share or 0))


def _u8s8_without_vnni(report: OpReport, cpu: dict[str, Any], model_file: Path) -> Finding | None:
    """INT8 on an x86 CPU without VNNI, with 8-bit (not 7-bit) signed weights: onnxruntime's u8 x s8 path."""
    flags = set(cpu.get("flags") or [])
    if report.runtime != "onnxruntime" or "avx2" not in flags or flags & set(VNNI):
        return None
    if not report.by_precision.get("int8"):
        return None
    widest = _widest_int8_weight(model_file)
    if widest is None or widest <= 64:
        return None
    return Finding(
        code="u8s8_without_vnni",
        message="this CPU has no VNNI and the weights use all 8 bits (|w| up to "
        f"{widest}): onnxruntime's u8 x s8 kernels can saturate their 16-bit intermediates; quantize with "
        "reduce_range: true (7-bit weights) or uint8 weights",
    )


def _widest_int8_weight(path: Path) -> int | None:
    """The largest |w| over an ONNX file's int8 weight initializers (None: none, or not ONNX)."""
    if path.suffix != ".onnx":
        return None
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    widest = None
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) >= 2 and init.raw_data:
            w = numpy_helper.to_array(init).astype(np.int32)
            widest = max(widest or 0, int(np.abs(w).max()))
    return widest


def _openvino_bf16(report: OpReport) -> list[Finding]:
    """OpenVINO's default inference precision is bf16 on CPUs with AMX / AVX-512 BF16."""
    effect = report.details.get("precision_hint_effect") or {}
    if report.runtime != "openvino" or report.details.get("default_inference_precision") != "bf16":
        return []
    if not effect.get("bf16_layers"):
        return []
    return [
        Finding(
            code="openvino_default_bf16",
            message=f"OpenVINO's default inference precision on this CPU is bf16: compiled without a precision "
            f"hint, {effect['bf16_layers']} of {effect.get('of', '?')} compute layers of this model run in bf16 "
            f"(this report compiled with {report.details.get('inference_precision', 'f32')}); an app that wants "
            "FP32 results sets INFERENCE_PRECISION_HINT=f32, and a recipe measures bf16 as its own row "
            "(benchmark.inference_precisions)",
        )
    ]


def _llama_cpp_build(report: OpReport, cpu: dict[str, Any]) -> list[Finding]:
    """A llama.cpp build that does not use extensions this CPU has."""
    info = report.details.get("system_info")
    if report.runtime != "llama.cpp" or not info:
        return []
    flags = set(cpu.get("flags") or [])
    missing = [
        name
        for flag, name in (("avx512f", "AVX512"), ("avx512_vnni", "AVX512_VNNI"), ("amx_int8", "AMX_INT8"))
        if flag in flags and f"{name} = 1" not in info
    ]
    if not missing:
        return []
    return [
        Finding(
            code="llama_cpp_build",
            message=f"this llama.cpp build does not use {', '.join(missing)}, which this CPU has (it was built "
            "for portable x86, e.g. GGML_NATIVE=OFF): its quantized kernels run on AVX2; a native build is faster",
        )
    ]
