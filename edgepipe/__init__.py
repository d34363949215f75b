"""edgepipe: train, compress, export and benchmark models for edge devices, from one recipe.

>>> import edgepipe
>>> result = edgepipe.run_recipe("recipes/quickstart.yaml", log=print)  # doctest: +SKIP
>>> row = edgepipe.benchmark_model("model.onnx", threads=2)            # doctest: +SKIP
>>> row.latency_ms.median                                               # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgepipe.errors import EdgepipeError, GateError, InputError, UnavailableError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edgepipe.artifact import Artifact, Manifest, load_artifact
    from edgepipe.benchmarks.harness import benchmark_model
    from edgepipe.benchmarks.inputs import InputChoice
    from edgepipe.inspection import Inspection, inspect_model
    from edgepipe.recipe import Recipe, load_recipe
    from edgepipe.runner import RunResult, run_recipe

# Public verbs, imported on first use so that `import edgepipe` stays light.
_LAZY = {
    "run_recipe": "edgepipe.runner",
    "RunResult": "edgepipe.runner",
    "load_recipe": "edgepipe.recipe",
    "Recipe": "edgepipe.recipe",
    "benchmark_model": "edgepipe.benchmarks.harness",
    "InputChoice": "edgepipe.benchmarks.inputs",
    "inspect_model": "edgepipe.inspection",
    "Inspection": "edgepipe.inspection",
    "load_artifact": "edgepipe.artifact",
    "Artifact": "edgepipe.artifact",
    "Manifest": "edgepipe.artifact",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgepipe' has no attribute '{name}'")


__all__ = [
    "Artifact",
    "EdgepipeError",
    "GateError",
    "InputChoice",
    "InputError",
    "Inspection",
    "Manifest",
    "Recipe",
    "RunResult",
    "UnavailableError",
    "__version__",
    "benchmark_model",
    "inspect_model",
    "load_artifact",
    "load_recipe",
    "run_recipe",
]
