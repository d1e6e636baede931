"""Many MQTT CONNECTs at once over plain sockets: a fleet logging in, or a flood of wrong passwords.

paho runs a network thread per client, so a thousand paho clients are a
thousand threads. A login needs none of that: each one here is a
non-blocking socket that sends one CONNECT (MQTT 3.1.1, clean session) and
reads one CONNACK, and a single selector drives them all. The connections
that were accepted stay open until every login is answered (the broker holds
them all at once, as it would a fleet), then each sends DISCONNECT.

Used by benchmarks/connect.py and the wrong-password flood in tests/faults.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from simulator import wire

CONNACK = wire.CONNACK << 4
DISCONNECT = wire.DISCONNECT_PACKET
ACCEPTED = 0
NOT_AUTHORIZED = 5  # what Mosquitto answers a wrong password with (MQTT 3.1.1 return code)


@dataclass(frozen=True, slots=True)
class Login:
    """One CONNECT: its client id and credentials."""

    client_id: str
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What the broker answered one login, and when (seconds since the storm began)."""

    login: Login
    return_code: int | None  # the CONNACK's; None: the connection failed or no CONNACK came in time
    at_s: float
    error: str = ""


@dataclass(frozen=True)
class Storm:
    """Every login's answer."""

    answers: list[Answer]

    def with_code(self, code: int) -> list[Answer]:
        """The answers that carried this CONNACK return code."""
        return [answer for answer in self.answers if answer.return_code == code]

    @property
    def unanswered(self) -> list[Answer]:
        """Logins that got no CONNACK: refused connection, closed early, or out of time."""
        return [answer for answer in self.answers if answer.return_code is None]

    def last_s(self, code: int) -> float:
        """When the last CONNACK with this code came (0.0 if none did)."""
        return max((answer.at_s for answer in self.with_code(code)), default=0.0)


def connect_packet(login: Login, *, keepalive_s: int = 60) -> bytes:
    """An MQTT 3.1.1 CONNECT with clean session, username and password (simulator/wire.py, the devices' own)."""
    return wire.connect_packet(login.client_id, username=login.username, password=login.password,
                               keepalive_s=keepalive_s, clean_session=True)


@dataclass(slots=True)
class _Pending:
    login: Login
    sock: socket.socket
    packet: bytes
    received: bytearray = field(default_factory=bytearray)


def connect_all(
    host: str, port: int, logins: Sequence[Login], *, timeout_s: float = 30.0,
    source_hosts: Sequence[str] = (),
) -> Storm:
    """Open a connection for every login at once, send each CONNECT, and collect the CONNACKs.

    `source_hosts` (e.g. 127.0.0.2, 127.0.0.3, ...) spreads the connections
    over several local addresses, each with its own ~28,000 ephemeral ports.
    The process needs a file descriptor per login: raise RLIMIT_NOFILE first.
    """
    selector = selectors.DefaultSelector()
    answers: list[Answer] = []
    started = time.monotonic()
    sources = itertools.cycle(source_hosts) if source_hosts else None
    try:
        for login in logins:
            pending = _open(login, host, port, next(sources) if sources else None)
            selector.register(pending.sock, selectors.EVENT_WRITE, pending)
        _drive(selector, answers, started, timeout_s)
    finally:
        for key in list(selector.get_map().values()):
            pending = key.data
            answers.append(Answer(pending.login, None, time.monotonic() - started, "no CONNACK in time"))
            pending.sock.close()
        selector.close()
    return Storm(answers)


def _open(login: Login, host: str, port: int, source: str | None) -> _Pending:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if source is not None:
        sock.bind((source, 0))
    code = sock.connect_ex((host, port))
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(code, f"connect to {host}:{port} failed at once: {errno.errorcode.get(code, code)}")
    return _Pending(login, sock, connect_packet(login))


def _drive(selector: selectors.BaseSelector, answers: list[Answer], started: float, timeout_s: float) -> None:
    """Send each CONNECT once its socket connected, read each CONNACK; answered sockets leave the selector."""
    accepted: list[socket.socket] = []
    try:
        while selector.get_map() and (left := started + timeout_s - time.monotonic()) > 0:
            for key, events in selector.select(min(left, 1.0)):
                answer = _step(selector, key.data, events, time.monotonic() - started)
                if answer is None:
                    continue
                answers.append(answer)
                selector.unregister(key.data.sock)
                if answer.return_code == ACCEPTED:
                    accepted.append(key.data.sock)
                else:
                    key.data.sock.close()
    finally:
        for sock in accepted:
            with contextlib.suppress(OSError):  # the broker closed it meanwhile: no goodbye needed
                sock.send(DISCONNECT)
            sock.close()


def _step(selector: selectors.BaseSelector, pending: _Pending, events: int, at_s: float) -> Answer | None:
    """Advance one login; its Answer once it has one."""
    if events & selectors.EVENT_WRITE:
        code = pending.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            return Answer(pending.login, None, at_s, f"connect: {errno.errorcode.get(code, code)}")
        try:
            pending.sock.sendall(pending.packet)  # ~100 bytes into an empty send buffer
        except OSError as exc:
            return Answer(pending.login, None, at_s, f"send: {exc}")
        selector.modify(pending.sock, selectors.EVENT_READ, pending)
        return None
    try:
        chunk = pending.sock.recv(4 - len(pending.received))
    except OSError as exc:
        return Answer(pending.login, None, at_s, f"recv: {exc}")
    if not chunk:
        return Answer(pending.login, None, at_s, "closed by the broker before its CONNACK")
    pending.received += chunk
    if len(pending.received) < 4:
        return None
    if pending.received[0] != CONNACK:
        return Answer(pending.login, None, at_s, f"expected CONNACK, got packet type {pending.received[0]:#x}")
    return Answer(pending.login, pending.received[3], at_s)
