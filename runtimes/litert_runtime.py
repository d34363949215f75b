"""LiteRT (TFLite): the ai-edge-litert interpreter, or tflite-runtime's on devices where only that installs
(numpy 1.x boards): both have the same Interpreter API.

XNNPACK is the interpreter's default delegate; ``options={"xnnpack": False}`` runs the built-in kernels
only (some files load with one and not the other, and hybrid models differ between the two). Integer
inputs and outputs of full-integer models carry their scale and zero point in the session's specs, so
the harness quantizes float data and dequantizes outputs itself.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import InputError, first_line
from edgepipe.runtimes.base import Runtime, Session
from edgepipe.tensors import TensorSpec

# Interpreter modules, preferred first: the current package, then its predecessor.
INTERPRETERS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def _interpreter_module() -> Any:
    for name in INTERPRETERS:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(f"none of {', '.join(INTERPRETERS)} is installed")


def tensor_spec(detail: dict[str, Any], name: str) -> TensorSpec:
    """A TensorSpec from the interpreter's tensor details: dynamic dims (-1 in the signature) as "?",
    and for integer tensors their affine quantization (per tensor, or per axis)."""
    signature = detail.get("shape_signature", detail["shape"])
    shape: list[int | str] = [int(d) if d >= 0 else "?" for d in signature]
    dtype = np.dtype(detail["dtype"])
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64)
    quantization = None
    if dtype.kind in "iu" and scales.size:
        quantization = {
            "scale": scales.tolist(),
            "zero_point": np.asarray(params["zero_points"]).astype(int).tolist(),
            "axis": int(params.get("quantized_dimension", 0)) if scales.size > 1 else None,
        }
    return TensorSpec(name=name, shape=shape, dtype=dtype.name, quantization=quantization)


class LiteRTSession(Session):
    """One signature: its tensors set by index (the fast path). Several signatures (one per static shape,
    as edgepipe exports sequence models): each call runs the signature made for its inputs' shapes."""

    def __init__(self, interpreter: Any, info: dict[str, Any]):
        self._it = interpreter
        signatures = interpreter.get_signature_list()
        self._runners: dict[tuple[tuple[int, ...], ...], tuple[Any, list[str], list[str]]] = {}
        self._bound: dict[str, np.ndarray] | None = None
        if len(signatures) > 1:
            self._multi(signatures)
            self.info = {**info, "signatures": list(signatures)}
            return
        ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
        self._in_index = [d["index"] for d in ins]
        self._out_index = [d["index"] for d in outs]
        self._shapes = [tuple(d["shape"]) for d in ins]
        self.inputs = [tensor_spec(d, d["name"]) for d in ins]
        self.outputs = [tensor_spec(d, d["name"]) for d in outs]
        self.info = info

    def _multi(self, signatures: dict[str, Any]) -> None:
        specs_in: list[list[TensorSpec]] = []
        for key, signature in signatures.items():
            runner = self._it.get_signature_runner(key)
            ins, outs = runner.get_input_details(), runner.get_output_details()
            names_in, names_out = list(signature["inputs"]), list(signature["outputs"])
            shapes = tuple(tuple(int(d) for d in ins[n]["shape"]) for n in names_in)
            self._runners[shapes] = (runner, names_in, names_out)
            specs_in.append([tensor_spec(ins[n], n) for n in names_in])
            self.outputs = [tensor_spec(outs[n], n) for n in names_out]
        # Dimensions that differ between the signatures are dynamic to a caller.
        self.inputs = []
        for column in zip(*specs_in, strict=True):  # one input, across the signatures
            first = column[0]
            shape = [d if all(s.shape[a] == d for s in column) else "?" for a, d in enumerate(first.shape)]
            self.inputs.append(first.model_copy(update={"shape": shape}))
        self.outputs = [
            o.model_copy(update={"shape": [d if a == 0 else "?" for a, d in enumerate(o.shape)]}) for o in self.outputs
        ]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._runners:
            arrays = [feeds[s.name] for s in self.inputs]
            key = tuple(tuple(a.shape) for a in arrays)
            if key not in self._runners:
                made = ", ".join(str(list(s)) for s in self._runners)
                raise InputError(
                    f"the model has no signature for input shapes {[list(s) for s in key]} (it takes {made})"
                )
            runner, names_in, names_out = self._runners[key]
            result = runner(**dict(zip(names_in, arrays, strict=True)))
            return [result[n] for n in names_out]
        self._bind(feeds)
        self._it.invoke()
        return [self._it.get_tensor(i) for i in self._out_index]

    def run_timed(self, feeds: dict[str, np.ndarray]) -> float | None:
        # The inputs are copied in once per feeds, then only invoke() runs, as in LiteRT's own benchmark
        # tool: no input copy and no output copy (get_tensor) inside the timed call.
        if self._runners:
            self.run(feeds)
            return None
        if feeds is not self._bound:
            self._bind(feeds)
        self._it.invoke()
        return None

    def _bind(self, feeds: dict[str, np.ndarray]) -> None:
        arrays = [feeds[s.name] for s in self.inputs]
        shapes = [tuple(a.shape) for a in arrays]
        if shapes != self._shapes:  # a dynamic dimension takes another size: resize, then allocate again
            for index, shape in zip(self._in_index, shapes, strict=True):
                self._it.resize_tensor_input(index, list(shape))
            self._it.allocate_tensors()
            self._shapes = shapes
        for index, array in zip(self._in_index, arrays, strict=True):
            self._it.set_tensor(index, array)
        self._bound = feeds  # held, so that its id cannot be reused by another dict


class LiteRTRuntime(Runtime[Session]):
    name = "litert"
    formats = ("tflite",)
    module = "ai_edge_litert.interpreter"
    package = "ai-edge-litert"

    def unavailable_reason(self) -> str | None:
        try:
            _interpreter_module()
        except ImportError as e:
            return f"runtime '{self.name}' is not installed ({first_line(e)}); pip install {self.package}"
        return None

    def version(self) -> str | None:
        from edgepipe.environment import package_version

        return package_version("ai-edge-litert") or package_version("tflite-runtime")

    def devices(self) -> list[str]:
        return ["cpu"]

    def _open(self, path: Path, device: str, threads: int | None, options: dict[str, Any]) -> Session:
        from edgepipe.export.tflite_inspect import check_tflite

        check_tflite(path)  # the format's own reader first: a native parser never sees a broken file
        mod = _interpreter_module()
        xnnpack = bool(options.pop("xnnpack", True))
        if options:
            raise InputError(f"runtime 'litert' has no option(s) {sorted(options)} (it takes: xnnpack)")
        kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": threads}
        if not xnnpack:
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        from edgepipe.capture import captured_output

        interpreter, reason = None, ""
        with captured_output():  # "INFO: Created TensorFlow Lite XNNPACK delegate" and the like
            try:
                interpreter = mod.Interpreter(**kwargs)
                interpreter.allocate_tensors()
            except Exception as e:  # ValueError/RuntimeError naming the operator it lacks
                interpreter, reason = None, first_line(e)
        if interpreter is None:
            raise InputError(f"{path}: the LiteRT interpreter cannot load this model: {reason}")
        info = {"interpreter": mod.__name__, "xnnpack": xnnpack, "num_threads": threads}
        return LiteRTSession(interpreter, info)
