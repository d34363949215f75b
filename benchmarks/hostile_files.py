"""The valid base files of the hostile-input corpus (``hostile_goals``): tiny, real files of each format,
made from scratch in milliseconds, and the format readers that decide whether a damaged copy is invalid."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------------
# The valid base files
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bases:
    onnx: Path  # multi_onnx: a, b [batch, 4] float32, sr int64 scalar
    custom: Path  # the same with a my.domain.MyOp node
    xml: Path  # the ONNX model as OpenVINO IR
    bin: Path
    tflite: Path  # y = x + w, x [1, 4] float32
    gguf: Path  # a one-layer llama with a byte-level tokenizer
    scratch: Path  # where the flip oracles write their candidates


def _tflite(path: Path) -> Path:
    """The smallest useful TFLite model, written with the LiteRT flatbuffer schema: y = x + w (x [1, 4])."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    def tensor(name: str, shape: list[int], buffer: int) -> Any:
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, fb.TensorType.FLOAT32, buffer
        return t

    model = fb.ModelT()
    model.version, model.description = 3, "edgepipe hostile-input base"
    buffers = [fb.BufferT() for _ in range(4)]  # buffer 0 is the empty sentinel
    buffers[1].data = list(np.arange(4, dtype=np.float32).tobytes())
    model.buffers = buffers
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.ADD
    code.version = 1
    model.operatorCodes = [code]
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.AddOptions, fb.AddOptionsT()
    graph = fb.SubGraphT()
    graph.name = "main"
    graph.tensors = [tensor("x", [1, 4], 2), tensor("w", [4], 1), tensor("y", [1, 4], 3)]
    graph.inputs, graph.outputs, graph.operators = [0], [2], [op]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: 256 tokens that spell any UTF-8 text."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: b for b in printable}
    extra = 256
    for b in range(256):
        if b not in chars:
            chars[b], extra = extra, extra + 1
    return [chr(chars[b]) for b in range(256)]


def _gguf(path: Path, dim: int = 32, ff: int = 64, heads: int = 2, kv_heads: int = 1, context: int = 64) -> Path:
    """A one-layer Llama GGUF with random weights and a byte-level BPE tokenizer (one merge): llama.cpp
    loads it, generates with it and scores a text on it."""
    import gguf

    rng = np.random.default_rng(0)
    tokens = [*_byte_tokens(), "\u0120t"]  # llama.cpp refuses a BPE without merges: one, "Ġ t"

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("hostile-base")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(context)
    w.add_embedding_length(dim)
    w.add_block_count(1)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(dim // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges(["\u0120 t"])
    w.add_add_bos_token(False)
    kv_dim = dim // heads * kv_heads
    w.add_tensor("token_embd.weight", weight(len(tokens), dim))
    w.add_tensor("output_norm.weight", np.ones(dim, np.float32))
    w.add_tensor("output.weight", weight(len(tokens), dim))
    for name, shape in [
        ("attn_q", (dim, dim)),
        ("attn_k", (kv_dim, dim)),
        ("attn_v", (kv_dim, dim)),
        ("attn_output", (dim, dim)),
        ("ffn_gate", (ff, dim)),
        ("ffn_up", (ff, dim)),
        ("ffn_down", (dim, ff)),
    ]:
        w.add_tensor(f"blk.0.{name}.weight", weight(*shape))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(dim, np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(dim, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def build_bases(folder: Path) -> Bases:
    """The valid files every damaged one is made from, in ``folder`` (created)."""
    import openvino as ov

    from edgepipe.benchmarks.sample_models import multi_onnx

    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = multi_onnx(folder / "model.onnx")
    xml = folder / "model.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    scratch = folder / "scratch"
    scratch.mkdir(exist_ok=True)
    return Bases(
        onnx=onnx_path,
        custom=multi_onnx(folder / "custom.onnx", custom=True),
        xml=xml,
        bin=xml.with_suffix(".bin"),
        tflite=_tflite(folder / "model.tflite"),
        gguf=_gguf(folder / "model.gguf"),
        scratch=scratch,
    )


# --------------------------------------------------------------------------------------------------
# Flips that give an invalid file: each candidate tried against the format's own reader
# --------------------------------------------------------------------------------------------------


def onnx_reads(data: bytes, bases: Bases) -> bool:
    import onnx

    try:
        onnx.checker.check_model(onnx.load_model_from_string(data), full_check=True)
    except Exception:
        return False
    return True


def ir_reads(data: bytes, bases: Bases) -> bool:
    import openvino as ov

    xml = bases.scratch / "candidate.xml"
    xml.write_bytes(data)
    shutil.copyfile(bases.bin, xml.with_suffix(".bin"))
    try:
        ov.Core().read_model(str(xml))
    except Exception:
        return False
    return True


def tflite_reads(data: bytes, bases: Bases) -> bool:
    from ai_edge_litert.interpreter import Interpreter

    try:  # the interpreter verifies the flatbuffer before it reads anything from it
        Interpreter(model_content=data).allocate_tensors()
    except Exception:
        return False
    return True


def gguf_reads(data: bytes, bases: Bases) -> bool:
    from gguf import GGUFReader

    path = bases.scratch / "candidate.gguf"
    path.write_bytes(data)
    try:
        reader = GGUFReader(str(path))
        return all(t.data_offset + t.n_bytes <= len(data) for t in reader.tensors) and bool(reader.tensors)
    except Exception:
        return False


def structure_end(fmt: str, data: bytes, bases: Bases) -> int:
    """Where a file's structure ends: a GGUF's tensor data (nearly all of it) is free bytes, where any
    flip leaves a valid file, so its middle is the middle of its header, metadata and tensor infos."""
    if fmt != "gguf":
        return len(data)
    from gguf import GGUFReader

    path = bases.scratch / "whole.gguf"
    path.write_bytes(data)
    return int(GGUFReader(str(path)).data_offset)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """The readers' native libraries log refusals on file descriptor 2 (OpenVINO's TensorFlow frontend):
    not the script's business."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _flip(data: bytes, at: int, width: int = 4) -> bytes:
    out = bytearray(data)
    for i in range(at, min(at + width, len(out))):
        out[i] ^= 0xFF
    return bytes(out)


def flipped(fmt: str, data: bytes, where: str, bases: Bases) -> bytes:
    """``data`` with four bytes inverted at the first candidate position that makes the format's own reader
    refuse the file (flipped weights are still a valid model). Middle: n/2, n/3, 2n/3, then further
    points, n the size of the file (of its structure for a GGUF); header: the format's own header fields."""
    reads = {"onnx": onnx_reads, "ir": ir_reads, "tflite": tflite_reads, "gguf": gguf_reads}[fmt]
    if where == "middle":
        n = structure_end(fmt, data, bases)
        candidates = [n // 2, n // 3, 2 * n // 3, *(n * k // 16 for k in range(4, 13))]
    else:
        candidates = {
            "onnx": [0],  # the first field's tag: an invalid wire type
            "ir": [data.find(b"<net") + 1, 1],  # the root element's tag
            "tflite": [0, 4],  # the root table offset, then the TFL3 identifier
            "gguf": [24, 4],  # the first metadata key's length, then the version
        }[fmt]
    for at in candidates:
        damaged = _flip(data, at)
        with native_stderr_silenced():
            refused = not reads(damaged, bases)
        if refused:
            return damaged
    raise RuntimeError(f"{fmt}: no candidate flip ({where}) gives a file its reader refuses: {candidates}")
