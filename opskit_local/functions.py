"""Importing a handler module the way Lambda does, from the repository's source folders.

Lambda puts the function's folder (/var/task) and its layers (/opt/python) on
``sys.path``, so handler modules import their siblings and ``opskit_common`` as
top-level modules; this does the same.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = REPO / "opskit" / "functions"
COMMON_LAYER_DIR = REPO / "opskit" / "layers" / "common" / "python"


class UnknownFunctionError(LookupError):
    """No such function folder or module."""


def load_function(name: str, module: str = "app") -> ModuleType:
    """Imports ``opskit/functions/<name>/<module>.py`` afresh, under a name of its own."""
    folder = FUNCTIONS_DIR / name
    path = folder / f"{module}.py"
    if not path.is_file():
        valid = sorted(p.name for p in FUNCTIONS_DIR.iterdir() if p.is_dir())
        raise UnknownFunctionError(
            f"no handler module {module}.py in function {name!r}; functions: {', '.join(valid)}"
        )
    for entry in (str(COMMON_LAYER_DIR), str(folder)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    spec = importlib.util.spec_from_file_location(f"opskit_function_{name}_{module}", path)
    if spec is None or spec.loader is None:
        raise UnknownFunctionError(f"cannot import {path}")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded
    spec.loader.exec_module(loaded)
    return loaded
