"""The log processor's hot path, against the floor of decoding and against naive matching.

On one 10,000-event subscription payload (~1.2 MB decompressed, ~5 % error lines, ~1 %
critical), measured side by side in this process (samples interleaved, CPU time; the
ratio is the median of each handler sample over the floor sample next to it):

- floor:   ``json.loads(gzip.decompress(base64.b64decode(data)))``;
- handler: the handler's whole work except AWS calls: decode with the bounded gunzip,
  check the payload's shape, classify every line, build the EMF metrics line, and format
  the critical alert (the rate limiter is an in-memory one that always allows, SNS a
  stand-in that records the message);
- naive:   the floor's decoding, then ``re.search(pattern, line, re.IGNORECASE)`` per
  default pattern per line (stopping at the first that matches).

Targets: handler / floor <= 1.5; naive / handler >= 7. The same is printed, for
information, for a payload of longer, Lambda-shaped lines (START/REPORT lines, access
logs, JSON logs). Then a gzip bomb (1 GiB of zeros, ~1 MB compressed, the most a
subscription delivers) against the default 10 MiB cap: peak traced memory of the handler
while it rejects it, target <= 2x the cap, and the time it takes.

    .venv/bin/python benchmarks/log_processor.py [--samples 61]
"""

from __future__ import annotations

import argparse
import base64
import gc
import gzip
import importlib.util
import json
import os
import random
import re
import statistics
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FUNCTION_DIR = REPO / "opskit" / "functions" / "log_processor"
LAYER_DIR = REPO / "opskit" / "layers" / "common" / "python"

MAX_FLOOR_RATIO = 1.5
MIN_NAIVE_SPEEDUP = 7.0
MAX_BOMB_PEAK_OF_CAP = 2.0
REQUEST_ID = "8f5a1c2e-3b4d-4e5f-a6b7-c8d9e0f1a2b3"

SHORT_ROUTINE = (
    "START RequestId: {rid8}",
    "END RequestId: {rid8}",
    "INFO order {n} stored",
    "cache hit id=1500",
    "GET /orders 200 {ms}ms",
    "status=200 size=503",
    "took 503ms",
    "DEBUG rows={n}",
)
SHORT_ERRORS = (
    "ERROR charge {n}",
    "upload failed",
    "Exception: bad input",
    "HTTP/1.1 503",
    "Timeout",
    "retry failed",
)
SHORT_CRITICAL = ("FATAL: halt", "Out of memory", "Disk /var full", "status=500")

LONG_ROUTINE = (
    "START RequestId: {rid} Version: $LATEST",
    "END RequestId: {rid}",
    "REPORT RequestId: {rid}\tDuration: {ms}.21 ms\tBilled Duration: {ms} ms\t"
    "Memory Size: 512 MB\tMax Memory Used: 87 MB",
    "2026-11-25T10:15:30.123Z\t{rid}\tINFO\torder {n} stored in {ms}ms (id=1500, size=5012 bytes)",
    '10.0.1.23 - - [25/Nov/2026:10:15:30 +0000] "GET /api/orders/{n} HTTP/1.1" 200 5031',
    '{{"level":"INFO","location":"handler:42","message":"order stored","status":200,'
    '"service":"orders","duration_ms":{ms}}}',
    "2026-11-25T10:15:30.123Z\t{rid}\tDEBUG\tfetched {n} rows from orders in {ms}ms",
    "2026-11-25T10:15:30.123Z\t{rid}\tWARN\tslow query took 1503ms rows={n}",
)
LONG_ERRORS = (
    "2026-11-25T10:15:30.123Z\t{rid}\tERROR\tfailed to charge card for order {n}",
    "2026-11-25T10:15:30.123Z\t{rid}\tERROR\tUnhandled exception in worker {n}",
    '10.0.1.23 - - [25/Nov/2026:10:15:30 +0000] "POST /api/pay HTTP/1.1" 503 312',
    "2026-11-25T10:15:30.123Z {rid} Task timed out after 3.00 seconds",
    "2026-11-25T10:15:30.123Z\t{rid}\tWARN\tConnection to cache-1 failed: refused",
)
LONG_CRITICAL = (
    "2026-11-25T10:15:30.123Z\t{rid}\tFATAL\tdatabase connection pool: connection failed",
    "2026-11-25T10:15:30.123Z\t{rid}\tERROR\tOut of memory: killed process {n}",
    '{{"level":"ERROR","message":"payment provider answered","status":500,"order":{n}}}',
)


def lines(
    rng: random.Random,
    count: int,
    routine: tuple[str, ...],
    errors: tuple[str, ...],
    critical: tuple[str, ...],
) -> Iterator[str]:
    """~95 % routine, ~4 % error, ~1 % critical lines."""
    for _ in range(count):
        draw = rng.random()
        pool = critical if draw < 0.01 else errors if draw < 0.05 else routine
        yield rng.choice(pool).format(
            rid=REQUEST_ID, rid8=REQUEST_ID[:8], n=rng.randrange(10**6), ms=rng.randrange(2000)
        )


def subscription_event(messages: list[str]) -> tuple[dict[str, Any], int]:
    """A DATA_MESSAGE as CloudWatch Logs delivers it (56-digit ids, epoch-ms timestamps),
    and the size of its JSON before compression."""
    first_id = 37263198473862918273648192837465019283746501928374650192
    document = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "/aws/lambda/orders",
        "logStream": "2026/11/25/[$LATEST]0123456789abcdef0123456789abcdef",
        "subscriptionFilters": ["opskit-prod"],
        "logEvents": [
            {"id": str(first_id + i * 7919), "timestamp": 1764065730000 + i // 7, "message": m}
            for i, m in enumerate(messages)
        ],
    }
    raw = json.dumps(document, separators=(",", ":")).encode()
    return {"awslogs": {"data": base64.b64encode(gzip.compress(raw)).decode()}}, len(raw)


def gzip_bomb(total_bytes: int) -> bytes:
    """``total_bytes`` of zeros as one gzip stream, made a MiB at a time."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(total_bytes // len(block))]
    return b"".join([*parts, compressor.flush()])


def load_handler() -> ModuleType:
    os.environ.update(
        ALERT_TOPIC_ARN="arn:aws:sns:eu-west-1:123456789012:critical",
        AWS_REGION="eu-west-1",
        ENVIRONMENT_NAME="bench",
        POWERTOOLS_LOG_LEVEL="WARNING",  # one log line per alert is not what is measured
    )
    for key in ("ERROR_PATTERNS", "CRITICAL_PATTERNS", "RATE_LIMIT_TABLE"):
        os.environ.pop(key, None)
    sys.path[:0] = [str(FUNCTION_DIR), str(LAYER_DIR)]
    spec = importlib.util.spec_from_file_location("log_processor_app", FUNCTION_DIR / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)

    from log_processing.alerts import LocalRateLimiter
    from opskit_common import clients, reports

    published: list[dict[str, Any]] = []

    def publish(topic_arn: str, **kwargs: Any) -> str:
        published.append(kwargs)
        return "message-id"

    reports.publish = publish
    clients.client = lambda name, **kwargs: None
    vars(module).update(emit=lambda line: None, _limiter=LocalRateLimiter(window_seconds=0))
    return module


def naive_counter() -> Callable[[dict[str, Any]], tuple[int, int, int]]:
    """The straightforward implementation: ``re.search`` per pattern per line, stopping at
    the first pattern that matches (a critical line needs no error pattern)."""
    from log_processing.patterns import DEFAULT_CRITICAL_PATTERNS, DEFAULT_ERROR_PATTERNS

    critical = [p.source for p in DEFAULT_CRITICAL_PATTERNS]
    errors = [p.source for p in DEFAULT_ERROR_PATTERNS]

    def count(event: dict[str, Any]) -> tuple[int, int, int]:
        document = json.loads(gzip.decompress(base64.b64decode(event["awslogs"]["data"])))
        error_count = critical_count = 0
        for entry in document["logEvents"]:
            line = entry["message"]
            is_critical = any(re.search(p, line, re.IGNORECASE) for p in critical)
            is_error = is_critical or any(re.search(p, line, re.IGNORECASE) for p in errors)
            critical_count += is_critical
            error_count += is_error
        return len(document["logEvents"]), error_count, critical_count

    return count


def cpu_seconds(work: Callable[[], object]) -> float:
    gc.collect()
    start = time.process_time()
    work()
    return time.process_time() - start


def compare(
    name: str, module: ModuleType, event: dict[str, Any], size: int, samples: int
) -> tuple[float, float]:
    data = event["awslogs"]["data"]
    config = module.settings()
    naive = naive_counter()

    def handler() -> dict[str, Any]:
        return module.process(event, config)

    def floor() -> object:
        return json.loads(gzip.decompress(base64.b64decode(data)))

    body = json.loads(handler()["body"])
    expected = naive(event)
    found = (body["processed_events"], body["error_count"], body["critical_errors"])
    assert found == expected, f"handler counted {found}, naive {expected}"

    floors: list[float] = []
    handlers: list[float] = []
    for i in range(samples):
        pair = [(floor, floors), (handler, handlers)]
        for work, times in pair if i % 2 == 0 else reversed(pair):
            times.append(cpu_seconds(work))
    naives = [cpu_seconds(lambda: naive(event)) for _ in range(max(3, samples // 8))]

    floor_ms = statistics.median(floors) * 1000
    handler_ms = statistics.median(handlers) * 1000
    naive_ms = statistics.median(naives) * 1000
    # Each handler sample against the floor sample next to it: both ran under the same load.
    ratio = statistics.median(h / f for h, f in zip(handlers, floors, strict=True))
    speedup = naive_ms / handler_ms
    print(
        f"--- {name}: {found[0]} events, {size / 1e6:.2f} MB decompressed, "
        f"{found[1]} error lines, {found[2]} critical"
    )
    print(f"floor json.loads(gzip(b64)):  median {floor_ms:7.2f} ms CPU")
    print(
        f"handler (no AWS calls):       median {handler_ms:7.2f} ms CPU  "
        f"ratio {ratio:.2f}  (target <= {MAX_FLOOR_RATIO})"
    )
    print(
        f"naive re.search per pattern:  median {naive_ms:7.2f} ms CPU  "
        f"handler {speedup:.1f}x faster  (target >= {MIN_NAIVE_SPEEDUP:g}x)"
    )
    return ratio, speedup


def bomb(module: ModuleType) -> tuple[float, float]:
    from log_processing.payload import DEFAULT_MAX_DECOMPRESSED_BYTES, MalformedPayloadError

    compressed = gzip_bomb(1024**3)
    event = {"awslogs": {"data": base64.b64encode(compressed).decode()}}
    config = module.settings()
    tracemalloc.start()
    start = time.process_time()
    try:
        module.process(event, config)
    except MalformedPayloadError as error:
        assert error.kind == "too-large", error
    else:
        raise AssertionError("the bomb was not rejected")
    seconds = time.process_time() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    share = peak / DEFAULT_MAX_DECOMPRESSED_BYTES
    print(
        f"--- gzip bomb: 1 GiB of zeros, {len(compressed) / 1e6:.2f} MB compressed, "
        f"cap {DEFAULT_MAX_DECOMPRESSED_BYTES / 2**20:.0f} MiB"
    )
    print(
        f"rejected in {seconds * 1000:.1f} ms CPU; peak traced memory "
        f"{peak / 2**20:.1f} MiB = {share:.2f}x the cap  (target <= {MAX_BOMB_PEAK_OF_CAP:g}x)"
    )
    return share, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=61)
    args = parser.parse_args()
    module = load_handler()
    rng = random.Random(20261125)

    spec_event, spec_size = subscription_event(
        list(lines(rng, 10_000, SHORT_ROUTINE, SHORT_ERRORS, SHORT_CRITICAL))
    )
    ratio, speedup = compare("spec payload", module, spec_event, spec_size, args.samples)
    long_event, long_size = subscription_event(
        list(lines(rng, 10_000, LONG_ROUTINE, LONG_ERRORS, LONG_CRITICAL))
    )
    long_ratio, long_speedup = compare(
        "longer Lambda-shaped lines (information)", module, long_event, long_size, args.samples
    )
    share, _ = bomb(module)

    results = [
        ("log_processor_floor_ratio", ratio, MAX_FLOOR_RATIO, ratio <= MAX_FLOOR_RATIO),
        (
            "log_processor_time_vs_naive",
            1 / speedup,
            round(1 / MIN_NAIVE_SPEEDUP, 3),
            speedup >= MIN_NAIVE_SPEEDUP,
        ),
        ("log_processor_bomb_peak_of_cap", share, MAX_BOMB_PEAK_OF_CAP, share <= 2.0),
    ]
    print(f"(longer lines: ratio {long_ratio:.2f}, {long_speedup:.1f}x faster than naive)")
    for name, figure, target, ok in results:
        print(f"RESULT {name} {figure:.3f} {target} {'ok' if ok else 'missed'}")
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
