"""The same recipe and seed give the same bytes: every artifact rebuilt in a fresh store has the sha256 of
the first build (training, each exporter, each quantizer), here in one process, where OpenVINO's
process-wide counters for generated names (``Model44``, ``Reshape_2812``) would show if they reached the
files (export/openvino.py renumbers them in graph order)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def _rebuild(recipe, ctx, model, tmp_path):
    from edgepipe.chain import build_targets
    from edgepipe.store import ArtifactStore

    made = build_targets(recipe, ctx, model, ArtifactStore(tmp_path / "again"), force=False)
    return {(a.manifest.format, a.manifest.precision): a for a in made.models}


def test_training_and_every_classifier_export_are_byte_identical(tiny_recipe, stage_context, torch_artifact,
                                                                 exported, tmp_path):  # fmt: skip
    from edgepipe.chain import build_model
    from edgepipe.store import ArtifactStore

    trained = build_model(tiny_recipe, stage_context, ArtifactStore(tmp_path / "model"), force=False)
    assert trained.sha256 == torch_artifact.sha256
    again = _rebuild(tiny_recipe, stage_context, torch_artifact, tmp_path)
    assert set(again) == set(exported)
    differ = {k: a.path.name for k, a in again.items() if a.sha256 != exported[k].sha256}
    assert not differ, differ


def test_every_language_model_export_is_byte_identical(lm, tmp_path):
    from conftest import LM_RECIPE
    from edgepipe.recipe import parse_recipe

    _, model, artifacts, ctx = lm
    again = _rebuild(parse_recipe(LM_RECIPE, "lm-test.yaml"), ctx, model, tmp_path)
    assert set(again) == set(artifacts)
    differ = {k: a.path.name for k, a in again.items() if a.sha256 != artifacts[k].sha256}
    assert not differ, differ
