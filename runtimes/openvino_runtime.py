"""OpenVINO: reads IR (.xml + .bin) and ONNX. FP32 parity needs INFERENCE_PRECISION_HINT=f32: on CPUs
with AMX the default precision is bf16, which is reported as a precision of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import InputError, first_line
from edgepipe.runtimes.base import Runtime, Session
from edgepipe.tensors import TensorSpec


def port_spec(port: Any, index: int, kind: str) -> TensorSpec:
    try:
        name = port.get_any_name()
    except RuntimeError:  # unnamed port
        name = f"{kind}_{index}"
    shape: list[int | str] = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
    return TensorSpec(name=name, shape=shape, dtype=np.dtype(port.get_element_type().to_dtype()).name)


def read_model(path: Path) -> Any:
    """Read an IR or ONNX file with the frontend for its suffix. ``Core.read_model`` tries every
    frontend in turn, and the TensorFlow one writes parse errors straight to stderr for a bad file."""
    from openvino.frontend import FrontEndManager

    framework = {".xml": "ir", ".onnx": "onnx"}.get(path.suffix.lower())
    if framework is None:
        raise InputError(f"{path}: OpenVINO reads .xml (IR) or .onnx files")
    if framework == "ir" and not path.with_suffix(".bin").is_file():
        raise InputError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing (an IR is .xml + .bin)")
    frontend = FrontEndManager().load_by_framework(framework)
    return frontend.convert(frontend.load(str(path)))


class OpenVINOSession(Session):
    def __init__(self, compiled: Any, info: dict[str, Any], static: Any = None):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self.inputs = [port_spec(p, i, "input") for i, p in enumerate(compiled.inputs)]
        self.outputs = [port_spec(p, i, "output") for i, p in enumerate(compiled.outputs)]
        self.info = info
        # ``static(shapes)`` compiles the model for fixed input shapes: a timed point runs that, as
        # benchmark_app -shape does and a latency-minded app would; dynamic dimensions cost the CPU plugin
        # shape inference on every call (x1.13 measured on the quickstart's INT8 IR).
        self._static = static if any(not isinstance(d, int) for s in self.inputs for d in s.shape) else None
        self._timed: dict[tuple[tuple[int, ...], ...], Any] = {}
        self._bound: dict[str, np.ndarray] | None = None
        self._bound_request: Any = None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        # Positional (the feeds are keyed by this session's own input names, in order); the request's
        # buffers are overwritten by its next call, so the outputs are copied once, here.
        self._request.infer([feeds[s.name] for s in self.inputs], share_inputs=True, share_outputs=True)
        return [self._request.get_output_tensor(i).data.copy() for i in range(len(self.outputs))]

    def run_timed(self, feeds: dict[str, np.ndarray]) -> float | None:
        # The inputs are bound once per feeds (as tensors sharing the arrays' memory), then only the inference
        # call runs, as in OpenVINO's own benchmark_app: infer(inputs) wraps every array again on each call.
        if feeds is not self._bound:
            import openvino as ov

            shapes = tuple(tuple(feeds[s.name].shape) for s in self.inputs)
            if shapes not in self._timed:
                compiled = self._static(shapes) if self._static else self._compiled
                self._timed[shapes] = compiled.create_infer_request()
                self.info["static_shapes"] = self._static is not None
            request = self._timed[shapes]
            for i, spec in enumerate(self.inputs):
                request.set_input_tensor(i, ov.Tensor(feeds[spec.name], shared_memory=True))
            self._bound, self._bound_request = feeds, request  # held, so that its id cannot be reused
        self._bound_request.infer()
        # OpenVINO's own clock of the call (what benchmark_app reports): without the Python binding's
        # 20-40 us per call, which would otherwise be a quarter of a 0.16 ms INT8 model's latency.
        return float(self._bound_request.latency)


class OpenVINORuntime(Runtime[Session]):
    name = "openvino"
    formats = ("openvino", "onnx")
    inference_precisions = ("bf16", "f16")
    module = "openvino"
    package = "openvino"

    def devices(self) -> list[str]:
        import openvino as ov

        return [d.split(".")[0].lower() for d in ov.Core().available_devices]

    def _open(self, path: Path, device: str, threads: int | None, options: dict[str, Any]) -> Session:
        import openvino as ov

        precision = str(options.pop("inference_precision", "f32"))
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads and device == "cpu":  # a CPU setting; GPU plugins reject it
            config["INFERENCE_NUM_THREADS"] = threads
        config.update(options)
        core = ov.Core()
        try:
            model = read_model(Path(path))
            compiled = core.compile_model(model, device.upper(), config)
        except InputError:
            raise
        except Exception as e:  # OpenVINO raises RuntimeError/its own types for bad files
            raise InputError(f"{path}: OpenVINO cannot load this model: {first_line(e)}") from None
        info = {
            "inference_precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")) if device == "cpu" else None,
            "timer": "InferRequest.latency",
        }

        def static(shapes: tuple[tuple[int, ...], ...]) -> Any:
            fixed = model.clone()
            fixed.reshape(
                {port: ov.PartialShape(list(shape)) for port, shape in zip(fixed.inputs, shapes, strict=True)}
            )
            return core.compile_model(fixed, device.upper(), config)

        return OpenVINOSession(compiled, info, static)


def _type_name(value: Any) -> str:
    """OpenVINO's element type as OpenVINO names it ("f32", "bf16", "f16"), not its Python repr."""
    name = getattr(value, "get_type_name", None)
    return str(name()) if callable(name) else str(value)
