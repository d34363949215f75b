"""PyTorch, the reference every artifact is compared with. Loads edgepipe torch artifacts
(safetensors weights + the module spec recorded in the manifest beside them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifact import read_manifest
from edgepipe.errors import InputError
from edgepipe.runtimes.base import Runtime, Session
from edgepipe.tensors import TensorSpec


def _device_name(torch: Any, device: Any) -> str:
    return str(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu"


class TorchSession(Session):
    def __init__(
        self,
        module: Any,
        device: str,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        threads_before: int | None = None,
    ):
        import torch

        self._torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # FP32 on the GPU means FP32: TF32 convolutions and matrix products (cuDNN's default) move
            # outputs by ~1e-3, which is another precision, not the reference's.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.module = module.to(self.device).eval()
        self.inputs, self.outputs = inputs, outputs
        self.info = {"num_threads": torch.get_num_threads(), "device_name": _device_name(torch, self.device)}
        # torch's thread count is the process's: closing gives the caller back its own (an API call that
        # loads the reference, e.g. run_recipe, would otherwise change how the caller's torch trains).
        self._threads_before = threads_before

    def close(self) -> None:
        if self._threads_before is not None:
            self._torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])).to(self.device) for s in self.inputs]
        with torch.inference_mode():
            out = self.module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().cpu().numpy() for o in outs]


class TorchRuntime(Runtime[Session]):
    name = "torch"
    formats = ("torch",)
    module = "torch"
    package = "torch"

    def devices(self) -> list[str]:
        import torch

        return ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]

    def _open(self, path: Path, device: str, threads: int | None, options: dict[str, Any]) -> Session:
        import torch

        from edgepipe.artifact import Artifact
        from edgepipe.models import load_torch_model

        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            manifest = read_manifest(Path(path).parent)
            if manifest.format != "torch":
                raise InputError(f"{path}: manifest says format '{manifest.format}', not torch")
            module = load_torch_model(Artifact(Path(path).parent, manifest))
        except BaseException:
            torch.set_num_threads(before)
            raise
        return TorchSession(module, device, manifest.inputs, manifest.outputs, before if threads else None)
