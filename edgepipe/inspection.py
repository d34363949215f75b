"""``edgepipe inspect``: what a model file holds, read with its format's own library (onnx, the LiteRT
flatbuffer schema, openvino's reader, gguf-py) without starting a runtime session. ``Inspection`` is the
JSON contract of ``inspect --json`` (docs/inspect.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edgepipe.artifact import resolve_model_path
from edgepipe.files import sha256_file
from edgepipe.formats import detect_format

INSPECTION_SCHEMA_VERSION: Literal[1] = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Quantization(_Strict):
    scale: list[float]
    zero_point: list[int]
    axis: int | None = None  # the quantized axis when there is one scale per channel


class TensorInfo(_Strict):
    name: str
    shape: list[int | str]  # a dynamic dimension by its name, or -1
    dtype: str
    quantization: Quantization | None = None
    value_range: list[int] | None = None


class FileInfo(_Strict):
    path: str
    size_bytes: int
    sha256: str


class WeightGroup(_Strict):
    count: int
    bytes: int


class Inspection(_Strict):
    schema_version: Literal[1] = INSPECTION_SCHEMA_VERSION
    path: str
    format: Literal["onnx", "openvino", "tflite", "gguf"]
    format_version: str
    size_bytes: int  # all files together
    sha256: str  # of the model file itself
    files: list[FileInfo]  # the model file and the files it needs (an IR's .bin)
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    operators: dict[str, int]  # by type, counted through subgraphs
    custom_operators: list[str]  # not in the format's standard operator set
    weights: dict[str, WeightGroup]  # by element type: float32, float16, int8, int4 / i8, u4 / q4_k, ...
    hybrid: bool | None  # integer weights computed in float (dynamic range / weight-only); None: not said
    details: dict[str, Any]  # the format's own: opsets, signatures, GGUF architecture and tokenizer, ...


def _reader(fmt: str) -> Any:
    from edgepipe.export import gguf_inspect, onnx_inspect, openvino_inspect, tflite_inspect

    return {"onnx": onnx_inspect, "openvino": openvino_inspect, "tflite": tflite_inspect, "gguf": gguf_inspect}[fmt]


def inspect_model(path: str | Path) -> Inspection:
    """Inspect a model file (or an edgepipe artifact folder's model). InputError naming the file when it
    is not a readable model of its format."""
    from edgepipe.errors import InputError

    resolved = resolve_model_path(path)
    fmt = detect_format(resolved)
    if fmt == "torch":
        raise InputError(f"{resolved}: inspect reads exported models (.onnx, .xml, .tflite, .gguf)")
    found = _reader(fmt).describe(resolved)
    files = [resolved] + ([resolved.with_suffix(".bin")] if fmt == "openvino" else [])
    infos = [FileInfo(path=str(f), size_bytes=f.stat().st_size, sha256=sha256_file(f)) for f in files]
    return Inspection(
        path=str(resolved),
        format=fmt,
        size_bytes=sum(f.size_bytes for f in infos),
        sha256=infos[0].sha256,
        files=infos,
        **{**found, "inputs": [_tensor(s) for s in found["inputs"]], "outputs": [_tensor(s) for s in found["outputs"]]},
    )


def _tensor(spec: Any) -> TensorInfo:
    return TensorInfo(
        name=spec.name,
        shape=spec.shape,
        dtype=spec.dtype,
        quantization=Quantization(**spec.quantization) if spec.quantization else None,
        value_range=spec.value_range,
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 10_000 else f"{n:,} bytes"


def render(info: Inspection) -> str:
    """The inspection for a person: one line of identity, then inputs, outputs, operators, weights."""

    def tensor(t: TensorInfo) -> str:
        q = ""
        if t.quantization:
            s, z = t.quantization.scale, t.quantization.zero_point
            q = (
                f"  scale {s[0]:.6g} zero point {z[0]}"
                if len(s) == 1
                else f"  per-axis {t.quantization.axis}: {len(s)} scales"
            )
        return f"  {t.name}  [{', '.join(str(d) for d in t.shape)}]  {t.dtype}{q}"

    ops = sum(info.operators.values())
    lines = [
        f"{info.path}: {info.format} ({info.format_version}), {_mb(info.size_bytes)}, sha256 {info.sha256[:16]}...",
        "inputs:",
        *(tensor(t) for t in info.inputs),
        "outputs:",
        *(tensor(t) for t in info.outputs),
    ]
    if info.operators:
        top = ", ".join(f"{k} {v}" for k, v in sorted(info.operators.items(), key=lambda kv: -kv[1]))
        lines.append(f"operators ({ops}): {top}")
    lines.append(f"custom operators: {', '.join(info.custom_operators) or 'none'}")
    weights = "; ".join(f"{k} {w.count} tensors {_mb(w.bytes)}" for k, w in info.weights.items())
    hybrid = {True: " (hybrid: integer weights, float compute)", False: "", None: ""}[info.hybrid]
    lines.append(f"weights: {weights or 'none'}{hybrid}")
    for key, value in info.details.items():
        if value not in (None, [], {}, ""):
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
