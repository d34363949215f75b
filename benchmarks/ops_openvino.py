"""OpenVINO's CPU plugin, operator by operator: which layers of the compiled model run in INT8, bf16 or FP32
and where the time goes, for ``edgepipe explain``.

The precision of a layer comes from the runtime model (``CompiledModel.get_runtime_model()``: the graph the
plugin executes after fusing, each layer's ``rt_info`` holding ``layerType``, ``runtimePrecision``,
``outputPrecisions``, ``primitiveType`` and ``originalLayersNames``); the time from the performance counters
of the same compiled model. The model is compiled as ``runtimes.openvino_runtime`` compiles it (latency hint,
f32 inference precision unless asked otherwise) and for the feeds' static shapes, as a benchmark times it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.benchmarks.op_report import OpGroup, OpReport, Placement
from edgepipe.errors import InputError, first_line
from edgepipe.runtimes.openvino_runtime import _type_name, read_model

CLOCK = "OpenVINO performance counters"
WARMUP = 3
# OpenVINO's element type names (rt_info says "u8", "f32", "bf16"; primitive types end in "_I8", "_f32").
_PRECISIONS = {
    "I8": "int8", "U8": "int8", "I4": "int4", "U4": "int4", "BF16": "bf16",
    "F16": "fp16", "FP16": "fp16", "F32": "fp32", "FP32": "fp32",
}  # fmt: skip
_QUANTIZED = {"I8", "U8", "I4", "U4"}
_FLOAT = {"F32", "FP32", "BF16", "F16", "FP16"}
_PLUMBING = {"Input", "Output", "Parameter", "Result", "Const", "Constant"}  # graph ends, not operators
_CONVERTS = {"Reorder", "Convert", "FakeQuantize"}  # layout and precision changes, quantizers
_SHAPE = {"Reshape", "Squeeze", "Unsqueeze", "ShapeOf", "Flatten"}  # move no data (in place)
# A layer fused from these alone, between int8 and float, is a quantizer or a dequantizer (scale, zero point).
_QUANTIZER_PARTS = {"FakeQuantize", "Convert", "Subtract", "Multiply"}


@dataclass
class _Layer:
    """One layer of the runtime model; ``precision`` None for a graph input or output."""

    name: str
    type: str
    precision: str | None
    kernel: str
    inp: str  # element type of its first input, upper case ("F32")
    out: str  # of its first output
    before: list[str]  # producer layers (constants left out)
    after: list[str]  # consumer layers
    ms: float = 0.0  # summed over the profiled calls


def read_ops(
    path: Path,
    feeds: dict[str, np.ndarray],
    threads: int | None = 2,
    calls: int = 20,
    options: dict[str, Any] | None = None,
) -> OpReport:
    """The layers OpenVINO runs for ``path`` on the CPU, grouped by layer type and precision, with their
    time averaged over ``calls`` profiled inferences of ``feeds`` (after a few warm-up calls)."""
    import openvino as ov

    path = Path(path)
    config = _config(dict(options or {}), threads)
    core = ov.Core()
    model = _static_model(path, feeds)
    compiled = _compile(core, model, {**config, "PERF_COUNT": True}, path)
    layers = _layers(compiled.get_runtime_model(), model)
    n = max(calls, 0)
    _profile(compiled, _ordered(compiled.inputs, feeds, path), n, layers)
    ops = [layer for layer in layers.values() if layer.precision is not None]
    ops_ms = sum(layer.ms for layer in ops) / n if n else None
    no_hint = {k: v for k, v in config.items() if k != "INFERENCE_PRECISION_HINT"}
    return OpReport(
        path=str(path),
        format="onnx" if path.suffix.lower() == ".onnx" else "openvino",
        runtime="openvino",
        threads=threads,
        clock=CLOCK if n else None,
        calls=n,
        ops_ms=round(ops_ms, 4) if ops_ms is not None else None,
        groups=_groups(ops, n, ops_ms),
        by_precision=_by_precision(ops, n),
        float_between_quantized=[_placement(x, layers, n) for x in ops if _float_between_quantized(x, layers)],
        unfused_qdq=[_placement(x, layers, n) for x in ops if _unfused_qdq(x)],
        details={
            "inference_precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "default_inference_precision": _type_name(core.get_property("CPU", "INFERENCE_PRECISION_HINT")),
            "exec_types": dict(Counter(x.kernel for x in ops).most_common()),
            "layer_types": dict(Counter(x.type for x in ops).most_common()),
            "precision_hint_effect": _bf16_without_hint(core, model, no_hint, path),
        },
    )


def _config(options: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """The CPU plugin's settings as ``OpenVINORuntime._open`` makes them (the rest of ``options`` passed on)."""
    precision = str(options.pop("inference_precision", "f32"))
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    config.update(options)
    return config


def _ordered(ports: Any, feeds: dict[str, np.ndarray], path: Path) -> list[np.ndarray]:
    """The feeds in the order of the model's inputs: by tensor name, else by position."""
    arrays = list(feeds.values())
    ordered = []
    for i, port in enumerate(ports):
        named = [feeds[name] for name in port.get_names() if name in feeds]
        if not named and len(arrays) != len(ports):
            raise InputError(f"{path}: no feed for the model's input {i} ({', '.join(port.get_names()) or 'unnamed'})")
        ordered.append(named[0] if named else arrays[i])
    return ordered


def _static_model(path: Path, feeds: dict[str, np.ndarray]) -> Any:
    """The model read with the runtime's reader and reshaped to the feeds' shapes; InputError otherwise."""
    import openvino as ov

    try:
        model = read_model(path)
        arrays = _ordered(model.inputs, feeds, path)
        model.reshape({port: ov.PartialShape(list(a.shape)) for port, a in zip(model.inputs, arrays, strict=True)})
    except InputError:
        raise
    except Exception as e:  # OpenVINO raises RuntimeError/its own types for bad files and shapes
        raise InputError(f"{path}: OpenVINO cannot load this model: {first_line(e)}") from None
    return model


def _compile(core: Any, model: Any, config: dict[str, Any], path: Path) -> Any:
    """The model compiled for the CPU plugin; InputError naming the file when the plugin refuses it."""
    try:
        return core.compile_model(model, "CPU", config)
    except Exception as e:
        raise InputError(f"{path}: OpenVINO cannot compile this model: {first_line(e)}") from None


def _info(op: Any, key: str) -> str:
    rt = op.get_rt_info()
    return str(rt[key].value) if key in rt else ""


def _precision(layer_type: str, runtime_precision: str, kernel: str, originals: set[str], crosses: bool) -> str:
    """One of PRECISIONS for a runtime layer. The plugin fuses a FakeQuantize, or an ONNX DequantizeLinear
    (Convert, Subtract, Multiply), into a "Subgraph" layer between int8 and float (``crosses``): made of
    those alone it is a "convert"."""
    if layer_type in _CONVERTS or (crosses and originals and originals <= _QUANTIZER_PARTS):
        return "convert"
    if layer_type in _SHAPE:
        return "other"
    precision = runtime_precision.upper() or kernel.rsplit("_", 1)[-1].upper()
    return _PRECISIONS.get(precision, "other")  # I32, I64, BOOLEAN, dynamic: integer bookkeeping


def _crosses(inp: str, out: str) -> bool:
    """Whether a layer takes int8 and gives float, or the other way round."""
    return (inp in _QUANTIZED and out in _FLOAT) or (inp in _FLOAT and out in _QUANTIZED)


def _layers(runtime: Any, model: Any) -> dict[str, _Layer]:
    """The runtime model's layers in execution order, without the constants and the layers computed from
    constants alone (weight preparation done once at compile time)."""
    original = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    constant: set[str] = set()
    layers: dict[str, _Layer] = {}
    for op in runtime.get_ordered_ops():
        name, layer_type = op.get_friendly_name(), _info(op, "layerType")
        sources = [i.get_source_output().get_node().get_friendly_name() for i in op.inputs()]
        if layer_type in ("Const", "Constant") or (sources and all(s in constant for s in sources)):
            constant.add(name)
            continue
        originals = {original[n] for n in _info(op, "originalLayersNames").split(",") if n in original}
        kernel = _info(op, "primitiveType")
        inp = op.get_input_element_type(0).get_type_name().upper() if op.get_input_size() else ""
        out = _info(op, "outputPrecisions").split(",")[0].upper()
        runtime_precision = _info(op, "runtimePrecision")
        layers[name] = _Layer(
            name=name,
            type=layer_type,
            precision=None
            if layer_type in _PLUMBING
            else _precision(layer_type, runtime_precision, kernel, originals, _crosses(inp, out)),
            kernel=kernel,
            inp=inp,
            out=out,
            before=[s for s in sources if s not in constant],
            after=[t.get_node().get_friendly_name() for o in op.outputs() for t in o.get_target_inputs()],
        )
    return layers


def _profile(compiled: Any, arrays: list[np.ndarray], calls: int, layers: dict[str, _Layer]) -> None:
    """Run ``calls`` inferences, adding each executed layer's counter (which holds the last inference only)
    to its layer. A counter with no runtime layer of its name becomes a layer of its own."""
    import openvino as ov

    request = compiled.create_infer_request()
    for i, array in enumerate(arrays):
        request.set_input_tensor(i, ov.Tensor(np.ascontiguousarray(array)))
    for _ in range(WARMUP if calls > 0 else 0):
        request.infer()
    for _ in range(calls):
        request.infer()
        for info in request.get_profiling_info():
            ms = info.real_time.total_seconds() * 1000
            if info.status != ov.ProfilingInfo.Status.EXECUTED or ms <= 0:
                continue
            layer = layers.get(info.node_name)
            if layer is None:
                precision = _precision(info.node_type, "", info.exec_type, set(), False)
                layer = layers[info.node_name] = _Layer(
                    info.node_name, info.node_type, precision, info.exec_type, "", "", [], []
                )
            layer.ms += ms


def _groups(ops: list[_Layer], calls: int, ops_ms: float | None) -> list[OpGroup]:
    """Layers by (layer type, precision), most time first (most layers first without a clock)."""
    by: dict[tuple[str, str], list[_Layer]] = defaultdict(list)
    for layer in ops:
        by[(layer.type, str(layer.precision))].append(layer)
    groups = []
    for (layer_type, precision), members in by.items():
        ms = sum(m.ms for m in members) / calls if calls else None
        groups.append(
            OpGroup(
                op_type=layer_type,
                precision=precision,
                count=len(members),
                ms=round(ms, 4) if ms is not None else None,
                share=round(ms / ops_ms, 4) if ms is not None and ops_ms else None,
                kernels=sorted({m.kernel for m in members if m.kernel}),
                nodes=[m.name for m in members[:8]],
            )
        )
    return sorted(groups, key=lambda g: (-(g.ms or 0.0), -g.count, g.op_type))


def _by_precision(ops: list[_Layer], calls: int) -> dict[str, float]:
    """Share of the layers' time per precision (of their count when nothing was timed)."""
    weight: dict[str, float] = defaultdict(float)
    for layer in ops:
        weight[str(layer.precision)] += layer.ms if calls else 1.0
    total = sum(weight.values())
    return {k: round(v / total, 4) for k, v in sorted(weight.items(), key=lambda kv: -kv[1])} if total else {}


def _placement(layer: _Layer, layers: dict[str, _Layer], calls: int) -> Placement:
    return Placement(
        node=layer.name,
        op_type=layer.type,
        precision=str(layer.precision),
        ms=round(layer.ms / calls, 4) if calls else None,
        before=[layers[n].type for n in layer.before if n in layers],
        after=[layers[n].type for n in layer.after if n in layers],
    )


def _passes(layer: _Layer) -> bool:
    """A layer a quantized value goes through on its way: reorders, converts, reshapes, integer bookkeeping."""
    return layer.precision in ("convert", "other")


def _reaches(layer: _Layer, layers: dict[str, _Layer], forward: bool) -> bool:
    """Whether a quantized layer feeds ``layer`` (``forward`` False) or takes its output (True), directly
    or through reorders and reshapes. Quantized: an int8/int4 layer, a FakeQuantize, or (feeding) a layer
    whose output is int8 and (taking) a quantizer."""
    seen: set[str] = set()
    todo = list(layer.after if forward else layer.before)
    while todo:
        other = layers.get(todo.pop())
        if other is None or other.name in seen or other.precision is None:
            continue
        seen.add(other.name)
        if other.precision in ("int8", "int4") or other.type == "FakeQuantize":
            return True
        if other.out in _QUANTIZED and (not forward or other.precision == "convert"):
            return True
        if _passes(other):
            todo.extend(other.after if forward else other.before)
    return False


def _float_between_quantized(layer: _Layer, layers: dict[str, _Layer]) -> bool:
    """A float computation fed by a quantized layer and feeding one: the data leaves int8 for it alone."""
    if layer.precision not in ("fp32", "bf16", "fp16") or _passes(layer):
        return False
    return _reaches(layer, layers, forward=False) and _reaches(layer, layers, forward=True)


def _unfused_qdq(layer: _Layer) -> bool:
    """A FakeQuantize run as a layer, or a reorder/convert/quantizer between int8 and float. The model
    input's own quantizer (after "Input") is one too: a float model input has to be quantized somewhere."""
    if layer.type == "FakeQuantize":
        return True
    return layer.precision == "convert" and _crosses(layer.inp, layer.out)


def _bf16_without_hint(core: Any, model: Any, config: dict[str, Any], path: Path) -> dict[str, int]:
    """The compute layers that run bf16 when the model is compiled without INFERENCE_PRECISION_HINT: on a
    CPU with AMX or AVX512-bf16 OpenVINO's default is bf16, so an FP32 model compiled with defaults does not
    compute in FP32 (the project sets f32 for parity)."""
    layers = _layers(_compile(core, model, config, path).get_runtime_model(), model)
    compute = [x for x in layers.values() if x.precision in ("int8", "int4", "bf16", "fp16", "fp32")]
    return {"bf16_layers": sum(x.precision == "bf16" for x in compute), "of": len(compute)}
