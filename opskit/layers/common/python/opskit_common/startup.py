"""What a handler module calls once its imports and module-level setup are done."""

from __future__ import annotations

import gc
import os


def imports_done() -> None:
    """In Lambda, what a handler module built at import lives as long as the sandbox.
    Freezing it keeps the garbage collector from scanning it again at every full
    collection: on Python 3.11 one such pass (~20 ms for the notifier) otherwise falls
    into the creation of the first client (3.14's incremental collector is yet to be
    measured). Handlers keep no import-time object they later replace, so nothing frozen
    turns into garbage. Only under Lambda's runtime interface
    (`AWS_LAMBDA_RUNTIME_API`): tests and `make invoke` import handlers into longer-lived
    processes, whose other objects should stay collectable."""
    if os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        gc.freeze()
