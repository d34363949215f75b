"""Reading GGUF files with gguf-py (no llama.cpp): a header check before llama.cpp's parser sees a file
(that parser has had memory-safety bugs on crafted files), and what a model holds (architecture, context,
per-tensor quantization types, tokenizer, bits per weight)."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path
from typing import Any

from edgepipe.errors import InputError, first_line
from edgepipe.tensors import TensorSpec

MAGIC = b"GGUF"
# A header asking for more than this is not a model but an attack on the parser (or a damaged file).
MAX_TENSORS = 1 << 16
MAX_KEYS = 1 << 16
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # name length, dims, one dim, type, offset


def check_header(path: Path) -> dict[str, int]:
    """Magic, version and counts of a GGUF file, checked against the file's size; InputError naming the
    file otherwise. Reads 24 bytes: nothing is allocated from the counts."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror})") from None
    if size == 0:
        raise InputError(f"{path}: empty file, not a GGUF model")
    if len(head) < 24 or head[:4] != MAGIC:
        raise InputError(f"{path}: not a GGUF model (no GGUF magic)")
    version, tensors, keys = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise InputError(f"{path}: GGUF version {version} is not one this reader knows (2, 3)")
    if tensors > MAX_TENSORS or keys > MAX_KEYS or tensors * _MIN_TENSOR_INFO_BYTES > size:
        raise InputError(f"{path}: the GGUF header claims {tensors} tensors and {keys} metadata keys: not a real model")
    return {"version": version, "tensors": tensors, "keys": keys}


def read(path: Path) -> Any:
    """The file parsed by gguf-py's reader, after the header check; InputError for a damaged file."""
    check_header(path)
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        for tensor in reader.tensors:
            end = tensor.data_offset + tensor.n_bytes
            if end > path.stat().st_size:
                raise ValueError(f"tensor {tensor.name} ends past the end of the file")
    except InputError:
        raise
    except Exception as e:  # struct.error, ValueError, IndexError from a cut or damaged file
        raise InputError(f"{path}: a truncated or corrupt GGUF model ({type(e).__name__}: {first_line(e)})") from None
    return reader


def _value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except Exception:  # an unusual field type: say nothing rather than guess
        return None


def summarize(path: Path) -> dict[str, Any]:
    """Architecture, context length, parameters, per-tensor types (counts and bytes), bits per weight and
    the tokenizer of a GGUF file."""
    reader = read(path)
    arch = _value(reader, "general.architecture")
    types: Counter[str] = Counter()
    type_bytes: Counter[str] = Counter()
    parameters = 0
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        types[kind] += 1
        type_bytes[kind] += int(tensor.n_bytes)
        parameters += int(tensor.n_elements)
    weight_bytes = sum(type_bytes.values())
    return {
        "architecture": arch,
        "name": _value(reader, "general.name"),
        "file_type": _value(reader, "general.file_type"),
        "context_length": _value(reader, f"{arch}.context_length") if arch else None,
        "parameters": parameters,
        "tensor_types": dict(types),
        "tensor_type_bytes": dict(type_bytes),
        "bits_per_weight": round(8 * weight_bytes / parameters, 3) if parameters else None,
        "tokenizer": _value(reader, "tokenizer.ggml.model"),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data)
        if "tokenizer.ggml.tokens" in reader.fields
        else None,
    }


def describe(path: Path) -> dict[str, Any]:
    """What a GGUF file holds, read with gguf-py (no llama.cpp): a language model has no tensor inputs in
    the file, so its inputs are the token ids and its output the logits, as llama.cpp runs it."""
    header = check_header(path)
    s = summarize(path)
    tensors = Counter(s["tensor_types"])
    weights = {k.lower(): {"count": tensors[k], "bytes": s["tensor_type_bytes"][k]} for k in tensors}
    vocab = s["vocab_size"]
    return {
        "format_version": f"GGUF v{header['version']}",
        "inputs": [
            TensorSpec(name="tokens", shape=["sequence"], dtype="int32", value_range=[0, vocab - 1] if vocab else None)
        ],
        "outputs": [TensorSpec(name="logits", shape=["sequence", vocab or "vocab"], dtype="float32")],
        "operators": {},
        "custom_operators": [],
        "weights": weights,
        "hybrid": None,
        "details": {
            k: s[k]
            for k in (
                "architecture",
                "name",
                "context_length",
                "parameters",
                "bits_per_weight",
                "tensor_types",
                "tokenizer",
                "vocab_size",
                "file_type",
            )
        },
    }
