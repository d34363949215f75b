"""llama.cpp through llama-cpp-python: GGUF language models with llama.cpp's own engine.

Every file passes gguf-py's reader before llama.cpp sees it (its parser has had memory-safety bugs on
crafted files). llama.cpp says why a model does not load only in its verbose log: the log is captured and
its error line becomes the one-line message. The KV cache is F32 by default, so logits match the torch
reference to ~1e-5 (an F16 cache, llama.cpp's default, moves them by ~2e-3): ``options={"kv_cache": "f16"}``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import InputError, UnavailableError, first_line
from edgepipe.runtimes.base import Generation, LanguageModelSession, Runtime
from edgepipe.tensors import TensorSpec

_KV_TYPES = {"f32": 0, "f16": 1}  # ggml type ids
MAX_CONTEXT = 2048


@contextmanager
def llama_cpp_log() -> Iterator[Any]:
    """All that llama.cpp logs inside the block, captured (its reasons for a failure are only there), and
    silence after it (llama-cpp-python prints its log to stderr at the level of its last ``verbose``)."""
    from edgepipe.capture import captured_output

    logger = logging.getLogger("llama-cpp-python")
    logger.setLevel(logging.DEBUG)
    try:
        with captured_output() as log:
            yield log
    finally:
        logger.setLevel(logging.ERROR)


def log_error(log: str) -> str:
    """llama.cpp's reason from its log: ``llama_model_load: error loading model: <reason>``, else the
    first line that says something failed."""
    for line in log.splitlines():
        if found := re.search(r"\berror\b[^:]*:\s*(.+)", line):
            return found.group(1).strip()
    failed = [line.strip() for line in log.splitlines() if "failed" in line.lower()]
    return failed[0] if failed else "llama.cpp gave no reason"


class LlamaCppSession(LanguageModelSession):
    def __init__(self, llm: Any, n_ctx: int, info: dict[str, Any]):
        self._llm = llm
        self.vocab_size = int(llm.n_vocab())
        # What was asked for: llama.cpp pads its own context (n_ctx() may say 256 for 64) while
        # llama-cpp-python's buffers hold the requested length.
        self.context_length = n_ctx
        self.inputs = [
            TensorSpec(
                name="input_ids", shape=["batch", "sequence"], dtype="int32", value_range=[0, self.vocab_size - 1]
            )
        ]
        self.outputs = [TensorSpec(name="logits", shape=["batch", "sequence", self.vocab_size], dtype="float32")]
        self.info = info
        import llama_cpp

        self._greedy = llama_cpp.llama_sampler_init_greedy()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        ids = np.asarray(feeds[self.inputs[0].name])
        if ids.shape[-1] > self.context_length:
            raise InputError(
                f"a sequence of {ids.shape[-1]} tokens is longer than the context of {self.context_length}"
            )
        out = []
        for row in ids.reshape(-1, ids.shape[-1]):
            self._llm.reset()
            self._llm.eval(row.tolist())
            out.append(np.array(self._llm.scores[: len(row)], dtype=np.float32))
        return [np.stack(out).reshape(*ids.shape, self.vocab_size)]

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self._llm.tokenize(text.encode(), add_bos=False, special=False)]

    def detokenize(self, tokens: list[int]) -> str:
        return bytes(self._llm.detokenize(tokens)).decode(errors="replace")

    def generate(self, prompt: list[int], max_new_tokens: int) -> Generation:
        """Greedy decoding with llama.cpp's KV cache: the prompt in one batch, then one token per call, picked
        by llama.cpp's greedy sampler and decoded through its C API (no logits copied to Python), as an app
        on llama.cpp would."""
        import llama_cpp

        llm = self._llm
        if len(prompt) + max_new_tokens > self.context_length:
            raise InputError(f"{len(prompt)} + {max_new_tokens} tokens exceed the context of {self.context_length}")
        llm.reset()  # the next eval clears the KV cache from position 0
        t0 = time.perf_counter()
        llm.eval(prompt)
        prompt_ms = (time.perf_counter() - t0) * 1e3
        tokens: list[int] = []
        token_ms: list[float] = []
        one = (llama_cpp.llama_token * 1)()
        for _ in range(max_new_tokens):
            t0 = time.perf_counter()
            one[0] = llama_cpp.llama_sampler_sample(self._greedy, llm.ctx, -1)
            if llama_cpp.llama_decode(llm.ctx, llama_cpp.llama_batch_get_one(one, 1)) != 0:
                raise InputError(f"llama.cpp could not decode new token {len(tokens) + 1} of {max_new_tokens}")
            token_ms.append((time.perf_counter() - t0) * 1e3)
            tokens.append(int(one[0]))
        llm.reset()  # the Python side no longer knows what the cache holds
        return Generation(tokens, len(prompt), prompt_ms, token_ms)

    def close(self) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_free(self._greedy)
        self._llm.close()


class LlamaCppRuntime(Runtime[LlamaCppSession]):
    name = "llama.cpp"
    formats = ("gguf",)
    module = "llama_cpp"
    package = "llama-cpp-python"

    def devices(self) -> list[str]:
        import llama_cpp

        return ["cpu", *(["gpu"] if llama_cpp.llama_supports_gpu_offload() else [])]

    def _open(self, path: Path, device: str, threads: int | None, options: dict[str, Any]) -> LlamaCppSession:
        from edgepipe.export.gguf_inspect import summarize

        summary = summarize(path)  # gguf-py reads and checks the whole header first
        if not summary["tokenizer"]:
            raise InputError(f"{path}: the GGUF has no tokenizer (tokenizer.ggml.model is missing)")
        kv_cache = str(options.pop("kv_cache", "f32"))
        n_gpu_layers = int(options.pop("n_gpu_layers", -1 if device == "gpu" else 0))
        # The model's context, at most MAX_CONTEXT: logits for every position of a 128k context would not fit.
        n_ctx = int(options.pop("n_ctx", min(summary["context_length"] or 512, MAX_CONTEXT)))
        if options:
            raise InputError(
                f"runtime 'llama.cpp' has no option(s) {sorted(options)} (it takes: kv_cache, n_gpu_layers, n_ctx)"
            )
        if kv_cache not in _KV_TYPES:
            raise InputError(f"kv_cache: '{kv_cache}' is not one of {', '.join(_KV_TYPES)}")
        import llama_cpp

        if n_gpu_layers and not llama_cpp.llama_supports_gpu_offload():
            raise UnavailableError("n_gpu_layers: this llama.cpp was built without GPU offload (CPU only)")
        if device == "gpu" and n_gpu_layers == 0:
            raise InputError("n_gpu_layers: 0 on device 'gpu' would run every layer on the CPU")

        llm, error = None, None
        with llama_cpp_log() as log:
            try:
                llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_batch=n_ctx,
                    n_ubatch=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=n_gpu_layers,
                    logits_all=True,
                    type_k=_KV_TYPES[kv_cache],
                    type_v=_KV_TYPES[kv_cache],
                    verbose=True,  # llama.cpp tells why a model does not load only here
                )
            except Exception as e:  # ValueError("Failed to load model from file") and the like
                error = e
        if llm is None:
            reason = log_error(log.text) if log.text else first_line(error or Exception("unknown"))
            raise InputError(f"{path}: llama.cpp cannot load this model: {reason}")
        llm.verbose = False  # its own Python-side messages
        info = {
            "architecture": summary["architecture"],
            "parameters": summary["parameters"],
            "tensor_types": summary["tensor_types"],
            "bits_per_weight": summary["bits_per_weight"],
            "kv_cache": kv_cache,
            "n_ctx": n_ctx,
            "n_gpu_layers": n_gpu_layers,
            "num_threads": int(llama_cpp.llama_n_threads(llm.ctx)),  # read back from the context
            # What this llama.cpp was compiled for (a portable build has no AVX-512 kernels, a native one may)
            "system_info": llama_cpp.llama_print_system_info().decode().strip(" |"),
        }
        return LlamaCppSession(llm, n_ctx, info)
