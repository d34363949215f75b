"""GGUF: the file gguf-py writes is the torch model under llama.cpp (logits, tokenizer, generation),
llama.cpp's quantizer reports what it really stored, and bad files get one line, never a crash."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest

from edgepipe.benchmarks.generation import recompute_generate
from edgepipe.benchmarks.harness import Evaluation, evaluate
from edgepipe.errors import InputError
from edgepipe.runtimes import get_runtime

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def held_out(lm):
    """The held-out windows, their torch reference logits, and the preprocessor of the test model."""
    task, model, _, ctx = lm
    pre = ctx.preprocessor(model)
    data = task.eval_set(pre)
    with get_runtime("torch").load(model.model_file, threads=1) as torch_session:
        reference = [torch_session.run(b)[0] for b in data.batches]
    return data, reference, pre


@pytest.fixture(scope="module")
def f32(lm):
    return lm[2][("gguf", "fp32")]


@pytest.fixture(scope="module")
def llama(f32):
    with get_runtime("llama.cpp").load(f32.model_file, threads=1) as session:
        yield session


def test_gguf_f32_logits_match_torch(lm, llama, held_out):
    data, reference, _ = held_out
    metrics, parity, breakdown, nonfinite = evaluate(llama, Evaluation(type(lm[0]), data, reference))
    assert nonfinite == 0
    assert parity is not None and parity["max_abs_diff"] <= 1e-4  # F32 weights, F32 KV cache
    assert parity["top1_agreement"] == 1.0 and parity["kld"] < 1e-8
    assert set(breakdown) == {"length 16", "length 64"}
    assert 1 < metrics["perplexity"] < 512  # trained: better than uniform over the vocabulary


def test_llama_cpp_tokenizes_held_out_text_as_we_do_and_back_exactly(lm, llama, held_out):
    task = lm[0]
    tokenizer = held_out[2].tokenizer
    text = "\n\n".join(t for _, t in task.documents["test"])[:20000]
    ours = tokenizer.encode(text)
    assert llama.tokenize(text) == ours
    assert llama.detokenize(ours) == text
    assert llama.vocab_size == tokenizer.vocab_size


def test_kv_cache_generation_equals_recomputing_the_torch_model(lm, llama, held_out):
    prompt = lm[0].generation_prompt(held_out[2], 24)
    cached = llama.generate(prompt, 16)
    assert len(cached.token_ms) == 16 and cached.prompt_tokens == 24 and cached.prompt_ms > 0
    with get_runtime("torch").load(lm[1].model_file, threads=1) as torch_session:
        recomputed = recompute_generate(torch_session, prompt, 16)
    assert cached.tokens == recomputed.tokens
    with pytest.raises(InputError, match="exceed the context"):
        llama.generate(prompt, llama.context_length)


def test_session_checks_its_inputs(llama):
    ids = np.zeros((2, 8), dtype=np.int32)
    (logits,) = llama.run({"input_ids": ids})
    assert logits.shape == (2, 8, llama.vocab_size) and logits.dtype == np.float32
    with pytest.raises(InputError, match="expected shape"):
        llama.check_feeds({"input_ids": ids[0]})
    with pytest.raises(InputError, match="longer than the context"):
        llama.run({"input_ids": np.zeros((1, llama.context_length + 1), dtype=np.int32)})


def test_quantized_manifests_say_what_llama_cpp_stored(lm, f32):
    summary = f32.manifest.model
    assert summary["exporter"] == "gguf-py" and set(summary["tensor_types"]) == {"F32"}
    q8 = lm[2][("gguf", "q8_0")].manifest
    assert q8.quantization["requested"]["type"] == "Q8_0" and q8.name == "gguf-q8_0"
    # Every matrix in Q8_0 (64-wide rows are multiples of 32); norms stay F32.
    assert set(q8.quantization["tensor_types"]) == {"Q8_0", "F32"}
    assert 8 < q8.quantization["bits_per_weight"] < 9.5
    assert q8.size_bytes < 0.35 * f32.manifest.size_bytes
    # K-quants need rows of 256: on this 64-wide model llama.cpp stores other types, and says so.
    k = lm[2][("gguf", "q4_k_m")].manifest.quantization
    assert "Q4_K" not in k["tensor_types"] and k["fallbacks"]
    assert k["requested"]["type"] == "Q4_K_M"


def test_an_unknown_quant_type_is_a_recipe_error():
    from edgepipe.recipe import parse_recipe
    from tests.conftest import LM_RECIPE

    bad = {**LM_RECIPE, "targets": [{"format": "gguf", "quantize": [{"type": "Q9_X"}]}]}
    with pytest.raises(InputError, match=r"targets\.0\.quantize\.0\.type: .*unknown llama.cpp type 'Q9_X'"):
        parse_recipe(bad, "r.yaml")
    cnn = {**LM_RECIPE, "task": {"kind": "classification"}, "source": {"kind": "train", "family": "cnn"}}
    with pytest.raises(InputError, match=r"targets\.0\.format: gguf holds language-modeling models, not class"):
        parse_recipe(cnn, "r.yaml")


def _writer(path, arch: str = "llama", tokenizer: bool = True):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(16)
    if tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(["a", "b"])
        w.add_token_types([1, 1])
        w.add_token_merges([])
    w.add_tensor("token_embd.weight", np.zeros((2, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def bad_files(tmp_path, f32):
    data = f32.model_file.read_bytes()
    (tmp_path / "truncated.gguf").write_bytes(data[: len(data) // 2])
    (tmp_path / "absurd.gguf").write_bytes(data[:8] + struct.pack("<QQ", 1 << 40, 3) + data[24:])
    (tmp_path / "notgguf.gguf").write_bytes(b"\x00" * 64)
    _writer(tmp_path / "notokenizer.gguf", tokenizer=False)
    _writer(tmp_path / "unknownarch.gguf", arch="nosucharch")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    return tmp_path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("truncated.gguf", "truncated.gguf: a truncated or corrupt GGUF model"),
        ("absurd.gguf", "claims 1099511627776 tensors"),
        ("notgguf.gguf", "not a GGUF model"),
        ("notokenizer.gguf", "notokenizer.gguf: the GGUF has no tokenizer"),
        # llama.cpp's own reason, from its verbose log
        ("unknownarch.gguf", "unknownarch.gguf: llama.cpp cannot load this model: .*nosucharch"),
    ],
)
def test_bad_gguf_files_get_one_line(cli_run, bad_files, name, expected):
    code, err = cli_run(["bench", str(bad_files / name), "--runs", "5"])
    assert code == 2
    assert err.startswith("edgepipe: error: ") and re.search(expected, err), err


@pytest.mark.parametrize(
    ("text", "expected"), [("empty.txt", "empty.txt: the file is empty"), ("latin1.txt", "latin1.txt: not UTF-8")]
)
def test_bad_text_files_get_one_line(cli_run, bad_files, f32, text, expected):
    code, err = cli_run(["bench", str(f32.model_file), "--text", str(bad_files / text)])
    assert code == 2 and f"--text: {bad_files / expected}" in err, err


def test_bench_a_gguf_with_a_text(capsys, f32, lm, tmp_path):
    from edgepipe.cli import main

    text = tmp_path / "held-out.txt"
    text.write_text("\n\n".join(t for _, t in lm[0].documents["test"])[:6000])
    assert main(["bench", str(f32.model_file), "--text", str(text), "--runs", "5", "--json", "--threads", "1"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["session"]["architecture"] == "llama" and set(row["session"]["tensor_types"]) == {"F32"}
    assert 1 < row["metrics"]["perplexity"] < 512
    gen = row["generation"]
    # a synthetic prompt and the new tokens fit the 64-token context: 32 new after 32
    assert gen["method"] == "kv-cache" and gen["prompt_tokens"] == 32 and gen["token_ms"]["n"] == 5 * 32
    assert gen["generation_tokens_per_s"] > 0 and row["artifact"]["parameters"] == f32.manifest.model["parameters"]
    assert main(["bench", str(f32.model_file), "--runs", "5", "--n-gpu-layers", "0"]) == 0
    out = capsys.readouterr().out
    assert "gen tok/s" in out and "llama, " in out and "tensor types: F32" in out


def test_n_gpu_layers_only_for_llama_cpp(cli_run, lm):
    code, err = cli_run(["bench", str(lm[1].model_file), "--n-gpu-layers", "1"])
    assert code == 2 and "--n-gpu-layers: only the llama.cpp runtime" in err


def test_perplexity_on_text_needs_a_language_model(cli_run, tmp_path, lm):
    text = tmp_path / "t.txt"
    text.write_text("some text")
    code, err = cli_run(["bench", str(lm[1].model_file), "--text", str(text)])
    assert code == 2 and "--text: perplexity needs a language model" in err
