"""A real HTTP server receiving webhook POSTs in tests (``http.server`` in a thread).

``WebhookReceiver(port)`` reserves nothing until ``start()``: before that (or after
``stop()``) connections to the port are refused, the way a receiver that is down looks.
``status`` is the answer to every POST (503 = up but failing), given after ``delay`` seconds.
Every POST is recorded in ``requests`` when it arrives, whatever the answer (a sender that
gives up waiting may send it again); ``accepted()`` lists the records of the 2xx ones.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.net import free_port


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    @property
    def records(self) -> list[dict[str, Any]]:
        records = json.loads(self.body)
        assert isinstance(records, list)
        return records


@dataclass
class WebhookReceiver:
    port: int = field(default_factory=free_port)
    status: int = 200
    delay: float = 0.0
    requests: list[Posted] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.status
                with receiver._lock:
                    receiver.requests.append(Posted(self.path, dict(self.headers.items()),
                                                    body, status, time.time()))
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True,
                                        name=f"webhook-receiver-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def posted(self, path: str | None = None) -> list[Posted]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def accepted(self, path: str | None = None) -> list[dict[str, Any]]:
        """Records of every 2xx-answered POST, in arrival order (duplicates included)."""
        return [record for posted in self.posted(path) if 200 <= posted.status < 300
                for record in posted.records]

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
