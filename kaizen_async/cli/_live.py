"""``kaizen tail``: print a session's entries as they are written, until stopped.

Both files and stores are polled, because the writer is usually another process. Each
poll of a ``.kaizen`` file opens it read-only, checks that the last entry printed is still
there with the same hash (so a file replaced by another history is noticed) and reads what
follows; a store is asked for the entries after the last seq. The hash chain is checked
entry by entry either way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator, Collection
from contextlib import aclosing
from pathlib import Path

import anyio
import click

from .._canonical import ZERO_HASH, decode
from .._exceptions import SessionCorruptedError, SessionNotFoundError
from .._state import SCHEMA_VERSION
from .._trajectory import (
    AGENT_ID,
    CONTENT,
    ENTRY_TYPE,
    HASH,
    PREV_HASH,
    SEQ,
    TIMESTAMP,
    EntryType,
    Record,
    record_hash,
)
from ._common import SESSION_HELP, json_option, run, session_argument, wide_option
from ._errors import DIFFERENT, OK, BadInput
from ._naming import SessionName, parse_session_names
from ._output import compact, emit_json, entry_json, short_time
from ._sources import open_store

__all__ = ["FileFollower", "tail"]

_ENTRY_TYPES = [kind.value for kind in EntryType]


class FileFollower:
    """Reads the new entries of a ``.kaizen`` file, read-only, checking the chain."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.last_seq = 0
        self.last_hash = ZERO_HASH

    def _connect(self) -> sqlite3.Connection:
        target = Path(self.path)
        if not target.exists():
            raise FileNotFoundError(2, "No such file or directory", self.path)
        if target.is_dir():
            raise IsADirectoryError(21, "Is a directory", self.path)
        uri = f"{target.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)

    def poll(self) -> list[Record]:
        """The entries written since the last poll (all of them on the first)."""
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise SessionCorruptedError(f"{self.path} cannot be opened: {exc}") from None
        try:
            return self._read(conn)
        except sqlite3.DatabaseError as exc:
            raise SessionCorruptedError(
                f"{self.path} is not a readable .kaizen file: {exc}"
            ) from None
        finally:
            conn.close()

    def _read(self, conn: sqlite3.Connection) -> list[Record]:
        conn.execute("BEGIN")  # one snapshot for the check and the read
        meta = dict(conn.execute("SELECT key, value FROM metadata"))
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise BadInput(
                f"{self.path}: tail follows schema {SCHEMA_VERSION} files; this one is schema "
                f"{meta.get('schema_version')} (load and save it with the library to convert)"
            )
        if self.last_seq:
            row = conn.execute(
                "SELECT hash FROM trajectory WHERE seq = ?", (self.last_seq,)
            ).fetchone()
            if row is None or row[0] != self.last_hash:
                raise SessionCorruptedError(
                    f"{self.path} was replaced: entry {self.last_seq} is no longer the one "
                    "printed (another history was saved over it)",
                    seq=self.last_seq,
                )
        rows = conn.execute(
            "SELECT seq, timestamp, agent_id, entry_type, CAST(content_json AS BLOB), "
            "prev_hash, hash FROM trajectory WHERE seq > ? ORDER BY seq",
            (self.last_seq,),
        )
        new: list[Record] = []
        for row in rows:
            record: Record = row
            expected = self.last_seq + 1
            if record[SEQ] != expected:
                raise SessionCorruptedError(
                    f"{self.path}: seq {record[SEQ]} where {expected} was expected", seq=expected
                )
            if record[PREV_HASH] != self.last_hash or record_hash(record) != record[HASH]:
                raise SessionCorruptedError(
                    f"{self.path}: entry {record[SEQ]} does not chain onto entry "
                    f"{record[SEQ] - 1} (tampered?)",
                    seq=record[SEQ],
                )
            new.append(record)
            self.last_seq, self.last_hash = record[SEQ], record[HASH]
        return new


async def follow_file(path: str, interval: float) -> AsyncGenerator[list[Record], None]:
    """Batches of new entries of a file: everything first, then what each poll finds."""
    follower = FileFollower(path)
    while True:
        yield follower.poll()
        await anyio.sleep(interval)


def _line(record: Record, wide: bool) -> str:
    content = compact(decode(record[CONTENT]))
    if not wide and len(content) > 160:
        content = content[:159] + "…"
    return (
        f"{record[SEQ]:>6}  {short_time(record[TIMESTAMP]):<23}  {record[AGENT_ID]:<18}  "
        f"{record[ENTRY_TYPE]:<19}  {content}"
    )


def _wanted(record: Record, types: Collection[str], agent: str | None) -> bool:
    return (not types or record[ENTRY_TYPE] in types) and (
        agent is None or record[AGENT_ID] == agent
    )


@click.command(epilog=SESSION_HELP)
@session_argument()
@click.option(
    "-n",
    "--lines",
    "last",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    metavar="N",
    help="Start with the last N entries already written.",
)
@click.option(
    "--since",
    "since_seq",
    type=click.IntRange(min=0),
    metavar="SEQ",
    help="Start with every entry after this seq instead (0: the whole history).",
)
@click.option(
    "--type",
    "entry_types",
    multiple=True,
    type=click.Choice(_ENTRY_TYPES),
    metavar="TYPE",
    help="Only entries of this type (repeat for several).",
)
@click.option("--agent", "agent_id", metavar="AGENT", help="Only entries written by this agent.")
@click.option(
    "--until-seq",
    type=click.IntRange(min=1),
    metavar="SEQ",
    help="Stop once the entry with this seq has been written (exit 0).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop after this long (exit 0; exit 1 when --until-seq was not reached by then).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.2,
    show_default=True,
    metavar="SECONDS",
    help="How often the file or store is polled for new entries.",
)
@wide_option()
@json_option("Print each entry as one JSON object per line (TrajectoryEntry.to_dict()).")
def tail(
    session: tuple[str, ...],
    last: int,
    since_seq: int | None,
    entry_types: tuple[str, ...],
    agent_id: str | None,
    until_seq: int | None,
    timeout: float | None,
    interval: float,
    wide: bool,
    as_json: bool,
) -> int:
    """Follow a session live: print its entries as they are written, until Ctrl-C.

    Starts with the last 10 entries (-n, or --since SEQ), then prints each new entry as
    it is committed. Ends with Ctrl-C (exit 0), at --until-seq, or after --timeout.
    """
    name = parse_session_names(session, count=1)[0]

    def emit(record: Record) -> None:
        if as_json:
            emit_json(entry_json(record))
        else:
            click.echo(_line(record, wide))

    async def body() -> int:
        reached = False
        with anyio.move_on_after(timeout):
            first = True
            # closed here, in this task, when left early: the store it holds open must be
            # left by the task that entered it (not by the loop's generator finalizer)
            async with aclosing(_follow(name, interval)) as batches:
                async for batch in batches:
                    shown = batch
                    if first:
                        if since_seq is not None:
                            shown = [r for r in batch if r[SEQ] > since_seq]
                        else:
                            matching = [r for r in batch if _wanted(r, entry_types, agent_id)]
                            shown = matching[-last:] if last else []
                        first = False
                    for record in shown:
                        if _wanted(record, entry_types, agent_id):
                            emit(record)
                    if until_seq is not None and batch and batch[-1][SEQ] >= until_seq:
                        reached = True
                        break
        if until_seq is not None and not reached:
            click.echo(f"kaizen: seq {until_seq} was not written within {timeout}s", err=True)
            return DIFFERENT
        return OK

    try:
        return run(body)
    except KeyboardInterrupt:
        return OK  # Ctrl-C is how a tail is meant to end


async def follow_store(name: SessionName, interval: float) -> AsyncGenerator[list[Record], None]:
    """Batches of new entries of a stored session, read by polling the store.

    Not ``hub.subscribe``: that follows the commits of the hub in this process, while the
    session being tailed is written by another process (opening it in a hub here could
    also write to it, closing steps that are in fact running over there).
    """
    assert name.store is not None and name.session_id is not None
    session_id = name.session_id
    async with open_store(name.store) as store:
        try:
            await store.info(session_id)
        except SessionNotFoundError:
            raise BadInput(f"no session {session_id!r} in {name.store}") from None
        last_seq, last_hash = 0, ZERO_HASH
        while True:
            batch = await store.read(session_id, since_seq=last_seq)
            for record in batch:
                if record[SEQ] != last_seq + 1 or record[PREV_HASH] != last_hash:
                    raise SessionCorruptedError(
                        f"session {session_id!r} in {name.store}: entry {record[SEQ]} does "
                        f"not chain onto entry {last_seq}",
                        seq=record[SEQ],
                    )
                last_seq, last_hash = record[SEQ], record[HASH]
            yield batch
            await anyio.sleep(interval)


def _follow(name: SessionName, interval: float) -> AsyncGenerator[list[Record], None]:
    if name.path is not None:
        return follow_file(name.path, interval)
    return follow_store(name, interval)
