"""The URLs of the servers devstack starts, built one way: credentials and names percent-encoded.

Every postgresql:// and mqtt:// URL the tests, benchmarks and scripts/local-stack
hand to a program comes from here, so a password holding @ / % : reaches the
server intact whichever server it is for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from devstack.processes import LOCALHOST

# libpq picks, of the hosts a URL names, the one that accepts writes (the primary).
READ_WRITE = {"target_session_attrs": "read-write"}


def login_password(role: str) -> str:
    """The password of a test login: distinct from its name, so a test can tell a leak from a mention.

    It holds @ / % : on purpose: each breaks a URL it is pasted into raw (`quote(pw, safe="")` it).
    """
    return f"{role}-p@ss/w%41:rd"


def credentials(user: str, password: str | None = None) -> str:
    """`user` or `user:password`, each percent-encoded, for the part of a URL before the @."""
    login = quote(user, safe="")
    return login if password is None else f"{login}:{quote(password, safe='')}"


def server_url(
    scheme: str, addresses: Sequence[str], *, user: str | None = None, password: str | None = None,
    path: str = "", query: Mapping[str, str | int] | None = None,
) -> str:
    """scheme://[user[:password]@]address[,address...][/path][?query]: the one way devstack builds a URL.

    `addresses` are host:port (several for libpq's multi-host URLs, none for a
    Unix socket named in `query`); `path` is percent-encoded as one segment.
    """
    login = "" if user is None else credentials(user, password) + "@"
    tail = f"/{quote(path, safe='')}" if path else ""
    if query:
        tail += "?" + urlencode(query, quote_via=quote, safe="/")
    return f"{scheme}://{login}{','.join(addresses)}{tail}"


def postgres_url(
    *ports: int, user: str = "postgres", password: str | None = None, dbname: str = "postgres",
    read_write: bool = False, host: str = LOCALHOST,
) -> str:
    """A postgresql:// URL of the servers on `ports`; `read_write` asks libpq for the one that accepts writes."""
    return server_url("postgresql", [f"{host}:{port}" for port in ports], user=user, password=password,
                      path=dbname, query=READ_WRITE if read_write else None)


def postgres_socket_url(socket_dir: Path, port: int, dbname: str = "postgres") -> str:
    """The superuser's URL through the Unix socket in `socket_dir` (trusted, whatever TCP logins need)."""
    return server_url("postgresql", [], user="postgres", path=dbname,
                      query={"host": str(socket_dir), "port": port})


def mqtt_url(port: int, user: str, password: str, *, tls: bool = False, host: str = LOCALHOST) -> str:
    """mqtt:// (mqtts:// with `tls`) URL of a broker for an account."""
    return server_url("mqtts" if tls else "mqtt", [f"{host}:{port}"], user=user, password=password)


def with_login(url: str, user: str, password: str | None = None, *, dbname: str | None = None) -> str:
    """`url` logging in as `user` with `password` (none if None), both percent-encoded; on `dbname` if given.

    The host, port and query stay as `url` has them, so it serves the URL of
    any backend (an external TEST_DATABASE_URL too) and MQTT URLs alike.
    """
    parts = urlsplit(url)
    host_port = parts.netloc.rpartition("@")[2]
    path = parts.path if dbname is None else "/" + quote(dbname, safe="")
    return urlunsplit(parts._replace(netloc=f"{credentials(user, password)}@{host_port}", path=path))


def login_url(url: str, role: str) -> str:
    """`url` logging in as a test login role with its password (login_password) instead of the URL's own."""
    return with_login(url, role, login_password(role))
