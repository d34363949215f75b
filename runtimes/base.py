"""The runtime protocol: every backend loads a model file into a Session that maps named numpy
inputs to numpy outputs. Language-model runtimes with their own state (llama.cpp) add ``tokenize`` and a
``generate`` that uses their KV cache.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from edgepipe.environment import package_version
from edgepipe.errors import InputError, UnavailableError, first_line
from edgepipe.tensors import TensorSpec

_M = TypeVar("_M", bound="LoadedModel")


class LoadedModel(ABC):
    """What every runtime's load returns: a model on one device with a fixed thread count."""

    # What the runtime actually did, for the results row (e.g. the execution provider in use).
    info: dict[str, Any]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources early (optional)."""

    def __enter__(self: _M) -> _M:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Session(LoadedModel):
    """A tensor model: named numpy inputs to numpy outputs."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; ``feeds`` maps input names to arrays; returns outputs in ``self.outputs`` order."""

    def run_timed(self, feeds: dict[str, np.ndarray]) -> float | None:
        """One call as the timing loop makes it: a runtime that can leave its outputs in its own buffers
        does (no copy the runtime itself does not need); by default, ``run``. Returns the call's latency in
        ms where the runtime measures it itself (then the harness takes that, not the Python call around
        it), else None."""
        self.run(feeds)
        return None

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Raise InputError for a missing input or a shape/dtype that cannot match the spec."""
        for spec in self.inputs:
            if spec.name not in feeds:
                raise InputError(f"input '{spec.name}' is missing (model inputs: {[s.name for s in self.inputs]})")
            arr = feeds[spec.name]
            if arr.ndim != len(spec.shape):
                raise InputError(f"input '{spec.name}': expected shape {spec.shape}, got {list(arr.shape)}")
            for want, got in zip(spec.shape, arr.shape, strict=True):
                if isinstance(want, int) and want >= 0 and want != got:
                    raise InputError(f"input '{spec.name}': expected shape {spec.shape}, got {list(arr.shape)}")
            if np.dtype(spec.dtype) != arr.dtype:
                raise InputError(f"input '{spec.name}': expected dtype {spec.dtype}, got {arr.dtype}")


@dataclass
class Generation:
    """Greedy decoding's result: the new tokens, the prompt's time and each new token's time."""

    tokens: list[int]
    prompt_tokens: int
    prompt_ms: float
    token_ms: list[float] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        total = sum(self.token_ms)
        return len(self.token_ms) / (total / 1000) if total > 0 else float("nan")


class LanguageModelSession(Session):
    """A causal language model that keeps its own state between tokens (llama.cpp's KV cache) and its own
    tokenizer. ``run`` maps ``input_ids`` (batch, sequence) to logits (batch, sequence, vocab) like any
    session, so the harness scores it with the same windows and reference as every other format; it adds
    ``tokenize`` and a ``generate`` that decodes token by token with its cache. (Other runtimes generate
    by re-running the whole sequence: the harness does that for them and says so.)"""

    vocab_size: int
    context_length: int

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` with the model's own tokenizer (no special tokens added)."""

    @abstractmethod
    def detokenize(self, tokens: list[int]) -> str:
        """The text of ``tokens``."""

    @abstractmethod
    def generate(self, prompt: list[int], max_new_tokens: int) -> Generation:
        """Greedy decoding after ``prompt``; timings separate prompt processing from token generation."""


S = TypeVar("S", bound=LoadedModel)


class Runtime(ABC, Generic[S]):
    """A backend. Subclasses name the module they need; a missing one makes the runtime unavailable."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    module: ClassVar[str]  # import name checked by ``unavailable_reason``
    package: ClassVar[str]  # distribution to install, for messages and versions
    # Lower inference precisions it can run an FP32 file at (load option ``inference_precision``).
    inference_precisions: ClassVar[tuple[str, ...]] = ()

    def unavailable_reason(self) -> str | None:
        """None when usable here, else why not (one line)."""
        try:
            importlib.import_module(self.module)
        except ImportError as e:
            return f"runtime '{self.name}' is not installed ({first_line(e)}); pip install {self.package}"
        return None

    def require(self) -> None:
        if (reason := self.unavailable_reason()) is not None:
            raise UnavailableError(reason)

    def version(self) -> str | None:
        """The package's version, else the module's own (onnxruntime-gpu installs module ``onnxruntime``)."""
        if found := package_version(self.package):
            return found
        try:
            module_version = getattr(importlib.import_module(self.module), "__version__", None)
        except ImportError:
            return None
        return str(module_version) if module_version else None

    @abstractmethod
    def devices(self) -> list[str]:
        """Devices usable on this machine, lower case: 'cpu', 'cuda', 'gpu', 'npu'."""

    def check_device(self, device: str) -> None:
        have = self.devices()
        if device not in have:
            raise UnavailableError(
                f"device '{device}' is not available to runtime '{self.name}' here (available: {', '.join(have)})"
            )

    def load(
        self, path: Path, *, device: str = "cpu", threads: int | None = None, options: dict[str, Any] | None = None
    ) -> S:
        """Load a model file. Bad files raise InputError naming the file; absent devices UnavailableError."""
        self.require()
        self.check_device(device)
        return self._open(Path(path), device, threads, dict(options or {}))

    @abstractmethod
    def _open(self, path: Path, device: str, threads: int | None, options: dict[str, Any]) -> S:
        """Load ``path`` on an available ``device``: what each runtime implements."""
