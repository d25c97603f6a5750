"""How the command line names a session: a ``.kaizen`` file, or a store URL and an id.

``kaizen log run.kaizen`` names a file; ``kaizen log sqlite:///sessions.db order-42`` names
session ``order-42`` in an SQLite store. As in SQLAlchemy URLs, ``sqlite:///sessions.db`` is
a path relative to the working directory and ``sqlite:////abs/path.db`` an absolute one.
A command taking several sessions (``kaizen diff A B``) reads them from one list of
arguments: a URL always takes the argument after it as its id.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from ._errors import BadInput, Unavailable

__all__ = ["SessionName", "StoreURL", "parse_session_names", "parse_store_url"]

_POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class StoreURL:
    """A store named by URL; only SQLite (``path``: the database file) is supported yet."""

    url: str
    path: str

    @property
    def abspath(self) -> str:
        return os.path.abspath(self.path)

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class SessionName:
    """One session named on the command line: a file ``path``, or ``store`` + ``session_id``."""

    path: str | None = None
    store: StoreURL | None = None
    session_id: str | None = None

    @property
    def is_file(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        return f"{self.store} {self.session_id}"


def is_url(token: str) -> bool:
    """Whether a command-line argument is a store URL (``scheme://...``) rather than a path."""
    scheme, sep, _ = token.partition("://")
    return bool(sep) and scheme.replace("+", "").replace("-", "").isalnum()


def parse_store_url(text: str) -> StoreURL:
    """A store URL; raises :class:`BadInput` for a malformed one and :class:`Unavailable` for
    a kind of store this version cannot open yet (PostgreSQL)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise BadInput(f"{text!r} is not a store URL (expected sqlite:///PATH)")
    kind = scheme.split("+", 1)[0].lower()
    if kind in _POSTGRES_SCHEMES:
        raise Unavailable(
            f"{scheme}:// stores are not supported yet (only sqlite:///PATH); "
            "a PostgreSQL store is planned"
        )
    if kind != "sqlite":
        raise BadInput(f"unknown store URL scheme {scheme!r} in {text!r} (expected sqlite:///PATH)")
    if "+" in scheme:
        raise BadInput(f"{text!r}: driver names are not supported (use plain sqlite:///PATH)")
    if "?" in rest or "#" in rest:
        raise BadInput(f"{text!r}: URL options are not supported (use plain sqlite:///PATH)")
    if not rest.startswith("/"):
        raise BadInput(
            f"{text!r} names a host; a SQLite URL is sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path = unquote(rest[1:])  # sqlite:///x.db -> "x.db"; sqlite:////x.db -> "/x.db"
    if not path or path == ":memory:":
        raise BadInput(f"{text!r} names no database file (an in-memory database holds no sessions)")
    return StoreURL(text, path)


def parse_session_names(
    tokens: Sequence[str], *, count: int | None = 1, what: str = "SESSION"
) -> list[SessionName]:
    """Split arguments into session names: a path is one argument, a URL and its id two.

    ``count`` is how many sessions the command takes (None: one or more).
    """
    names: list[SessionName] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if is_url(token):
            store = parse_store_url(token)
            if index + 1 >= len(tokens):
                raise BadInput(f"{token} needs a session id after it: {token} ID")
            session_id = tokens[index + 1]
            if not session_id.strip():
                raise BadInput(f"{token}: the session id is empty")
            names.append(SessionName(store=store, session_id=session_id))
            index += 2
        else:
            if not token:
                raise BadInput("an empty argument is not a session (a .kaizen file or URL ID)")
            names.append(SessionName(path=token))
            index += 1
    if count is not None and len(names) != count:
        plural = "session" if count == 1 else "sessions"
        raise BadInput(
            f"expected {count} {plural} ({what}: a .kaizen file, or a store URL and an id), "
            f"got {len(names)}: {' '.join(tokens) or '(none)'}"
        )
    if count is None and not names:
        raise BadInput(f"missing {what}: a .kaizen file, or a store URL and an id")
    return names
