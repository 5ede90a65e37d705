"""`make invoke`: one function's handler, run in this process against the local emulator.

    python -m opskit_local.invoke FUNCTION [EVENT] [--env dev] [--template FILE]

FUNCTION is a function's name (``notification``, ``user_service.api``), or the logical id
of one in the template; EVENT a file, the name of a sample in ``events/<FUNCTION>/``, or
inline JSON (default: the function's first sample). The variables come from the
environment's synthesized template (or FILE, e.g. ``cdk.out/OpsKit-dev.template.json``),
resolved against the emulator of a running `make local` of the same environment, else
against one started for this call. Like `sam local invoke`: the log lines on stderr, the
result (the return value, or Lambda's error object) as JSON on stdout. Exit status: 0,
1 when the handler raised, 2 with one line on stderr for anything to fix first.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opskit_local import state, template
from opskit_local.catalog import Catalog, LocalFunction
from opskit_local.errors import LocalError, exit_code
from opskit_local.events import read_event
from opskit_local.session import Session, with_stand_ins


def source_of(template_file: str | None) -> str:
    """Where a template comes from, as `make local` records it (to know if it is the same)."""
    if template_file is None:
        return f"synth:{template.fingerprint()}"
    path = Path(template_file).resolve()
    try:
        return f"file:{path}:{path.stat().st_mtime_ns}"
    except OSError:
        raise LocalError(f"template file {template_file} does not exist") from None


def template_of(environment: str, template_file: str | None) -> dict[str, Any]:
    if template_file is not None:
        return template.read(template_file)
    return template.load(environment)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make invoke", description="Run one function locally, AWS emulated."
    )
    parser.add_argument("function", help="notification, user_service.api, ... (or a logical id)")
    parser.add_argument("event", nargs="?", help="file, sample name or inline JSON")
    parser.add_argument("--env", default="dev", help="environment of cdk.json (default dev)")
    parser.add_argument("--template", help="a synthesized template instead of synthesizing")
    return parser


def _prepared(catalog: Catalog, name: str, event: str | None) -> tuple[LocalFunction, Any, str]:
    function = catalog.get(name)
    payload, origin = read_event(event, function.name)
    return function, payload, origin


def run(argv: Sequence[str] | None = None, *, out: Any = None, log: Any = None) -> int:
    """The command; `out` and `log` default to stdout and stderr."""
    out, log = out or sys.stdout, log or sys.stderr
    args = _parser().parse_args(argv)
    source = source_of(args.template)
    running = state.read()
    if running is not None and running.environment != args.env:
        print(
            f"opskit local: `make local` runs {running.environment}, not {args.env}; "
            "starting an emulator for this call",
            file=log,
        )
        running = None
    if running is not None and running.source == source:
        session = Session.attach(running, log=log)
        function, event, origin = _prepared(session.catalog, args.function, args.event)
        emulator = f"the emulator of `make local` at {running.endpoint_url}"
    else:
        found = with_stand_ins(template_of(args.env, args.template))
        function, event, origin = _prepared(Catalog.of(found), args.function, args.event)
        if running is not None:
            session = Session.attach(running, template=found, log=log)
            emulator = f"the emulator of `make local` at {running.endpoint_url}"
        else:
            session = Session.start(found, environment_name=args.env, log=log)
            emulator = f"an emulator started for this call at {session.endpoint_url}"
    with session:
        deployed = session.deployed(function)
        print(
            f"opskit local: {function.name} ({deployed.function_name}) with {origin},"
            f" AWS emulated by {emulator}",
            file=log,
            flush=True,
        )
        invocation = session.invoke(function.logical_id, event)
    print(json.dumps(invocation.result, indent=2), file=out, flush=True)
    return 1 if invocation.error else 0


def main(argv: Sequence[str] | None = None) -> int:
    return exit_code(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
