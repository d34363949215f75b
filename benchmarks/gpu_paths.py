"""The GPU paths, end to end: a small CNN and a small language model go through the real pipeline with
``devices: [cpu, cuda]``, so every runtime is benchmarked on the GPU where it has one and reported as
unavailable where it has not (an execution provider that would fall back to the CPU is refused, not
reported as a GPU result). Parity on the GPU is against the torch CPU reference, in FP32.

    python -m edgepipe.benchmarks.gpu_paths [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from edgepipe.benchmarks.report import render_table
from edgepipe.recipe import parse_recipe
from edgepipe.runner import run_recipe
from edgepipe.tasks import task_class

RECIPES = {
    "cnn": {
        "task": {"kind": "classification", "image_size": 32},
        "source": {"kind": "train", "family": "cnn", "params": {"channels": [64, 128, 256]}, "epochs": 3},
    },
    "lm": {
        "task": {"kind": "language-modeling", "sources": ["docs"], "context_length": 128, "sequence_lengths": [128]},
        "source": {
            "kind": "train",
            "family": "llama",
            "params": {"dim": 256, "layers": 4, "heads": 8, "kv_heads": 4, "max_length": 256},
            "tokenizer": {"vocab_size": 1024},
            "max_steps": 100,
        },
    },
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="run folders go here (default: a temporary folder)")
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="edgepipe-gpu-"))
    for name, sections in RECIPES.items():
        recipe = parse_recipe(
            {
                "name": f"gpu-{name}",
                **sections,
                "targets": [{"format": "onnx"}],
                "benchmark": {"threads": 4, "warmup": 20, "runs": 200, "devices": ["cpu", "cuda"]},
            },
            f"gpu_paths:{name}",
        )
        result = run_recipe(recipe, out_dir=root / name)
        print(f"\n== {name}: {result.paths['json']}")
        print(render_table(result.rows, task_class(recipe.task.kind)))
        for note in result.results["notes"]:
            print(f"- {note}")
        for row in result.rows:
            if row.device != "cpu" and row.status == "ok":
                print(f"  {row.label} on {row.session.get('device_name') or row.session.get('providers')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
