"""A stand-in for a Discord webhook: a real HTTP server on 127.0.0.1 that records posts.

A plain module (no pytest), used by tests/integration/test_watchdog.py and
benchmarks/watchdog_detection.py. Scripted answers (429 with `retry_after`
and Retry-After, 404, 500, ...) are served first, then 204 No Content, as
Discord answers a successful webhook post.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from devstack.processes import LOCALHOST

WEBHOOK_PATH = "/api/webhooks/123456789/stub-secret-token-0123456789abcdef"


@dataclass(frozen=True)
class Post:
    """One request the stub received."""

    path: str
    body: dict[str, Any]
    status: int  # what the stub answered
    at: float = field(default_factory=time.monotonic)

    @property
    def content(self) -> str:
        """The plain `content` line of the message."""
        return str(self.body.get("content", ""))


class DiscordStub:
    """ThreadingHTTPServer on a free port in a daemon thread; use as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._posts: list[Post] = []
        self._answers: deque[tuple[int, dict[str, Any] | None, dict[str, str]]] = deque()
        self._server = ThreadingHTTPServer((LOCALHOST, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="discord-stub", daemon=True)

    @property
    def url(self) -> str:
        """The webhook URL, secret token included."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{WEBHOOK_PATH}"

    @property
    def token(self) -> str:
        """The secret part of the URL, which must never appear in a log."""
        return WEBHOOK_PATH.rsplit("/", 1)[1]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, status: int, body: dict[str, Any] | None = None, *, headers: dict[str, str] | None = None,
               times: int = 1) -> None:
        """Answer the next `times` posts with `status` (and a JSON body and headers), then 204 again."""
        with self._lock:
            self._answers.extend([(status, body, headers or {})] * times)

    def rate_limit(self, retry_after_s: float, *, times: int = 1) -> None:
        """Answer 429 the way Discord does: JSON retry_after and a Retry-After header."""
        body = {"message": "You are being rate limited.", "retry_after": retry_after_s, "global": False}
        self.answer(429, body, headers={"Retry-After": str(retry_after_s)}, times=times)

    def posts(self) -> list[Post]:
        """Every post so far, oldest first (including those answered with an error)."""
        with self._lock:
            return list(self._posts)

    def accepted(self) -> list[Post]:
        """Posts answered with 2xx: the alerts Discord would have shown."""
        return [post for post in self.posts() if 200 <= post.status < 300]

    def _next_answer(self, post_path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        with self._lock:
            answer = self._answers.popleft() if self._answers else (204, None, {})
            self._posts.append(Post(post_path, body, answer[0]))
        return answer

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {"unparseable": True}
                headers: dict[str, str]
                answer: dict[str, Any] | None
                if self.path != WEBHOOK_PATH:
                    status, answer, headers = 404, {"message": "Unknown Webhook", "code": 10015}, {}
                else:
                    status, answer, headers = stub._next_answer(self.path, body)
                payload = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads the recorded posts instead."""

        return Handler
