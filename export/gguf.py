"""GGUF: export a Llama-architecture model with gguf-py (F32 weights, llama.cpp's metadata and the byte-level
BPE tokenizer), quantize with llama.cpp's own quantizer, and read back the per-tensor types it chose
(K-quants fall back on rows not divisible by 256, and the manifest says so)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import field_validator

from edgepipe.configs import QuantizeConfig, TargetConfig
from edgepipe.errors import UnsupportedModel
from edgepipe.formats import GGUF_LLAMA_TENSORS, GGUF_QUANT_TYPES
from edgepipe.stage import StageContext
from edgepipe.store import Parents, StageOutput

MODEL_FILE = "model.gguf"


class LlamaCppQuant(QuantizeConfig):
    """llama.cpp's quantizer (``llama_model_quantize``) to one of its types, e.g. Q8_0, Q6_K, Q4_K_M."""

    method: Literal["llama.cpp"] = "llama.cpp"
    type: str = "Q8_0"

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v.upper() not in GGUF_QUANT_TYPES:
            raise ValueError(f"unknown llama.cpp type '{v}' (known: {', '.join(GGUF_QUANT_TYPES)})")
        return v.upper()

    @property
    def precision(self) -> str:
        return self.type.lower()

    def variant_name(self, fmt: str) -> str:
        return f"{fmt}-{self.precision}" + ("" if self.search else "-as-is")


class Target(TargetConfig):
    """GGUF for llama.cpp: F32 weights from the torch model (the llama family); each quantize entry is one
    llama.cpp type."""

    format: Literal["gguf"] = "gguf"

    quantizers: ClassVar[dict[str, type[QuantizeConfig]]] = {"llama.cpp": LlamaCppQuant}
    default_method: ClassVar[str | None] = "llama.cpp"
    tasks: ClassVar[tuple[str, ...] | None] = ("language-modeling",)


def _tensor_name(torch_name: str) -> str | None:
    parts = torch_name.split(".")
    index = next((p for p in parts if p.isdigit()), None)
    pattern = ".".join("{i}" if p == index else p for p in parts)
    found = GGUF_LLAMA_TENSORS.get(pattern)
    return found.format(i=index) if found else None


def _tokenizer(writer: Any, path: Path) -> None:
    """A byte-level BPE (tokenizer.json) as llama.cpp's "gpt2" tokenizer with the "gpt-2" pre-tokenizer:
    tokens in GPT-2's byte-to-unicode form (as the BPE's vocabulary already is), types, merges, specials."""
    data = json.loads(path.read_text())
    model = data["model"]
    if model.get("type") != "BPE" or (data.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
        raise UnsupportedModel(
            f"{path}: GGUF export takes a byte-level BPE tokenizer (this one is {model.get('type')})"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    specials = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    vocab.update(specials)
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise UnsupportedModel(f"{path}: token ids are not 0..{len(tokens) - 1}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # with the hyphen: "gpt2" is an unknown pre-tokenizer to llama.cpp
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in specials else 1 for t in tokens])  # 3: control, 1: normal
    writer.add_token_merges(merges)
    if "<s>" in specials:
        writer.add_bos_token_id(specials["<s>"])
    if "</s>" in specials:
        writer.add_eos_token_id(specials["</s>"])
    writer.add_add_bos_token(False)  # the model was trained on raw text windows, no BOS


def export(parents: Parents, config: Target, out_dir: Path, ctx: StageContext) -> StageOutput:
    """torch (llama family) -> GGUF F32 with full metadata and the tokenizer, written by gguf-py."""
    import gguf

    parent = parents["model"]
    spec = parent.manifest.model
    if spec.get("builder") != "zoo" or spec.get("family") != "llama":
        raise UnsupportedModel("GGUF export takes the llama family (a Llama-architecture decoder)")
    tokenizer = parent.manifest.preprocessing.get("tokenizer", {}).get("file")
    if not tokenizer:
        raise UnsupportedModel("GGUF export needs the model's tokenizer")
    params, vocab = spec["params"], spec["io"]["vocab_size"]
    module = ctx.torch_module(parent)
    path = out_dir / MODEL_FILE
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(parent.manifest.name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(params["max_length"])
    writer.add_embedding_length(params["dim"])
    writer.add_block_count(params["layers"])
    widths = {layer.feed_forward.w_gate.weight.shape[0] for layer in module.layers}
    if len(widths) > 1:  # a pruned model's FFN widths (global pruning ranks across layers)
        raise UnsupportedModel(f"llama.cpp takes one FFN width for every layer; this model has {sorted(widths)}")
    writer.add_feed_forward_length(widths.pop())
    writer.add_head_count(params["heads"])
    writer.add_head_count_kv(params.get("kv_heads") or params["heads"])
    writer.add_layer_norm_rms_eps(params["norm_eps"])
    writer.add_rope_freq_base(params["rope_theta"])
    # RoPE on adjacent pairs is llama.cpp's own convention for "llama": no Q/K permutation (models/llama.py).
    writer.add_rope_dimension_count(params["dim"] // params["heads"])
    writer.add_vocab_size(vocab)
    _tokenizer(writer, parent.file(tokenizer))
    for name, tensor in module.state_dict().items():
        target = _tensor_name(name)
        if target is None:
            raise UnsupportedModel(f"GGUF export has no llama.cpp name for tensor '{name}'")
        writer.add_tensor(target, tensor.detach().float().numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return StageOutput(
        format="gguf",
        precision="fp32",
        primary=MODEL_FILE,
        inputs=parent.manifest.inputs,
        outputs=parent.manifest.outputs,
        model={"exporter": "gguf-py", "architecture": "llama", **_types(path)},
    )


def _types(path: Path) -> dict[str, Any]:
    from edgepipe.export.gguf_inspect import summarize

    s = summarize(path)
    return {k: s[k] for k in ("tensor_types", "tensor_type_bytes", "bits_per_weight", "parameters")}


def quantize(parents: Parents, config: LlamaCppQuant, out_dir: Path, ctx: StageContext) -> StageOutput:
    """GGUF F32 -> a llama.cpp type with llama.cpp's own quantizer; the manifest has the type asked for and
    the per-tensor types it gave (a K-quant falls back where rows are not a multiple of 256)."""
    import llama_cpp

    from edgepipe.runtimes.llamacpp_runtime import llama_cpp_log, log_error

    parent = parents["model"]
    path = out_dir / MODEL_FILE
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{config.type}")
    with llama_cpp_log() as said:  # llama.cpp logs every tensor it quantizes, and its fallbacks
        status = llama_cpp.llama_model_quantize(str(parent.model_file).encode(), str(path).encode(), params)
    if status != 0:
        raise UnsupportedModel(f"llama.cpp cannot quantize this model to {config.type}: {log_error(said.text)}")
    types = _types(path)
    fallbacks = [line.strip() for line in said.text.splitlines() if "fallback" in line.lower()]
    return StageOutput(
        format="gguf",
        precision=config.precision,
        primary=MODEL_FILE,
        inputs=parent.manifest.inputs,
        outputs=parent.manifest.outputs,
        model=parent.manifest.model | {k: types[k] for k in ("tensor_types", "bits_per_weight")},
        quantization={
            "tool": "llama_cpp.llama_model_quantize",
            "requested": config.model_dump(mode="json"),
            "precision": config.precision,
            # Read back from the file: what llama.cpp really stored, per tensor type.
            **types,
            "fallbacks": fallbacks,
        },
    )
