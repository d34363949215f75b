"""Shared fixtures: a small trained CNN on digits, as an edgepipe torch artifact (session scope)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

TINY_RECIPE = {
    "name": "tiny",
    "seed": 0,
    "task": {"image_size": 16, "test_size": 200, "calibration_size": 100},
    "model": {"family": "cnn", "params": {"channels": [32, 64], "convs_per_block": 1}},
    "train": {"epochs": 3, "batch_size": 64, "learning_rate": 0.01},
    "targets": [
        {"format": "onnx", "quantize": [{"precision": "int8"}]},
        {"format": "openvino", "quantize": [{"precision": "int8"}]},
    ],
    "benchmark": {"threads": 1, "warmup": 2, "runs": 20, "max_seconds": 5},
}


@pytest.fixture(scope="session")
def tiny_recipe():
    from edgepipe.recipe import parse_recipe

    return parse_recipe(TINY_RECIPE, "tiny.yaml")


@pytest.fixture(scope="session")
def tiny_task(tiny_recipe):
    from edgepipe.tasks import build_task

    return build_task(tiny_recipe.task, tiny_recipe.seed)


@pytest.fixture(scope="session")
def store_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def torch_artifact(tiny_recipe, tiny_task, store_root):
    from edgepipe.artifact import ArtifactStore
    from edgepipe.pipeline import train_stage

    return train_stage(tiny_recipe, tiny_task, ArtifactStore(store_root), log=lambda _: None, force=False)


@pytest.fixture(scope="session")
def torch_module(torch_artifact):
    from edgepipe.models import load_torch_model

    return load_torch_model(torch_artifact.manifest.model, torch_artifact.model_file)


@pytest.fixture(scope="session")
def exported(tiny_recipe, tiny_task, torch_artifact, store_root):
    """{(format, precision): artifact} for every target of the tiny recipe."""
    from edgepipe.artifact import ArtifactStore
    from edgepipe.pipeline import export_stages

    arts = export_stages(
        tiny_recipe, tiny_task, torch_artifact, ArtifactStore(store_root), log=lambda _: None, force=False
    )
    return {(a.manifest.format, a.manifest.precision): a for a in arts}
