"""Synthetic inputs for a model benchmarked without data: every named input gets values with meaning
(token ids inside the vocabulary, attention masks of ones, token types of zeros), and dynamic dimensions
get the batch size or a sequence length as their names say; any other needs a given shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import InputError, first_line
from edgepipe.tensors import Feeds, TensorSpec, input_role

DEFAULT_SEQUENCE_LENGTH = 32
# Words in a dynamic dimension's name that mark it as a sequence length.
_SEQUENCE_WORDS = ("seq", "len", "token", "time", "step", "position")


def _is_sequence(spec: TensorSpec, axis: int, name: str) -> bool:
    if any(w in name.lower() for w in _SEQUENCE_WORDS):
        return True
    # Unnamed ('?'): the second axis of a 2-D integer input (ids, masks) is a sequence.
    return name == "?" and axis == 1 and len(spec.shape) == 2 and np.dtype(spec.dtype).kind in "iu"


def _shown(shape: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def concrete_shape(
    spec: TensorSpec, batch: int, sequence_length: int | None, named: dict[str, int] | None = None
) -> tuple[tuple[int, ...], list[str]]:
    """The shape to feed ``spec``, and the choices made for its dynamic dimensions: the first is the batch,
    one named like a sequence gets the sequence length, one whose name another input's given shape fixed
    gets that value. Any other (an image's height, say) has no safe default: InputError naming it."""
    shape, notes = [], []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim >= 0:
            shape.append(dim)
            continue
        name = str(dim)
        if named and name in named and name != "?":
            value = named[name]
        elif axis == 0 and (len(spec.shape) > 1 or not _is_sequence(spec, axis, name)):
            value = batch
        elif _is_sequence(spec, axis, name):  # a 1-D input named like a sequence is one
            value = sequence_length or DEFAULT_SEQUENCE_LENGTH
        else:
            example = ",".join(
                str(d) if isinstance(d, int) and d >= 0 else ("1" if i == 0 else "N") for i, d in enumerate(spec.shape)
            )
            raise InputError(
                f"input '{spec.name}' {_shown(spec.shape)}: dimension {axis} ('{name}') is dynamic and has no "
                f"safe default: give it with --shape {spec.name}={example}"
            )
        shape.append(value)
        label = name if name != "?" else ("batch" if axis == 0 else f"{spec.name}[{axis}]")
        notes.append(f"{label}={value}")
    return tuple(shape), notes


def _integers(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    # By role first: a real input is unpadded (mask of ones) with one segment (token types of zeros).
    role = input_role(spec.name)
    if role == "mask":
        return np.ones(shape), "ones"
    if role == "token_type":
        return np.zeros(shape), "zeros"
    if role == "position" and len(shape) >= 2:
        return np.broadcast_to(np.arange(shape[-1]), shape), "positions"
    if spec.value_range is not None:
        lo, hi = spec.value_range
        return rng.integers(lo, hi + 1, size=shape), f"values in [{lo}, {hi}]"
    return rng.integers(0, 100, size=shape), "values in [0, 99] (range unknown)"


def _fits(spec: TensorSpec, shape: tuple[int, ...]) -> bool:
    return len(shape) == len(spec.shape) and all(
        not (isinstance(d, int) and d >= 0) or d == n for d, n in zip(spec.shape, shape, strict=True)
    )


def _named_dims(specs: dict[str, TensorSpec], fixed: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Dynamic dimensions by name, as the given shapes fix them (``batch`` fixed by one input is the batch
    of every input that names it so)."""
    named: dict[str, tuple[int, str]] = {}
    for name, shape in fixed.items():
        for dim, n in zip(specs[name].shape, shape, strict=True):
            if not isinstance(dim, str) or dim == "?":
                continue
            seen, first = named.setdefault(dim, (n, name))
            if seen != n:  # e.g. an attention mask shorter than the ids it masks
                raise InputError(
                    f"{name}: its '{dim}' dimension is {n}, but {first} gives {seen} (inputs that share a "
                    f"dimension name must agree)"
                )
    return {dim: n for dim, (n, _) in named.items()}


def synthetic_feeds(
    inputs: list[TensorSpec],
    batch: int,
    sequence_length: int | None = None,
    seed: int = 0,
    *,
    shapes: dict[str, tuple[int, ...]] | None = None,
    given: dict[str, tuple[np.ndarray, str]] | None = None,
) -> tuple[Feeds, str]:
    """Feeds for every input and a one-line description of what they hold (recorded in the results row).
    ``given`` arrays ({name: (array, where from)}) are fed exactly as they are; ``shapes`` fix the shapes of
    the inputs made here. Floats are uniform in [-1, 1), quantized integers uniform over their type."""
    rng = np.random.default_rng(seed)
    specs = {s.name: s for s in inputs}
    shapes, given = dict(shapes or {}), dict(given or {})
    for flag, names in (("--shape", shapes), ("--input", given)):
        if unknown := [n for n in names if n not in specs]:
            raise InputError(f"{flag} {unknown[0]}: the model has no input '{unknown[0]}' (inputs: {list(specs)})")
    for name, shape in shapes.items():
        if not _fits(specs[name], shape):
            raise InputError(
                f"--shape {name}: {list(shape)} does not fit the input's shape {_shown(specs[name].shape)}"
            )
    for name, (array, where) in given.items():
        spec = specs[name]
        if array.dtype != np.dtype(spec.dtype):
            raise InputError(f"--input {name}: {where} holds {array.dtype}, the input takes {spec.dtype}")
        if not _fits(spec, array.shape):
            raise InputError(
                f"--input {name}: {where} has shape {list(array.shape)}, the input takes {_shown(spec.shape)}"
            )
    named = _named_dims(specs, {**shapes, **{n: a.shape for n, (a, _) in given.items()}})
    feeds: Feeds = {}
    what: list[str] = []
    dims: list[str] = []
    for spec in inputs:
        if spec.name in given:
            array, where = given[spec.name]
            feeds[spec.name] = array
            what.append(f"{spec.name} from {where}")
            continue
        if spec.name in shapes:
            shape = shapes[spec.name]
            dims.append(f"{spec.name} {list(shape)} as given")
        else:
            shape, notes = concrete_shape(spec, batch, sequence_length, named)
            dims += [n for n in notes if n not in dims]
        try:
            dtype = np.dtype(spec.dtype)
        except TypeError:
            raise InputError(f"input '{spec.name}': cannot make synthetic data of dtype {spec.dtype}") from None
        values: Any
        if dtype.kind == "f":
            values, kind = rng.uniform(-1.0, 1.0, size=shape), "uniform in [-1, 1)"
        elif dtype.kind in "iu" and spec.quantization:
            info = np.iinfo(dtype)
            values, kind = rng.integers(info.min, info.max + 1, size=shape), "uniform over the type"
        elif dtype.kind in "iu":
            values, kind = _integers(spec, shape, rng)
        elif dtype.kind == "b":
            values, kind = np.ones(shape), "true"
        else:
            raise InputError(f"input '{spec.name}': cannot make synthetic data of dtype {spec.dtype}")
        feeds[spec.name] = np.array(values, dtype=dtype, order="C")  # a copy; a scalar stays 0-d
        what.append(f"{spec.name}{' scalar' if not shape else ''} {kind}")
    shape_note = f"; dims {', '.join(dims)}" if dims else ""
    if len(given) == len(inputs):
        return feeds, f"given: {', '.join(what)}"
    return feeds, f"synthetic (seed {seed}): {', '.join(what)}{shape_note}"


@dataclass
class InputChoice:
    """What a user chose for a file's inputs (``--shape``, ``--input``, ``--save-outputs``), and what the first
    run was fed and gave back (for parity between runtimes on identical inputs)."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    given: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)
    outputs_dir: Path | None = None
    feeds: Feeds | None = None
    outputs: list[np.ndarray] | None = None
    point_feeds: list[list[Feeds]] = field(default_factory=list)  # what each benchmark point was fed


def described(feeds: Feeds, source: str, choice: InputChoice) -> str:
    """The inputs of a failed run, with a hint where synthetic integers may be what the model refused."""
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    made = [k for k, v in feeds.items() if k not in choice.given and v.dtype.kind in "iu"]
    hint = f" (synthetic integer input(s) {made} may need real values: --input NAME=FILE.npy)" if made else ""
    return f"{source} {shapes}{hint}"


def parse_shapes(values: list[str]) -> dict[str, tuple[int, ...]]:
    """``--shape NAME=1,3,320,320`` (repeatable; ``NAME=`` for a scalar)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, dims = value.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip()) if sep and name else None
        except ValueError:
            shape = None
        if shape is None or any(d < 0 for d in shape):
            raise InputError(f"--shape {value}: expected NAME=D1,D2,... with non-negative integers")
        shapes[name] = shape
    return shapes


def load_inputs(values: list[str]) -> dict[str, tuple[np.ndarray, str]]:
    """``--input NAME=FILE.npy`` (repeatable): the arrays, read without pickle."""
    given: dict[str, tuple[np.ndarray, str]] = {}
    for value in values:
        name, sep, file = value.partition("=")
        if not (sep and name and file):
            raise InputError(f"--input {value}: expected NAME=FILE.npy")
        try:
            array = np.load(file, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"--input {name}: {file} does not exist") from None
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f"--input {name}: {file} is not a readable .npy array ({first_line(e)})") from None
        if not isinstance(array, np.ndarray):
            raise InputError(f"--input {name}: {file} holds several arrays (.npz); give one .npy per input")
        given[name] = (array if array.flags.c_contiguous else array.copy(order="C"), file)  # 0-d stays 0-d
    return given


def save_outputs(folder: Path, specs: list[TensorSpec], outputs: list[np.ndarray]) -> list[Path]:
    """Every output as ``<index>_<name>.npy`` (the name made safe for a file name), written atomically."""
    import io
    import re

    from edgepipe.files import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, array in enumerate(outputs):
        name = specs[i].name if i < len(specs) else f"output{i}"
        path = folder / f"{i}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('._') or 'output'}.npy"
        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    return written
