"""onnxruntime: CPU, plus the CUDA execution provider where onnxruntime-gpu and a GPU are present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import InputError, UnavailableError, first_line
from edgepipe.formats import ORT_TYPE_TO_DTYPE
from edgepipe.runtimes.base import Runtime, Session
from edgepipe.tensors import TensorSpec

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _spec(arg: Any) -> TensorSpec:
    shape = [d if isinstance(d, int) else (d or "?") for d in arg.shape]
    return TensorSpec(name=arg.name, shape=shape, dtype=ORT_TYPE_TO_DTYPE.get(arg.type, arg.type))


class OrtSession(Session):
    def __init__(self, session: Any):
        self._session = session
        self.inputs = [_spec(a) for a in session.get_inputs()]
        self.outputs = [_spec(a) for a in session.get_outputs()]
        self._names = [o.name for o in self.outputs]
        # The thread count as the session holds it (0: onnxruntime's default, one per physical core).
        threads = session.get_session_options().intra_op_num_threads
        self.info = {"providers": session.get_providers(), "num_threads": threads or "default"}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self._session.run(self._names, feeds))


class OnnxRuntime(Runtime[Session]):
    name = "onnxruntime"
    formats = ("onnx",)
    module = "onnxruntime"
    package = "onnxruntime"

    def devices(self) -> list[str]:
        import onnxruntime as ort

        have = set(ort.get_available_providers())
        return [d for d, p in _PROVIDERS.items() if p in have]

    def _open(self, path: Path, device: str, threads: int | None, options: dict[str, Any]) -> Session:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 4  # errors reach the user as one line of ours, not ORT log lines
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or 0
        so.inter_op_num_threads = 1
        for key, value in options.items():
            so.add_session_config_entry(key, str(value))
        providers = [_PROVIDERS[device], *(["CPUExecutionProvider"] if device != "cpu" else [])]
        try:
            session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            raise InputError(f"{path}: onnxruntime cannot load this model: {first_line(e)}") from None
        if session.get_providers()[0] != _PROVIDERS[device]:
            raise UnavailableError(f"{path}: onnxruntime did not place the model on '{device}'")
        return OrtSession(session)
