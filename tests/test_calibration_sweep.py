"""A calibration sweep: quality against calibration size and method over seeds, on the tuning data, and the
smallest stable set it recommends (``edgepipe.compress.calibration_sweep``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from edgepipe.compress.calibration_sweep import default_tolerance, recommend, stable_sizes, sweep_notes
from edgepipe.errors import InputError
from edgepipe.stage import StageContext


def _row(method: str, samples: int, drops: list[float]) -> dict[str, Any]:
    lo, hi = min(drops), max(drops)
    return {
        "method": method,
        "samples": samples,
        "mean_drop": sum(drops) / len(drops),
        "min_drop": lo,
        "max_drop": hi,
        "spread": hi - lo,
    }


def test_the_smallest_stable_size_of_each_method_and_the_best_of_them() -> None:
    summary = [
        _row("minmax", 8, [0.0, 2.0, 1.0]),  # spread 2: unstable
        _row("minmax", 32, [0.2, 0.4, 0.3]),  # stable: spread 0.2, mean 0.3 vs 0.1 at 128
        _row("minmax", 128, [0.0, 0.2, 0.1]),
        _row("entropy", 8, [1.4, 1.5, 1.3]),  # spread fine, but 1.2 from the largest size's mean
        _row("entropy", 32, [1.0, 1.2, 1.1]),  # a fluke-free but worse size: 0.9 from the largest
        _row("entropy", 128, [0.2, 0.3, 0.1]),
    ]
    assert stable_sizes(summary, 0.5) == {"minmax": 32, "entropy": 128}
    rec = recommend(summary, 0.5, "accuracy points")
    assert rec is not None
    assert (rec["method"], rec["samples"], rec["stable"]) == ("entropy", 128, True)  # mean 0.2 beats 0.3
    assert rec["per_method"] == {"minmax": 32, "entropy": 128}
    assert "entropy with 128 samples is the smallest stable set: mean drop 0.20" in rec["why"]
    assert "within 0.50 accuracy points (it is the largest measured)" in rec["why"]
    assert rec["why"].endswith("; the others' mean drops: minmax 0.30.")
    # a looser tolerance makes smaller sizes stable, and the gap to the largest size is measured both ways
    assert stable_sizes(summary, 2.0) == {"minmax": 8, "entropy": 8}


def test_ties_go_to_fewer_samples_then_to_the_method_swept_first() -> None:
    summary = [
        _row("minmax", 32, [0.5, 0.5]),
        _row("minmax", 128, [0.5, 0.5]),
        _row("percentile", 8, [0.5, 0.5]),
        _row("percentile", 128, [0.5, 0.5]),
    ]
    rec = recommend(summary, 0.1)
    assert rec is not None and (rec["method"], rec["samples"]) == ("percentile", 8)
    assert "tied with minmax (32): fewer samples first" in rec["why"]
    same = [_row("minmax", 8, [0.5]), _row("percentile", 8, [0.5])]
    rec = recommend(same, 0.1)
    assert rec is not None and rec["method"] == "minmax"
    # float noise (100 * (a - b)) is no difference
    noisy = [_row("minmax", 32, [1.0000000000000009]), _row("percentile", 8, [1.0])]
    rec = recommend(noisy, 0.1)
    assert rec is not None and rec["samples"] == 8


def test_when_nothing_is_stable_the_largest_size_of_the_best_method_is_recommended_and_said_so() -> None:
    summary = [
        _row("minmax", 8, [0.0, 3.0]),
        _row("minmax", 32, [0.0, 2.0]),
        _row("percentile", 8, [0.0, 4.0]),
        _row("percentile", 32, [0.5, 1.5]),
    ]
    rec = recommend(summary, 0.5, "accuracy points")
    assert rec is not None
    assert (rec["method"], rec["samples"], rec["stable"]) == ("minmax", 32, False)
    assert rec["per_method"] == {"minmax": None, "percentile": None}
    assert rec["why"].startswith("No size was stable within 0.50 accuracy points")
    assert recommend([], 0.5) is None
    unmeasured = [{"method": "minmax", "samples": 8, "mean_drop": None, "spread": None}]
    assert recommend(unmeasured, 0.5) is None


def test_default_tolerances_are_in_each_kinds_drop_unit() -> None:
    assert default_tolerance("classification") == 0.5
    assert default_tolerance("embedding") == 0.002
    assert default_tolerance("language-modeling") == default_tolerance("language_modeling") == 0.01
    assert default_tolerance("from-the-future", 40.0) == pytest.approx(0.4)
    assert default_tolerance("from-the-future") == 0.01


@pytest.fixture(scope="module")
def fp32(tiny_recipe, stage_context, torch_artifact, store):
    """The tiny CNN's ONNX FP32 artifact: the ``exported`` fixture's, made without the other formats (the
    same store, so whichever of the two runs first makes it for the other)."""
    from edgepipe.chain import build_targets

    recipe = tiny_recipe.model_copy(update={"targets": [t for t in tiny_recipe.targets if t.format == "onnx"]})
    made = build_targets(recipe, stage_context, torch_artifact, store, force=False).models
    return next(a for a in made if (a.manifest.format, a.manifest.precision) == ("onnx", "fp32"))


def _ctx(stage_context: StageContext, lines: list[str]) -> StageContext:
    """A fresh context on the tiny task whose log lines go to ``lines``."""
    return StageContext(stage_context.task, stage_context.seed, log=lines.append)


def test_a_sweep_on_the_real_onnx_quantizer_is_recorded_in_the_manifest(fp32, stage_context, tmp_path) -> None:
    from edgepipe.export import onnx as onnx_backend
    from edgepipe.export.onnx import OrtStaticQuant
    from edgepipe.search import quantize_to_bar

    lines: list[str] = []
    ctx = _ctx(stage_context, lines)
    config = OrtStaticQuant(calibration_sweep={"samples": [8, 32], "methods": ["minmax", "percentile"], "seeds": 2})
    shipped = quantize_to_bar(onnx_backend.quantize, {"model": fp32}, config, tmp_path, ctx)
    sweep = shipped.quantization["calibration_sweep"]
    assert json.loads(json.dumps(sweep)) == sweep  # it goes into the manifest as it is
    assert (sweep["metric"], sweep["drop_unit"], sweep["tolerance"]) == ("accuracy", "accuracy points", 0.5)
    assert sweep["seeds"] == [ctx.seed, ctx.seed + 1] and sweep["skipped"] == []
    grid = [(p["method"], p["samples"], p["seed"]) for p in sweep["points"]]
    assert grid == [(m, n, s) for m in ("minmax", "percentile") for n in (8, 32) for s in sweep["seeds"]]
    for p in sweep["points"]:
        assert 0.0 <= p["metric"] <= 1.0 and p["seconds"] >= 0
        assert p["drop"] == pytest.approx(100 * (sweep["reference"] - p["metric"]), abs=1e-6)
    assert [(r["method"], r["samples"]) for r in sweep["summary"]] == [(m, n) for m in ("minmax", "percentile")
                                                                       for n in (8, 32)]  # fmt: skip
    for r in sweep["summary"]:
        drops = [p["drop"] for p in sweep["points"] if (p["method"], p["samples"]) == (r["method"], r["samples"])]
        assert r["mean_drop"] == pytest.approx(sum(drops) / 2) and r["spread"] == pytest.approx(max(drops) - min(drops))
    assert sweep["recommended"] == recommend(sweep["summary"], 0.5, "accuracy points")
    assert sweep["recommended"]["method"] in ("minmax", "percentile")
    # the sweep leaves only the shipped files, made with the config as requested
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert shipped.quantization["calibration"]["seed"] is None
    assert len([line for line in lines if line.startswith("[sweep] ")]) == 8
    notes = sweep_notes("onnx-int8-static-sweep", sweep)
    assert notes[0].startswith("onnx-int8-static-sweep: calibration sweep (accuracy points, 2 seeds): recommended ")


def test_a_sweep_point_is_reproducible_with_its_seed(fp32, stage_context, tmp_path) -> None:
    """The same seed draws the same subset (byte-identical model files); another seed another subset. The
    recorded metric is the point's file scored again."""
    from edgepipe.compress.calibration_sweep import run_sweep
    from edgepipe.export import onnx as onnx_backend
    from edgepipe.export.onnx import OrtStaticQuant
    from edgepipe.search import score

    ctx = _ctx(stage_context, [])
    config = OrtStaticQuant(calibration_sweep={"samples": [8], "methods": ["minmax"], "seeds": 2})
    made = []
    for name, seed in (("a", ctx.seed), ("b", ctx.seed), ("c", ctx.seed + 1)):
        (tmp_path / name).mkdir()
        out = onnx_backend.quantize({"model": fp32}, config.sweep_point("minmax", 8, seed), tmp_path / name, ctx)
        assert out.quantization["calibration"] == {"split": "calibration", "samples": 8, "method": "minmax",
                                                   "seed": seed}  # fmt: skip
        made.append((tmp_path / name / out.primary).read_bytes())
    assert made[0] == made[1] and made[0] != made[2]
    (tmp_path / "sweep").mkdir()
    sweep = run_sweep(onnx_backend.quantize, {"model": fp32}, config, tmp_path / "sweep", ctx)
    scoring = dataclasses.replace(ctx, gates=type(ctx.task).Gates())  # score checks some gates too
    again = score(tmp_path / "a" / "model.onnx", "onnx", "int8", scoring, fp32)["metrics"]["accuracy"]
    assert sweep["points"][0]["seed"] == ctx.seed and sweep["points"][0]["metric"] == again
    assert list((tmp_path / "sweep").iterdir()) == []


def test_sizes_above_the_calibration_split_are_skipped_and_listed(fp32, stage_context, tmp_path) -> None:
    from edgepipe.compress.calibration_sweep import run_sweep
    from edgepipe.export import onnx as onnx_backend
    from edgepipe.export.onnx import OrtStaticQuant

    ctx = _ctx(stage_context, [])
    split = len(ctx.calibration_feeds(fp32, 1))
    config = OrtStaticQuant(calibration_sweep={"samples": [8, split + 1, 4096], "methods": ["minmax"], "seeds": 1})
    sweep = run_sweep(onnx_backend.quantize, {"model": fp32}, config, tmp_path, ctx)
    assert [p["samples"] for p in sweep["points"]] == [8] and sweep["calibration_split"] == split
    assert sweep["skipped"] == [{"samples": n, "why": f"the calibration split has {split}"} for n in (split + 1, 4096)]
    assert sweep["recommended"]["samples"] == 8
    notes = sweep_notes("x", sweep)
    assert notes[1] == f"x: calibration sweep skipped {split + 1}, 4096 samples (the calibration split has {split})"


def test_an_unknown_method_is_an_input_error_naming_the_field(fp32, stage_context, tmp_path) -> None:
    from edgepipe.export import onnx as onnx_backend
    from edgepipe.export.onnx import OrtStaticQuant
    from edgepipe.search import quantize_to_bar

    config = OrtStaticQuant(calibration_sweep={"methods": ["minmax", "kl"]})
    with pytest.raises(InputError, match=r"^calibration_sweep\.methods: unknown calibration method 'kl' for onnx "
                                         r"static \(known: minmax, entropy, percentile\)$"):  # fmt: skip
        quantize_to_bar(onnx_backend.quantize, {"model": fp32}, config, tmp_path, stage_context)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_point_is_recorded_and_its_folder_removed(fp32, stage_context, tmp_path) -> None:
    """One method failing does not lose the others; when every point fails, the tool's error is the step's."""
    from edgepipe.compress.calibration_sweep import run_sweep
    from edgepipe.export import onnx as onnx_backend
    from edgepipe.export.onnx import OrtStaticQuant

    def fragile(parents: Any, config: OrtStaticQuant, out_dir: Path, ctx: StageContext) -> Any:
        (out_dir / "partial.onnx").write_bytes(b"")
        if config.calibrate_method == "percentile":
            raise RuntimeError("histogram exploded")
        return onnx_backend.quantize(parents, config, out_dir, ctx)

    ctx = _ctx(stage_context, [])
    config = OrtStaticQuant(calibration_sweep={"samples": [8], "methods": ["minmax", "percentile"], "seeds": 1})
    sweep = run_sweep(fragile, {"model": fp32}, config, tmp_path, ctx)
    failed = sweep["points"][1]
    assert failed["error"] == "RuntimeError: histogram exploded" and "drop" not in failed
    assert [r["method"] for r in sweep["summary"] if r["mean_drop"] is not None] == ["minmax"]
    assert sweep["recommended"]["method"] == "minmax" and list(tmp_path.iterdir()) == []
    assert (
        "1 of 2 points failed (first: percentile, 8 samples: RuntimeError: histogram exploded)"
        in (sweep_notes("x", sweep)[1])
    )
    only = OrtStaticQuant(calibration_sweep={"samples": [8], "methods": ["percentile"], "seeds": 2})
    with pytest.raises(RuntimeError, match="histogram exploded"):
        run_sweep(fragile, {"model": fp32}, only, tmp_path, ctx)
    assert list(tmp_path.iterdir()) == []
