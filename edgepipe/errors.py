"""Errors a user can act on. The CLI prints each as one line and exits with its code.

Exit codes are part of the stable contract for deployment scripts:

- 0: success
- 1: internal error (a bug: please report it)
- 2: bad input (recipe, model file, argument)
- 3: a runtime or device is unavailable on this machine
- 4: a quality gate failed (parity with the reference, accuracy budget)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator


class EdgepipeError(Exception):
    """Base class: ``str(error)`` is the one line shown to the user."""

    exit_code = 1


class InputError(EdgepipeError):
    """A recipe, model file or argument is wrong. The message names the file or field."""

    exit_code = 2


class UnavailableError(EdgepipeError):
    """A runtime, package or device is not present on this machine."""

    exit_code = 3


class UnsupportedModel(InputError):
    """A tool cannot take this model (a converter lacks an operator, TFLite Micro cannot run a hybrid model).
    In a run, the target's row says so and the run goes on; from a command it is exit 2."""


class GateError(EdgepipeError):
    """A quality gate failed; the results were still written."""

    exit_code = 4


class RegressionError(EdgepipeError):
    """``edgepipe compare`` found a regression beyond the measured noise (the comparison was printed)."""

    exit_code = 5


# Lines that say where in a native library an error was raised, not what is wrong (OpenVINO prints
# "Exception from src/inference/src/cpp/core.cpp:84:" before the reason).
_LOCATION_ONLY = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:?|FrontEnd API failed.*)$")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception a library wrapped: usually the one that says what is wrong (torch's
    exporter wraps "dynamic_shapes do not match the inputs" in "Failed to export the model")."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first informative line of an exception's message, trimmed: third-party errors are often
    pages long, colored, and may open with a native source location."""
    lines = [_ANSI.sub("", line).strip() for line in str(exc).splitlines() if line.strip()]
    informative = [line for line in lines if not _LOCATION_ONLY.match(line)]
    line = (informative or lines or [type(exc).__name__])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


@contextlib.contextmanager
def converting(tool: str) -> Iterator[None]:
    """A converter's failure on this model (an operator it cannot lower) as UnsupportedModel, in one line:
    in a run, that target's row says why and the run goes on."""
    try:
        yield
    except EdgepipeError:
        raise
    except Exception as e:  # converters raise anything from AssertionError to their own types
        cause = root_cause(e)
        raise UnsupportedModel(
            f"{tool} cannot convert this model: {type(cause).__name__}: {first_line(cause)}"
        ) from None
