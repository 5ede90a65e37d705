"""The one error local runs raise: a line saying what is wrong, printed without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class LocalError(Exception):
    """Something the user can fix: an unknown function, a bad event, a reference the
    emulator cannot stand in for. The message is one line."""


def exit_code(command: Callable[[], int]) -> int:
    """What a command-line entry point returns: the command's own code, or 2 with the
    LocalError's line on stderr."""
    try:
        return command()
    except LocalError as error:
        print(f"opskit local: {error}", file=sys.stderr)
        return 2
