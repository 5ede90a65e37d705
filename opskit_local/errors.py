"""The one error local runs raise: a line saying what is wrong, printed without a traceback."""

from __future__ import annotations


class LocalError(Exception):
    """Something the user can fix: an unknown function, a bad event, a reference the
    emulator cannot stand in for. The message is one line."""
