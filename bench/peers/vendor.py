"""The peer benchmark's fake API: the fake vendor's page_number style over the same records
(apilake_dev.vendors.fake.Dataset), every page's body encoded once at start, so that serving a page
costs a socket write and the API is not what the contenders wait on (this machine may have 2 CPUs).

    GET /page_number/<dataset>?page=N&per_page=S   {"data": [...], "meta": {"page": N, "total": T}}

``per_page`` must be the page size the server was started with (400 otherwise); a page past the
last one is empty. Control (the harness, between runs):

    POST /__arm?throttle_every=K   reset the counters; with K > 0, pages K/2, K/2 + K, ... of each
                                   dataset answer their first request 429 + ``Retry-After: 1``
    GET  /__stats                  {"served": pages answered 200, "throttled": 429s answered,
                                    "repeated": 200s for a page already answered 200}

Run as ``python -m bench.peers.vendor --datasets a,b --pages 500 --records 100``: it prints its base
URL on the first line of stdout and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from apilake_dev.vendors.fake import Dataset


class PeerState:
    def __init__(self, datasets: list[str], pages: int, records: int) -> None:
        self.page_size = records
        self.pages = pages
        self.bodies: dict[str, list[bytes]] = {}
        total = pages * records
        for name in datasets:
            rows = Dataset(name, total=total).records(None, None)
            self.bodies[name] = [
                json.dumps(
                    {"data": rows[(p - 1) * records : p * records], "meta": {"page": p, "total": total}}
                ).encode()
                for p in range(1, pages + 1)
            ]
        self.empty = {
            name: [json.dumps({"data": [], "meta": {"page": 0, "total": total}}).encode()] for name in datasets
        }
        self.lock = threading.Lock()
        self.throttle: set[tuple[str, int]] = set()
        self.counts: Counter[str] = Counter()
        self.answered: set[tuple[str, int]] = set()

    def arm(self, throttle_every: int) -> int:
        with self.lock:
            self.counts.clear()
            self.answered.clear()
            self.throttle = {
                (name, page)
                for name in self.bodies
                for page in (
                    range(max(throttle_every // 2, 1), self.pages + 1, throttle_every) if throttle_every else ()
                )
            }
            return len(self.throttle)

    def take(self, name: str, page: int) -> bool:
        """True when this request is to be answered 429 (each armed page once); counts the answer."""
        with self.lock:
            if (name, page) in self.throttle:
                self.throttle.discard((name, page))
                self.counts["throttled"] += 1
                return True
            self.counts["served"] += 1
            if (name, page) in self.answered:
                self.counts["repeated"] += 1
            self.answered.add((name, page))
            return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body are two writes: without TCP_NODELAY the body waits for the client's
    # delayed ACK of the head (~40 ms a page on Linux), and the API, not the contender, sets the pace.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass

    def do_GET(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        if parts.path == "/__stats":
            with state.lock:
                return self._send(200, json.dumps(dict(state.counts)).encode())
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) != 2 or segments[0] != "page_number" or segments[1] not in state.bodies:
            return self._send(404, b'{"error": "no such endpoint"}')
        name = segments[1]
        try:
            page, size = int(query.get("page", "1")), int(query.get("per_page", str(state.page_size)))
        except ValueError:
            return self._send(400, b'{"error": "page and per_page are integers"}')
        if size != state.page_size or page < 1:
            return self._send(400, f'{{"error": "per_page must be {state.page_size}, page >= 1"}}'.encode())
        if state.take(name, page):
            return self._send(429, b'{"error": "slow down"}', {"Retry-After": "1"})
        pages = state.bodies[name]
        self._send(200, pages[page - 1] if page <= len(pages) else state.empty[name][0])

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if parts.path != "/__arm":
            return self._send(404, b'{"error": "no such endpoint"}')
        every = int(parse_qs(parts.query).get("throttle_every", ["0"])[-1])
        armed = self.server.state.arm(every)
        self._send(200, json.dumps({"armed": armed}).encode())

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: PeerState

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a process ending with idle keep-alive connections) is no error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--datasets", required=True, help="dataset names, a,b")
    parser.add_argument("--pages", type=int, required=True, help="pages per dataset")
    parser.add_argument("--records", type=int, required=True, help="records per page")
    args = parser.parse_args(argv)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = PeerState(args.datasets.split(","), args.pages, args.records)
    host, port = server.server_address[:2]
    threading.Thread(target=server.serve_forever, name="peer-vendor", daemon=True).start()
    print(f"http://{host!s}:{port}", flush=True)
    sys.stdin.read()  # until the harness closes it
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
