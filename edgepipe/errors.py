"""Errors a user can act on. The CLI prints each as one line and exits with its code.

Exit codes are part of the stable contract for deployment scripts:

- 0: success
- 1: internal error (a bug: please report it)
- 2: bad input (recipe, model file, argument)
- 3: a runtime or device is unavailable on this machine
- 4: a quality gate failed (parity with the reference, accuracy budget)
"""

from __future__ import annotations


class EdgepipeError(Exception):
    """Base class: ``str(error)`` is the one line shown to the user."""

    exit_code = 1


class InputError(EdgepipeError):
    """A recipe, model file or argument is wrong. The message names the file or field."""

    exit_code = 2


class UnavailableError(EdgepipeError):
    """A runtime, package or device is not present on this machine."""

    exit_code = 3


class GateError(EdgepipeError):
    """A quality gate failed; the results were still written."""

    exit_code = 4


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, trimmed: third-party errors are often pages long."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return type(exc).__name__
