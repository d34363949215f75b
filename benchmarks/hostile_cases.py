"""The cases of the hostile-input corpus (``hostile_goals``): each a command line on a damaged file, a
broken recipe or a bad argument, and what its one error line must name."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.benchmarks.hostile_files import (
    Bases,
    build_bases,
    flipped,
)

BAD_INPUT, UNAVAILABLE = 2, 3
FORMATS = ("onnx", "ir", "tflite", "gguf")
DAMAGES = ("truncated", "flipped-middle", "flipped-header", "empty", "wrong-magic")
VERBS = ("bench", "inspect")
BENCH_ARGS = ("--runs", "3", "--warmup", "0", "--processes", "1", "--max-processes", "1")  # the errors, not the timings
ABSURD = 1 << 40


@dataclass(frozen=True)
class Case:
    """One hostile command line and what its one error line must say."""

    id: str
    argv: tuple[str, ...]  # after `edgepipe`
    cwd: Path  # the case's own folder: its files, and where the command runs
    code: int  # the exit code it must end with
    needles: tuple[str, ...]  # each must be in the error line: the file's path, the field
    what: str  # what is hostile about it, in words
    env: dict[str, str] = field(default_factory=dict)  # added to the environment
    outputs: tuple[Path, ...] = ()  # explicit --out / --save-outputs folders: new files allowed there

    def command(self) -> str:
        return " ".join(["edgepipe", *self.argv])


def _model_files(fmt: str, bases: Bases) -> tuple[Path, Path | None]:
    """The model file of a format, and the IR's .bin."""
    return {
        "onnx": (bases.onnx, None),
        "ir": (bases.xml, bases.bin),
        "tflite": (bases.tflite, None),
        "gguf": (bases.gguf, None),
    }[fmt]


# Another format's bytes under this extension.
_IMPOSTOR = {"onnx": "tflite", "ir": "onnx", "tflite": "gguf", "gguf": "onnx"}


def verb_args(verb: str, path: Path) -> tuple[str, ...]:
    return (verb, str(path), *BENCH_ARGS) if verb == "bench" else (verb, str(path))


# --------------------------------------------------------------------------------------------------
# The cases. Each maker gets the case's empty folder and the base files, copies in what it needs and
# returns the command line.
# --------------------------------------------------------------------------------------------------

Maker = Callable[[Path, Bases], Case]


def _damaged(fmt: str, damage: str, verb: str) -> Maker:
    def make(cwd: Path, bases: Bases) -> Case:
        source, weights = _model_files(fmt, bases)
        data = source.read_bytes()
        if damage == "truncated":
            bad = data[: len(data) // 3]
        elif damage.startswith("flipped-"):
            bad = flipped(fmt, data, damage.removeprefix("flipped-"), bases)
        elif damage == "empty":
            bad = b""
        else:
            bad = _model_files(_IMPOSTOR[fmt], bases)[0].read_bytes()
        path = cwd / source.name
        path.write_bytes(bad)
        if weights is not None:  # the IR's .bin stays whole: the damage is in the .xml
            shutil.copyfile(weights, cwd / weights.name)
        what = {
            "truncated": "the first third of the file",
            "flipped-middle": "four bytes inverted in the middle",
            "flipped-header": "four bytes inverted in the header",
            "empty": "an empty file",
            "wrong-magic": f"a {_IMPOSTOR[fmt]} file's bytes",
        }[damage]
        return Case(f"{fmt}-{damage}-{verb}", verb_args(verb, path), cwd, BAD_INPUT, (str(path),), f"{fmt}: {what}")

    return make


def _ir_weights(damage: str, verb: str) -> Maker:
    """A whole .xml beside a truncated .bin, or with no .bin."""

    def make(cwd: Path, bases: Bases) -> Case:
        xml = cwd / bases.xml.name
        shutil.copyfile(bases.xml, xml)
        needles: tuple[str, ...] = (str(xml),)
        if damage == "truncated-bin":
            data = bases.bin.read_bytes()
            (cwd / bases.bin.name).write_bytes(data[: len(data) // 3])
        else:
            needles += (bases.bin.name,)
        what = "the .bin cut to a third" if damage == "truncated-bin" else "no .bin beside the .xml"
        return Case(f"ir-{damage}-{verb}", verb_args(verb, xml), cwd, BAD_INPUT, needles, what)

    return make


def _gguf_absurd(count: str, verb: str) -> Maker:
    """A real GGUF whose header claims 2**40 tensors or 2**40 metadata keys."""

    def make(cwd: Path, bases: Bases) -> Case:
        data = bases.gguf.read_bytes()
        tensors, keys = struct.unpack("<QQ", data[8:24])
        tensors, keys = (ABSURD, keys) if count == "tensors" else (tensors, ABSURD)
        path = cwd / "model.gguf"
        path.write_bytes(data[:8] + struct.pack("<QQ", tensors, keys) + data[24:])
        needle = f"claims {ABSURD} tensors" if count == "tensors" else f"{ABSURD} metadata keys"
        what = f"a header claiming {ABSURD} {'tensors' if count == 'tensors' else 'metadata keys'}"
        return Case(f"gguf-absurd-{count}-{verb}", verb_args(verb, path), cwd, BAD_INPUT, (str(path), needle), what)

    return make


def _custom_op(cwd: Path, bases: Bases) -> Case:
    path = cwd / "custom.onnx"
    shutil.copyfile(bases.custom, path)
    return Case(
        "onnx-custom-op-bench",
        verb_args("bench", path),
        cwd,
        BAD_INPUT,
        (str(path), "MyOp"),
        "a node of an operator no runtime has (my.domain.MyOp)",
    )


# id -> (recipe bytes, needles besides the recipe's path, what); the recipe is run with --out cwd/out.
RECIPES: dict[str, tuple[bytes, tuple[str, ...], str]] = {
    "invalid-yaml": (b"name: x\ntargets: [{format: onnx}\n", ("invalid YAML",), "an unclosed flow sequence"),
    "unknown-top-level-field": (b"name: x\ncolour: red\n", ("colour: unknown field",), "a field no recipe has"),
    "unknown-nested-field": (
        b"name: x\nbenchmark:\n  treads: 2\n",
        ("benchmark.treads: unknown field",),
        "a misspelt benchmark field",
    ),
    "wrong-type": (b'name: x\nseed: "abc"\n', ("seed:", "'abc'"), "a string for an integer"),
    "negative-runs": (b"name: x\nbenchmark: {runs: -5}\n", ("benchmark.runs:", "-5"), "a negative number of runs"),
    "negative-test-size": (b"name: x\ntask: {test_size: -1}\n", ("task.test_size:", "-1"), "a negative split size"),
    "empty-file": (b"", ("must be a YAML mapping",), "an empty recipe"),
    "list-not-mapping": (b"- name: x\n- seed: 1\n", ("must be a YAML mapping",), "a list, not a mapping"),
    "not-utf8": (b"name: caf\xe9\nseed: 0\n", ("cannot read recipe",), "Latin-1 bytes"),
}


def _recipe(key: str) -> Maker:
    def make(cwd: Path, bases: Bases) -> Case:
        text, needles, what = RECIPES[key]
        recipe = cwd / "recipe.yaml"
        recipe.write_bytes(text)
        out = cwd / "out"
        argv = ("run", str(recipe), "--out", str(out))
        return Case(f"recipe-{key}", argv, cwd, BAD_INPUT, (str(recipe), *needles), what, outputs=(out,))

    return make


def _run_folder(where: str) -> Maker:
    """A run folder that cannot be made: the recipe's output_dir is an existing file, or inside /proc;
    ``--out`` naming an existing file. The recipe is valid: the folder is the only thing wrong."""

    def make(cwd: Path, bases: Bases) -> Case:
        taken = cwd / "taken"
        taken.write_text("a file, not a folder\n")
        recipe = cwd / "recipe.yaml"
        target = Path("/proc/edgepipe-hostile/run") if where == "output-dir-in-proc" else taken
        if where == "out-is-a-file":
            recipe.write_text("name: x\n")
            argv: tuple[str, ...] = ("run", str(recipe), "--out", str(taken))
        else:
            recipe.write_text(f"name: x\noutput_dir: {target}\n")
            argv = ("run", str(recipe))
        what = {
            "output-dir-is-a-file": "output_dir names an existing file",
            "output-dir-in-proc": "output_dir inside /proc, where no folder can be made",
            "out-is-a-file": "--out names an existing file",
        }[where]
        return Case(f"recipe-{where}", argv, cwd, BAD_INPUT, (str(target),), what)

    return make


class _Unpickles:
    """An object whose unpickling creates a file: a pickled array that is ever loaded leaves it behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _given(kind: str) -> Maker:
    """``--input`` / ``--shape`` that do not fit the ONNX model's inputs (a, b [batch, 4] float32)."""

    def make(cwd: Path, bases: Bases) -> Case:
        model = cwd / "model.onnx"
        shutil.copyfile(bases.onnx, model)
        npy = cwd / "a.npy"
        extra: tuple[str, ...]
        needles: tuple[str, ...]
        if kind == "wrong-shape":
            np.save(npy, np.zeros((2, 3), dtype=np.float32))
            extra, needles = (f"--input=a={npy}",), (str(model), "--input a", str(npy), "[2, 3]")
        elif kind == "wrong-dtype":
            np.save(npy, np.zeros((1, 4), dtype=np.float64))
            extra, needles = (f"--input=a={npy}",), (str(model), "--input a", str(npy), "float64")
        elif kind == "pickled-object":
            # Unpickling it would create the file `unpickled` here: the check for files left behind sees it.
            np.save(npy, np.array([_Unpickles(cwd / "unpickled"), None], dtype=object), allow_pickle=True)
            extra, needles = (f"--input=a={npy}",), ("--input a", str(npy), "not a readable .npy array")
        elif kind == "truncated-npy":
            whole = cwd / "whole.npy"
            np.save(whole, np.zeros((1, 4), dtype=np.float32))
            npy.write_bytes(whole.read_bytes()[:-8])  # the header whole, half the data
            whole.unlink()
            extra, needles = (f"--input=a={npy}",), ("--input a", str(npy))
        elif kind == "unknown-input":
            np.save(npy, np.zeros((1, 4), dtype=np.float32))
            extra, needles = (f"--input=nosuch={npy}",), (str(model), "--input nosuch")
        else:  # shape-does-not-fit
            extra, needles = ("--shape", "a=1,5"), (str(model), "--shape a", "[1, 5]")
        out = cwd / "saved"
        argv = ("bench", str(model), *extra, "--save-outputs", str(out), *BENCH_ARGS)
        what = {
            "wrong-shape": "a [2, 3] array for a [batch, 4] input",
            "wrong-dtype": "a float64 array for a float32 input",
            "pickled-object": "a pickled object array (must be refused, never unpickled)",
            "truncated-npy": "a .npy missing the second half of its data",
            "unknown-input": "an array for an input the model does not have",
            "shape-does-not-fit": "--shape a=1,5 for a [batch, 4] input",
        }[kind]
        return Case(f"input-{kind}", argv, cwd, BAD_INPUT, needles, what, outputs=(out,))

    return make


def _text(kind: str) -> Maker:
    def make(cwd: Path, bases: Bases) -> Case:
        model = cwd / "model.gguf"
        shutil.copyfile(bases.gguf, model)
        text = cwd / "text.txt"
        text.write_bytes(b"  \n\n" if kind == "empty" else "caf\xe9 cr\xe8me\n".encode("latin-1"))
        needle = "the file is empty" if kind == "empty" else "not UTF-8"
        what = "an empty --text" if kind == "empty" else "a Latin-1 --text"
        argv = ("bench", str(model), "--text", str(text), *BENCH_ARGS)
        return Case(f"text-{kind}", argv, cwd, BAD_INPUT, ("--text", str(text), needle), what)

    return make


def _unknown_runtime(cwd: Path, bases: Bases) -> Case:
    model = cwd / "model.onnx"
    shutil.copyfile(bases.onnx, model)
    argv = ("bench", str(model), "--runtime", "nosuchruntime", *BENCH_ARGS)
    needles = ("--runtime", "nosuchruntime")
    return Case("runtime-unknown", argv, cwd, BAD_INPUT, needles, "a runtime edgepipe does not know")


BROKEN_OPENVINO = 'raise ImportError("hostile-inputs: this openvino package cannot be imported")\n'


def _unimportable_runtime(cwd: Path, bases: Bases) -> Case:
    """openvino exists but cannot be imported: a package of that name first on PYTHONPATH, whose import
    raises. It lives beside the case's folder, not in it (Python may write its __pycache__ there)."""
    model = cwd / "model.onnx"
    shutil.copyfile(bases.onnx, model)
    packages = cwd.parent / f"{cwd.name}.pythonpath"
    (packages / "openvino").mkdir(parents=True, exist_ok=True)
    (packages / "openvino" / "__init__.py").write_text(BROKEN_OPENVINO)
    path = os.pathsep.join(p for p in (str(packages), os.environ.get("PYTHONPATH", "")) if p)
    argv = ("bench", str(model), "--runtime", "openvino", *BENCH_ARGS)
    what = "an openvino package whose import raises ImportError"
    needles = ("runtime 'openvino'", "cannot be imported")  # the ImportError's own words
    return Case("runtime-unimportable", argv, cwd, UNAVAILABLE, needles, what, env={"PYTHONPATH": path})


def _odd_path(kind: str, verb: str) -> Maker:
    def make(cwd: Path, bases: Bases) -> Case:
        if kind == "directory":
            path = cwd / "models"
            path.mkdir()
            (path / "notes.txt").write_text("a folder, not a model\n")
        elif kind == "nonexistent":
            path = cwd / "nowhere" / "model.onnx"
        else:  # unknown-extension
            path = cwd / "model.xyz"
            shutil.copyfile(bases.onnx, path)
        what = {"directory": "a folder that is no artifact", "nonexistent": "no such path"}.get(
            kind, "an ONNX file named .xyz"
        )
        return Case(f"path-{kind}-{verb}", verb_args(verb, path), cwd, BAD_INPUT, (str(path),), what)

    return make


def _specs() -> dict[str, Maker]:
    specs: dict[str, Maker] = {}
    for fmt in FORMATS:
        for damage in DAMAGES:
            for verb in VERBS:
                specs[f"{fmt}-{damage}-{verb}"] = _damaged(fmt, damage, verb)
    for damage in ("truncated-bin", "missing-bin"):
        for verb in VERBS:
            specs[f"ir-{damage}-{verb}"] = _ir_weights(damage, verb)
    for count in ("tensors", "keys"):
        for verb in VERBS:
            specs[f"gguf-absurd-{count}-{verb}"] = _gguf_absurd(count, verb)
    specs["onnx-custom-op-bench"] = _custom_op
    for key in RECIPES:
        specs[f"recipe-{key}"] = _recipe(key)
    for where in ("output-dir-is-a-file", "output-dir-in-proc", "out-is-a-file"):
        specs[f"recipe-{where}"] = _run_folder(where)
    kinds = ("wrong-shape", "wrong-dtype", "pickled-object", "truncated-npy", "unknown-input", "shape-does-not-fit")
    for kind in kinds:
        specs[f"input-{kind}"] = _given(kind)
    for kind in ("empty", "not-utf8"):
        specs[f"text-{kind}"] = _text(kind)
    specs["runtime-unknown"] = _unknown_runtime
    specs["runtime-unimportable"] = _unimportable_runtime
    for kind in ("directory", "nonexistent", "unknown-extension"):
        for verb in VERBS:
            specs[f"path-{kind}-{verb}"] = _odd_path(kind, verb)
    return specs


SPECS = _specs()
CASE_IDS = list(SPECS)


def build_cases(folder: Path, ids: Sequence[str] | None = None, bases: Bases | None = None) -> list[Case]:
    """The corpus in ``folder``: each case in ``folder/<id>``, made from ``bases`` (default: built in
    ``folder/_base``)."""
    bases = bases or build_bases(folder / "_base")
    cases = []
    for case_id in ids or CASE_IDS:
        cwd = folder / case_id
        cwd.mkdir(parents=True)
        case = SPECS[case_id](cwd, bases)
        assert case.id == case_id, (case.id, case_id)
        cases.append(case)
    return cases


# --------------------------------------------------------------------------------------------------
# Running a case and judging it
# --------------------------------------------------------------------------------------------------
