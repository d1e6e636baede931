"""A TCP proxy on 127.0.0.1 that stands for a bad network between a client and the broker.

It can cut every open connection (a dropped link), refuse new ones for a while
(a host that is not back yet), and delay every byte by a fixed latency plus
jitter (a slow link) without limiting throughput: data waits in a delay line,
it is not sent in slow motion. It needs no privileges, unlike `tc netem`.
"""

from __future__ import annotations

import contextlib
import queue
import random
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<target_port>, with faults on demand."""

    def __init__(
        self, target_port: int, *, delay_s: float = 0.0, jitter_s: float = 0.0, seed: int = 1, record: bool = False,
    ) -> None:
        self._target = ("127.0.0.1", target_port)
        # With `record`, each connection's bytes, in order: (client -> server, server -> client).
        self.recorded: list[tuple[bytearray, bytearray]] = []
        if record and (delay_s > 0 or jitter_s > 0):
            raise ValueError("recording a delayed link is not supported")
        self._record = record
        self._delay_s = delay_s
        self._jitter_s = jitter_s
        self._random = random.Random(seed)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._admitting = threading.Event()
        self._admitting.set()
        self.accepted = 0
        threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True).start()

    def url_for(self, url: str) -> str:
        """`url` (mqtt://user:pw@host:port) pointed at this proxy instead, credentials kept."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def cut(self) -> int:
        """Close every open connection; return how many client connections were cut."""
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(sockets) // 2

    def refuse(self) -> None:
        """Close new connections at once until admit() (open ones are not touched)."""
        self._admitting.clear()

    def admit(self) -> None:
        """Forward new connections again."""
        self._admitting.set()

    def close(self) -> None:
        """Stop listening and cut everything."""
        self._server.close()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._admitting.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:  # the broker is down: the client sees its connection closed
                client.close()
                continue
            upstream.settimeout(None)
            taps: tuple[bytearray | None, bytearray | None] = (None, None)
            with self._lock:
                self._open += [client, upstream]
                self.accepted += 1
                if self._record:
                    sent, received = bytearray(), bytearray()
                    self.recorded.append((sent, received))
                    taps = (sent, received)
            for (source, sink), tap in zip(((client, upstream), (upstream, client)), taps, strict=True):
                self._forward(source, sink, tap)

    def _forward(self, source: socket.socket, sink: socket.socket, tap: bytearray | None = None) -> None:
        if self._delay_s <= 0 and self._jitter_s <= 0:
            threading.Thread(target=_pump, args=(source, sink, tap), daemon=True).start()
            return
        line: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
        threading.Thread(target=self._read_into, args=(source, line), daemon=True).start()
        threading.Thread(target=_write_from, args=(line, sink), daemon=True).start()

    def _read_into(self, source: socket.socket, line: queue.SimpleQueue[tuple[float, bytes]]) -> None:
        """Stamp each chunk with the time it may leave; keep order (a later chunk never overtakes)."""
        last_due = 0.0
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                due = time.monotonic() + self._delay_s + self._random.uniform(0, self._jitter_s)
                last_due = max(last_due, due)
                line.put((last_due, data))
        line.put((last_due, b""))


def _pump(source: socket.socket, sink: socket.socket, tap: bytearray | None = None) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            if tap is not None:
                tap += data  # recorded before it is passed on: the recording never lags the peer
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _write_from(line: queue.SimpleQueue[tuple[float, bytes]], sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            due, data = line.get()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the latency being simulated, not a synchronisation
            if not data:
                break
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
