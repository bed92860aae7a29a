"""A bare ASGI app under uvicorn (same loop and HTTP parser as ``ups api``): answers every request with a
small JSON body and does nothing else. bench/api.py measures it at the target rate in the same run, as the
latency floor of this machine, the load generator and the HTTP server, without Litestar or UPS.

    python -m bench.floor --port 8123
"""

from __future__ import annotations

import argparse
from typing import Any, Awaitable, Callable

import uvicorn

BODY = b'{"status":"ok"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
