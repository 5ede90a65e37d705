"""`make local`: an environment's resources on a local emulator, up until Ctrl-C.

    python -m opskit_local.serve [--env dev] [--template FILE] [--port 0]

Starts moto's server on 127.0.0.1 (the `Emulator` of `make api`), the webhook and
Lambda/CodeDeploy stand-ins, resolves every function's variables (creating the topics,
queues, tables and secrets they name), and records all that in
``.opskit-local/running.json`` for `make invoke`, which then runs against this emulator.
Messages the webhook stand-in receives, and smoke-test verdicts, are printed here.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from opskit_local import state
from opskit_local.emulator import DEFAULT_REGION
from opskit_local.errors import LocalError, exit_code
from opskit_local.invoke import source_of, template_of
from opskit_local.session import Session


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make local", description="An environment's resources on a local emulator."
    )
    parser.add_argument("--env", default="dev", help="environment of cdk.json (default dev)")
    parser.add_argument("--template", help="a synthesized template instead of synthesizing")
    parser.add_argument("--port", type=int, default=0, help="emulator port (default: any free)")
    parser.add_argument("--region", default=DEFAULT_REGION, help=f"default {DEFAULT_REGION}")
    return parser


def _summary(session: Session, running: state.Running) -> str:
    lines = [
        f"opskit local: {running.environment} on a local emulator, region {running.region}",
        f"  AWS_ENDPOINT_URL={running.endpoint_url}",
        f"  webhook stand-in:            {running.webhook_url}",
        f"  Lambda/CodeDeploy stand-in:  {running.lambda_url}",
        "functions (make invoke FN=<name> [EVENT=<file, sample or JSON>]):",
    ]
    for deployed in running.functions:
        function = deployed.function
        status = f"  ({deployed.problem})" if deployed.problem else ""
        lines.append(
            f"  {function.name:<28} {function.logical_id:<48} {deployed.function_name}{status}"
        )
    lines.append("resources:")
    for logical_id, kind, ref in session.resources():
        lines.append(f"  {logical_id:<48} {kind:<30} {ref}")
    lines.append("Ctrl-C stops it.")
    return "\n".join(lines)


def serve(argv: Sequence[str] | None = None, *, stop: threading.Event | None = None) -> int:
    """The command; `stop` ends it (default: SIGINT or SIGTERM)."""
    args = _parser().parse_args(argv)
    existing = state.read()
    if existing is not None:
        raise LocalError(
            f"`make local` already runs {existing.environment} (process {existing.pid}) at"
            f" {existing.endpoint_url}"
        )
    source = source_of(args.template)
    session = Session.start(
        template_of(args.env, args.template),
        environment_name=args.env,
        port=args.port,
        region=args.region,
    )
    if stop is None:
        stop = threading.Event()

        def stopping(*_: Any) -> None:
            stop.set()

        signal.signal(signal.SIGINT, stopping)
        signal.signal(signal.SIGTERM, stopping)
    running = None
    try:
        running = session.running(pid=os.getpid(), environment_name=args.env, source=source)
        running.write()
        print(_summary(session, running), flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        if running is not None:
            running.remove()
        session.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return exit_code(lambda: serve(argv))


if __name__ == "__main__":
    sys.exit(main())
