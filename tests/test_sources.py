"""Model sources: a Hugging Face folder on disk and a user's own module file become torch artifacts that
rebuild on their own; what is wrong with a folder, a file or weights is one line naming it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgepipe.chain import build_source
from edgepipe.errors import InputError
from edgepipe.models import load_torch_model
from edgepipe.stage import StageContext
from edgepipe.store import ArtifactStore
from edgepipe.tasks import build_task, task_class

MODULE_CODE = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, hidden: int = 16, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image)
"""


@pytest.fixture(scope="module")
def digits_ctx():
    config = task_class("classification").Config.model_validate({"image_size": 8, "test_size": 100})
    return StageContext(build_task(config, 0), 0)


def _source(kind: str, **fields):
    from edgepipe.stage import SOURCES

    return SOURCES[kind].config_class().model_validate({"kind": kind, **fields})


def _module_files(folder: Path, hidden: int = 16) -> Path:
    (folder / "tiny.py").write_text(MODULE_CODE)
    namespace: dict = {}
    exec(compile(MODULE_CODE, "tiny.py", "exec"), namespace)  # the test's own code, to make weights for it
    torch.manual_seed(3)
    from edgepipe.models import save_weights

    save_weights(namespace["Tiny"](hidden=hidden), folder / "tiny.safetensors")
    return folder


def test_a_users_module_file_with_weights_becomes_an_artifact(tmp_path, digits_ctx):
    _module_files(tmp_path)
    ctx = StageContext(digits_ctx.task, 0, base_dir=tmp_path)
    config = _source("module", file="tiny.py", **{"class": "Tiny"}, kwargs={"hidden": 16}, weights="tiny.safetensors")
    art = build_source(config, ctx, ArtifactStore(tmp_path / "store"), force=False)
    assert art.manifest.model["builder"] == "module" and (art.path / "module.py").read_text() == MODULE_CODE
    model = load_torch_model(art)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "tiny.safetensors"))
    assert torch.equal(model.state_dict()["body.1.weight"], saved["body.1.weight"])
    # The cache keys on the files' content, not their path: the same files elsewhere are a cache hit.
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("store", "moved"))
    moved_ctx = StageContext(digits_ctx.task, 0, base_dir=moved)
    again = build_source(config, moved_ctx, ArtifactStore(tmp_path / "store"), False)
    assert again.path == art.path


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"file": "missing.py", "class": "Tiny"}, "source.file: "),
        ({"file": "tiny.py", "class": "Huge"}, "no class named 'Huge' (source.class)"),
        ({"file": "tiny.py", "class": "Tiny", "kwargs": {"depth": 3}}, "source.kwargs: Tiny(depth) failed"),
        (
            {"file": "tiny.py", "class": "Tiny", "kwargs": {"hidden": 32}, "weights": "tiny.safetensors"},
            "weights do not fit",
        ),
        ({"file": "tiny.py", "class": "Tiny", "kwargs": {"classes": 7}}, "output 'logits' has shape [2, 7]"),
    ],
)
def test_what_is_wrong_with_a_module_source_is_named(tmp_path, digits_ctx, fields, needle):
    _module_files(tmp_path)
    ctx = StageContext(digits_ctx.task, 0, base_dir=tmp_path)
    with pytest.raises(InputError) as info:
        build_source(_source("module", **fields), ctx, ArtifactStore(tmp_path / "store"), force=False)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not list((tmp_path / "store").glob(".tmp-*"))


LM_CODE = """
import torch
from torch import nn


class Bigram(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, input_ids):
        return self.table(input_ids)
"""


def test_a_users_language_model_brings_its_tokenizer(tmp_path):
    config = task_class("language-modeling").Config.model_validate(
        {"sources": ["docs"], "context_length": 16, "sequence_lengths": [8], "eval_windows": 2}
    )
    ctx = StageContext(build_task(config, 0), 0, base_dir=tmp_path)
    tokenizer = ctx.task.train_tokenizer(300)
    tokenizer.save(tmp_path / "tokenizer.json")
    (tmp_path / "bigram.py").write_text(LM_CODE)
    source = _source(
        "module", file="bigram.py", kwargs={"vocab": 300}, tokenizer="tokenizer.json", **{"class": "Bigram"}
    )
    art = build_source(source, ctx, ArtifactStore(tmp_path / "store"), force=False)
    assert art.manifest.preprocessing["tokenizer"]["file"] == "tokenizer.json"
    assert art.manifest.inputs[0].value_range == [0, 299] and art.manifest.outputs[0].shape[-1] == 300
    assert ctx.preprocessor(art).tokenizer.sha256 == tokenizer.sha256


@pytest.fixture(scope="module")
def embedding_ctx():
    config = task_class("embedding").Config.model_validate({"sequence_lengths": [8, 16], "eval_per_length": 4})
    return StageContext(build_task(config, 0), 0)


@pytest.fixture(scope="module")
def minilm_artifact(minilm_folder, embedding_ctx, tmp_path_factory):
    store = ArtifactStore(tmp_path_factory.mktemp("hf"))
    return build_source(_source("huggingface", path=str(minilm_folder)), embedding_ctx, store, force=False)


@pytest.mark.slow
def test_a_hugging_face_folder_becomes_an_artifact_with_its_tokenizer(minilm_artifact, minilm_folder):
    import transformers

    m = minilm_artifact.manifest
    assert [s.name for s in m.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert m.inputs[0].value_range == [0, 30521] and m.outputs[0].shape == ["batch", "sequence", 384]
    assert m.preprocessing["max_length"] == 512 and m.preprocessing["tokenizer"]["kind"] == "wordpiece"
    assert {"tokenizer.json", "vocab.txt"} <= set(m.preprocessing["files"])
    assert (minilm_artifact.path / "config.json").is_file()
    assert m.preprocessing["pooling"]["mode"] == "mean" and m.preprocessing["pooling"]["normalize"] is True
    ids = torch.tensor([[101, 7592, 2088, 102]])
    ones, zeros = torch.ones_like(ids), torch.zeros_like(ids)
    with torch.inference_mode():
        ours = load_torch_model(minilm_artifact)(ids, ones, zeros)
        theirs = transformers.AutoModel.from_pretrained(str(minilm_folder), local_files_only=True)(ids, ones, zeros)
    np.testing.assert_allclose(ours.numpy(), theirs.last_hidden_state.numpy(), atol=1e-5)


@pytest.mark.slow
def test_a_sequence_longer_than_the_model_takes_is_refused(minilm_artifact):
    config = task_class("embedding").Config.model_validate({"sequence_lengths": [16, 1024]})
    ctx = StageContext(build_task(config, 0), 0)
    with pytest.raises(InputError, match=r"task.sequence_lengths: 1024 is longer than the model's maximum 512"):
        ctx.task.eval_set(ctx.preprocessor(minilm_artifact))


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d, src: None, "no such model folder"),
        (lambda d, src: d.mkdir(), "not a Hugging Face model folder (no config.json)"),
        (lambda d, src: (d.mkdir(), shutil.copy(src / "config.json", d)), "no model.safetensors"),
        (
            lambda d, src: (d.mkdir(), shutil.copy(src / "config.json", d), shutil.copy(src / "model.safetensors", d)),
            "the model has no tokenizer",
        ),
    ],
    ids=["missing", "not-a-model", "no-weights", "no-tokenizer"],
)
def test_what_is_wrong_with_a_hugging_face_folder_is_named(tmp_path, minilm_folder, embedding_ctx, make, needle):
    folder = tmp_path / "model"
    make(folder, minilm_folder)
    with pytest.raises(InputError) as info:
        build_source(_source("huggingface", path=str(folder)), embedding_ctx, ArtifactStore(tmp_path / "s"), False)
    assert needle in str(info.value) and str(folder) in str(info.value)


def test_a_package_that_is_not_installed_is_named():
    from edgepipe.models.huggingface import resolve_folder

    with pytest.raises(InputError, match="package 'no_such_models' is not installed"):
        resolve_folder("package:no_such_models/model", Path())
