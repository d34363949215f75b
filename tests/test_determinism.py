"""The same recipe and seed give the same bytes: every artifact rebuilt in a fresh store has the sha256 of
the first build (training, each exporter, each quantizer). One exception, within one process only:
OpenVINO names the layers it makes from a process-wide counter (``Reshape_15``, then ``Reshape_2812``), so
an IR converted twice in one process differs in those names; its weights (.bin) are identical, and two
fresh processes write identical files (what two runs do)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def _same(a, b) -> bool:
    """Byte-identical, or for OpenVINO IR identical but for its layers' generated names."""
    if a.sha256 == b.sha256:
        return True
    if a.manifest.format != "openvino":
        return False
    xml = [re.sub(r'(<layer id="\d+") name="[^"]*"', r"\1", (x.path / "model.xml").read_text()) for x in (a, b)]
    return xml[0] == xml[1] and (a.path / "model.bin").read_bytes() == (b.path / "model.bin").read_bytes()


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
    differ = {k: a.path.name for k, a in again.items() if not _same(a, exported[k])}
    assert not differ, differ


def test_every_language_model_export_is_byte_identical(lm, tmp_path):
    from conftest import LM_RECIPE
    from edgepipe.recipe import parse_recipe

    _, model, artifacts, ctx = lm
    again = _rebuild(parse_recipe(LM_RECIPE, "lm-test.yaml"), ctx, model, tmp_path)
    assert set(again) == set(artifacts)
    differ = {k: a.path.name for k, a in again.items() if not _same(a, artifacts[k])}
    assert not differ, differ
