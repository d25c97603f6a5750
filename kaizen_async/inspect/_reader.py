"""Reading sessions for the inspector: through the hub's store, never by opening them.

Opening a session in a hub may write to it (steps left open by a dead process are closed
as interrupted), and another process may be the one writing it. So every page reads the
store's committed data with its own queries (``read`` by seq range and filter,
``list_sessions`` by keyset page, ``info``, ``load``, ``read_blob``): reading never writes,
and a page reads a bounded window of entries however long the session is.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread

from .._canonical import decode, sha256_hex
from .._exceptions import SessionCorruptedError
from .._hub import SessionHub
from .._state import SessionCore
from .._storage import SessionInfo, SessionStore, StoredSession
from .._trajectory import AGENT_ID, CONTENT, ENTRY_TYPE, HASH, SEQ, EntryType, Record
from ._redact import redact_record

__all__ = [
    "PAGE",
    "WINDOW",
    "Filters",
    "Reader",
    "Summary",
    "VerifyResult",
    "Window",
]

#: entries in one timeline window (the session page never sends more at once)
WINDOW = 200
#: entries read from the store per query when scanning
PAGE = 2_000
#: entries a text search scans per request before it offers to scan further
SCAN_BUDGET = 20_000
#: sessions on one page of the sessions list
SESSIONS_PAGE = 50
#: sessions a filtered sessions list scans per request before it offers to go on
SESSIONS_SCAN = 5_000
#: entries looked back (or ahead) to pair a step's start and end across a window's edge:
#: a step longer than this many entries is shown without its other half
STEP_REACH = 20_000

_STATE_SET = EntryType.STATE_SET.value
_STATE_DELETED = EntryType.STATE_DELETED.value
_ARTIFACT_WRITTEN = EntryType.ARTIFACT_WRITTEN.value
_STARTED = EntryType.PLAN_STEP_STARTED.value
_COMPLETED = EntryType.PLAN_STEP_COMPLETED.value
_AGENT_FAILED = EntryType.AGENT_FAILED.value
_PLAN_FAILED = EntryType.PLAN_FAILED.value


@dataclass(frozen=True)
class Filters:
    """What the timeline shows: entry types, one agent, a text, a seq range
    (``since < seq <= until``)."""

    types: tuple[str, ...] | None = None
    agent: str | None = None
    text: str | None = None
    since: int | None = None
    until: int | None = None

    @property
    def narrowing(self) -> bool:
        """Whether entries are filtered out (not just a seq range chosen)."""
        return bool(self.types or self.agent or self.text)


@dataclass
class Window:
    """A bounded slice of the timeline.

    ``records`` are the matching entries, oldest first; entries with ``lower < seq <=
    upper`` were looked at; ``head`` is the session's length when read; ``earlier`` /
    ``later`` say whether there may be more before ``lower`` / after ``upper``.
    """

    records: list[Record]
    lower: int
    upper: int
    head: int
    earlier: bool
    later: bool

    @property
    def at_head(self) -> bool:
        return self.upper >= self.head


@dataclass
class Summary:
    """Counts over a session's entries ``1..upto``, kept and extended as it grows."""

    upto: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failed_steps: int = 0
    interrupted_steps: int = 0
    agent_failures: int = 0
    plan_failures: int = 0
    llm_errors: int = 0
    first_failure: int | None = None

    @property
    def failures(self) -> int:
        return self.failed_steps + self.agent_failures + self.plan_failures + self.llm_errors

    def add(self, record: Record) -> None:
        kind = record[ENTRY_TYPE]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        failed = False
        if kind == _COMPLETED:
            body = _body(record)
            if body.get("success") is False:
                failed = True
                if "step_interrupted" in str(body.get("result_summary", "")):
                    self.interrupted_steps += 1
                else:
                    self.failed_steps += 1
        elif kind == _AGENT_FAILED:
            failed = True
            self.agent_failures += 1
        elif kind == _PLAN_FAILED:
            failed = True
            self.plan_failures += 1
        elif kind == EntryType.LLM_EXCHANGE.value and _body(record).get("error"):
            failed = True
            self.llm_errors += 1
        if failed and self.first_failure is None:
            self.first_failure = record[SEQ]
        self.upto = record[SEQ]


@dataclass(frozen=True)
class VerifyResult:
    """What verification found: ``ok`` up to ``checked`` entries with head ``head_hash``,
    or the first bad seq (``bad_seq``, None when the fault is not one entry's)."""

    ok: bool
    checked: int
    head_hash: str
    bad_seq: int | None = None
    message: str = ""


def _body(record: Record) -> dict[str, Any]:
    try:
        value = decode(record[CONTENT])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def matches_text(record: Record, needle: str) -> bool:
    """Case-insensitive: the text in the entry's agent, type or (shown) content JSON."""
    if needle in record[AGENT_ID].lower() or needle in record[ENTRY_TYPE]:
        return True
    return needle in record[CONTENT].decode("utf-8", "replace").lower()


class Reader:
    """Read-only queries over a hub's store, with model text hidden when asked."""

    def __init__(self, hub: SessionHub, *, show_llm_content: bool) -> None:
        self.hub = hub
        self.show_llm_content = show_llm_content
        self._summaries: dict[str, Summary] = {}
        self._verified: dict[str, tuple[int, str, VerifyResult]] = {}

    @property
    def store(self) -> SessionStore:
        return self.hub.store

    def view(self, record: Record) -> Record:
        """A record as pages show it (model text hidden unless shown)."""
        return record if self.show_llm_content else redact_record(record)

    def _views(self, records: list[Record]) -> list[Record]:
        if self.show_llm_content:
            return records
        return [redact_record(r) for r in records]

    async def read(
        self,
        session_id: str,
        *,
        since: int = 0,
        until: int | None = None,
        types: Collection[str] | None = None,
        agent: str | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[Record]:
        """The store's ``read``, shown as pages show it."""
        records = await self.store.read(
            session_id,
            since_seq=max(since, 0),
            until_seq=until,
            entry_types=list(types) if types else None,
            agent_id=agent,
            limit=limit,
            newest=newest,
        )
        return self._views(records)

    # -- sessions ----------------------------------------------------------------------------

    async def sessions_page(
        self, *, text: str | None = None, after: str | None = None
    ) -> tuple[list[SessionInfo], str | None]:
        """One page of sessions ordered by id after ``after``, those whose id or metadata
        contain ``text``; and the id to continue after (None at the end)."""
        if not text:
            found = await self.store.list_sessions(limit=SESSIONS_PAGE + 1, after=after)
            more = len(found) > SESSIONS_PAGE
            found = found[:SESSIONS_PAGE]
            return found, (found[-1].session_id if more and found else None)
        needle = text.lower()
        out: list[SessionInfo] = []
        scanned = 0
        cursor = after
        while scanned < SESSIONS_SCAN:
            page = await self.store.list_sessions(limit=500, after=cursor)
            if not page:
                return out, None
            for info in page:
                scanned += 1
                cursor = info.session_id
                if needle in info.session_id.lower() or needle in repr(info.metadata).lower():
                    out.append(info)
                    if len(out) == SESSIONS_PAGE:
                        return out, cursor
        return out, cursor

    async def info(self, session_id: str) -> SessionInfo:
        return await self.store.info(session_id)

    async def entry(self, session_id: str, seq: int) -> Record | None:
        found = await self.read(session_id, since=seq - 1, until=seq)
        return found[0] if found else None

    async def head(self, session_id: str) -> tuple[int, str]:
        """(length, head hash), as one committed snapshot."""
        stored = await self.store.load(session_id, tail=1)
        return stored.info.trajectory_length, stored.head_hash

    async def first_and_last(self, session_id: str) -> tuple[Record | None, Record | None]:
        first = await self.store.read(session_id, limit=1)
        last = await self.store.read(session_id, limit=1, newest=True)
        return (first[0] if first else None), (last[0] if last else None)

    # -- the timeline --------------------------------------------------------------------------

    async def window(self, session_id: str, filters: Filters) -> Window:
        """The window ``filters`` asks for: the latest matches at or below ``until`` (or the
        head); with only ``since`` given, the first matches after it."""
        head = (await self.store.info(session_id)).trajectory_length
        floor = max(filters.since or 0, 0)
        ceiling = head if filters.until is None else max(min(filters.until, head), 0)
        forward = filters.since is not None and filters.until is None
        if filters.text:
            return await self._search(session_id, filters, head, floor, ceiling, forward)
        if forward:
            records = await self.read(
                session_id,
                since=floor,
                until=ceiling,
                types=filters.types,
                agent=filters.agent,
                limit=WINDOW + 1,
            )
            later = len(records) > WINDOW
            records = records[:WINDOW]
            upper = records[-1][SEQ] if later else ceiling
            return Window(records, floor, upper, head, floor > 0, later or upper < head)
        records = await self.read(
            session_id,
            since=floor,
            until=ceiling,
            types=filters.types,
            agent=filters.agent,
            limit=WINDOW + 1,
            newest=True,
        )
        earlier = len(records) > WINDOW
        records = records[-WINDOW:] if earlier else records
        lower = records[0][SEQ] - 1 if earlier else floor
        return Window(records, lower, ceiling, head, earlier or floor > 0, ceiling < head)

    async def _search(
        self,
        session_id: str,
        filters: Filters,
        head: int,
        floor: int,
        ceiling: int,
        forward: bool,
    ) -> Window:
        """Scan pages for entries containing the text, up to :data:`SCAN_BUDGET` entries."""
        needle = (filters.text or "").lower()
        found: list[Record] = []
        scanned = 0
        if forward:
            pos = floor
            while pos < ceiling and len(found) < WINDOW and scanned < SCAN_BUDGET:
                page = await self.read(
                    session_id,
                    since=pos,
                    until=ceiling,
                    types=filters.types,
                    agent=filters.agent,
                    limit=PAGE,
                )
                if not page:
                    pos = ceiling
                    break
                for record in page:
                    pos = record[SEQ]
                    if matches_text(record, needle):
                        found.append(record)
                        if len(found) == WINDOW:
                            break
                scanned += len(page)
                if len(page) < PAGE and len(found) < WINDOW:
                    pos = ceiling
            return Window(found, floor, pos, head, floor > 0, pos < head)
        pos = ceiling
        while pos > floor and len(found) < WINDOW and scanned < SCAN_BUDGET:
            page = await self.read(
                session_id,
                since=floor,
                until=pos,
                types=filters.types,
                agent=filters.agent,
                limit=PAGE,
                newest=True,
            )
            if not page:
                pos = floor
                break
            for record in reversed(page):
                pos = record[SEQ] - 1
                if matches_text(record, needle):
                    found.append(record)
                    if len(found) == WINDOW:
                        break
            scanned += len(page)
            if len(page) < PAGE and len(found) < WINDOW:
                pos = floor
        found.reverse()
        return Window(found, pos, ceiling, head, pos > 0, ceiling < head)

    async def step_starts(
        self, session_id: str, keys: Collection[tuple[str, int]], before: int
    ) -> dict[tuple[str, int], Record]:
        """The latest ``plan_step_started`` at or before ``before`` of each step key (a few
        pages back at most: a step that started long before is shown without its start)."""
        wanted = set(keys)
        found: dict[tuple[str, int], Record] = {}
        pos = before
        floor = max(before - STEP_REACH, 0)
        for _ in range(3):
            if not wanted or pos <= floor:
                break
            page = await self.read(
                session_id, since=floor, until=pos, types=[_STARTED], limit=PAGE, newest=True
            )
            for record in reversed(page):
                key = step_key(record)
                if key in wanted:
                    found[key] = record
                    wanted.discard(key)
            if len(page) < PAGE:
                break
            pos = page[0][SEQ] - 1
        return found

    async def step_ends(
        self, session_id: str, keys: Collection[tuple[str, int]], after: int
    ) -> dict[tuple[str, int], Record]:
        """The first ``plan_step_completed`` after ``after`` of each step key (one page)."""
        wanted = set(keys)
        if not wanted:
            return {}
        found: dict[tuple[str, int], Record] = {}
        for record in await self.read(
            session_id, since=after, until=after + STEP_REACH, types=[_COMPLETED], limit=PAGE
        ):
            key = step_key(record)
            if key in wanted:
                found[key] = record
                wanted.discard(key)
                if not wanted:
                    break
        return found

    # -- whole-session scans -----------------------------------------------------------------

    async def pages(
        self, session_id: str, *, until: int | None = None, types: Collection[str] | None = None
    ) -> AsyncIterator[list[Record]]:
        """Every entry up to ``until`` (default: the head when called), a page at a time."""
        if until is None:
            until = (await self.store.info(session_id)).trajectory_length
        pos = 0
        while pos < until:
            page = await self.read(session_id, since=pos, until=until, types=types, limit=PAGE)
            if not page:
                return
            yield page
            pos = page[-1][SEQ]
            if len(page) < PAGE:
                return

    def cached_summary(self, session_id: str) -> Summary | None:
        return self._summaries.get(session_id)

    async def summary(self, session_id: str) -> Summary:
        """Counts over the whole session; scans only what was added since the last call."""
        known = self._summaries.get(session_id)
        summary = Summary() if known is None else known
        head = (await self.store.info(session_id)).trajectory_length
        if head < summary.upto:  # a session deleted and created again under the same id
            summary = Summary()
        fresh = Summary(
            upto=summary.upto,
            counts=dict(summary.counts),
            failed_steps=summary.failed_steps,
            interrupted_steps=summary.interrupted_steps,
            agent_failures=summary.agent_failures,
            plan_failures=summary.plan_failures,
            llm_errors=summary.llm_errors,
            first_failure=summary.first_failure,
        )
        pos = fresh.upto
        while pos < head:
            page = await self.store.read(session_id, since_seq=pos, until_seq=head, limit=PAGE)
            if not page:
                break
            for record in page:
                fresh.add(record)
            pos = page[-1][SEQ]
        self._summaries[session_id] = fresh
        return fresh

    # -- state -------------------------------------------------------------------------------

    async def state_at(self, session_id: str, version: int) -> tuple[dict[str, Any], int]:
        """The state right after ``version`` (values decoded) and the seq that wrote that
        version (0 for version 0). Replays only the state entries, page by page."""
        stored = await self.store.load(session_id, tail=0)
        if version >= stored.info.state_version:
            now = {key: decode(value) for key, value in stored.state.items()}
            return now, await self._version_seq(session_id, stored.info.state_version)
        state: dict[str, Any] = {}
        seq = 0
        if version <= 0:
            return state, 0
        async for page in self.pages(session_id, types=(_STATE_SET, _STATE_DELETED)):
            for record in page:
                body = _body(record)
                stated = body.get("state_version")
                if not isinstance(stated, int) or stated > version:
                    return state, seq
                key = body.get("key")
                if not isinstance(key, str):
                    continue
                if record[ENTRY_TYPE] == _STATE_SET:
                    state[key] = body.get("new_value")
                else:
                    state.pop(key, None)
                seq = record[SEQ]
        return state, seq

    async def _version_seq(self, session_id: str, version: int) -> int:
        if version <= 0:
            return 0
        found = await self.store.read(
            session_id, entry_types=[_STATE_SET, _STATE_DELETED], limit=1, newest=True
        )
        return found[0][SEQ] if found else 0

    # -- artifacts ---------------------------------------------------------------------------

    async def artifacts(self, session_id: str) -> list[dict[str, Any]]:
        """The current artifacts: name, size, SHA-256 and the seq that wrote them."""
        stored = await self.store.load(session_id, tail=0)
        current = dict(stored.artifacts)
        written: dict[str, dict[str, Any]] = {}
        async for page in self.pages(session_id, types=(_ARTIFACT_WRITTEN,)):
            for record in page:
                body = _body(record)
                name = body.get("name")
                if isinstance(name, str) and current.get(name) == body.get("digest"):
                    written[name] = {"seq": record[SEQ], "size": body.get("size")}
        out = []
        for name in sorted(current):
            seen = written.get(name, {})
            out.append(
                {
                    "name": name,
                    "digest": current[name],
                    "size": seen.get("size"),
                    "seq": seen.get("seq"),
                }
            )
        return out

    async def artifact(self, session_id: str, name: str) -> bytes | None:
        """The current data of artifact ``name`` (None if there is none by that name)."""
        stored = await self.store.load(session_id, tail=0)
        digest = stored.artifacts.get(name)
        if digest is None:
            return None
        return await self.store.read_blob(digest)

    # -- verification ------------------------------------------------------------------------

    def cached_verify(self, session_id: str, length: int, head_hash: str) -> VerifyResult | None:
        known = self._verified.get(session_id)
        if known is not None and known[0] == length and known[1] == head_hash:
            return known[2]
        return None

    async def verify(self, session_id: str) -> VerifyResult:
        """Replay the stored chain page by page (bounded memory, off the event loop) and
        check it against the store's head, state version, state, artifacts and blobs."""
        stored = await self.store.load(session_id, tail=0)
        head = stored.info.trajectory_length
        known = self.cached_verify(session_id, head, stored.head_hash)
        if known is not None:
            return known
        result = await self._verify(session_id, stored.head_hash, head, stored)
        self._verified[session_id] = (head, stored.head_hash, result)
        return result

    async def _verify(
        self, session_id: str, head_hash: str, head: int, stored: StoredSession
    ) -> VerifyResult:
        store = self.store
        checked = 0

        def pages() -> Iterator[Record]:
            nonlocal checked
            pos = 0
            while pos < head:
                page = anyio.from_thread.run(_read_raw, store, session_id, pos, head)
                if not page:
                    raise SessionCorruptedError(f"the store has no entry {pos + 1}", seq=pos + 1)
                for record in page:
                    checked = record[SEQ]
                    yield record
                pos = page[-1][SEQ]

        def replay() -> SessionCore:
            return SessionCore.replay(
                pages(),
                session_id=session_id,
                max_artifact_size=stored.max_artifact_size,
                workspace_path=stored.workspace_path,
                verify=True,
                keep=False,
            )

        try:
            core = await anyio.to_thread.run_sync(replay)
        except SessionCorruptedError as exc:
            return VerifyResult(False, max(checked - 1, 0), head_hash, exc.seq, exc.message)
        if core.head != head_hash:
            return VerifyResult(
                False, head, head_hash, None, "the chain's last hash differs from the stored head"
            )
        if core.version != stored.info.state_version or core.state != stored.state:
            return VerifyResult(
                False, head, head_hash, None, "the stored state differs from the replayed one"
            )
        if core.artifacts != stored.artifacts:
            return VerifyResult(
                False, head, head_hash, None, "the stored artifacts differ from the replayed ones"
            )
        for name, digest in sorted(stored.artifacts.items()):
            if sha256_hex(await store.read_blob(digest)) != digest:
                return VerifyResult(
                    False, head, head_hash, None, f"artifact {name!r} does not match its digest"
                )
        return VerifyResult(True, head, head_hash)

    # -- comparing ---------------------------------------------------------------------------

    async def common_prefix(self, a: str, b: str) -> int:
        """How many leading entries two sessions share: equal hashes at seq k mean equal
        entries 1..k (the chain), so a binary search reads O(log n) entries."""
        length_a = (await self.store.info(a)).trajectory_length
        length_b = (await self.store.info(b)).trajectory_length
        low, high = 0, min(length_a, length_b)  # shared >= low; shared <= high

        async def same(seq: int) -> bool:
            left = await self.store.read(a, since_seq=seq - 1, until_seq=seq)
            right = await self.store.read(b, since_seq=seq - 1, until_seq=seq)
            return bool(left and right and left[0][HASH] == right[0][HASH])

        while low < high:
            mid = math.ceil((low + high) / 2)
            if await same(mid):
                low = mid
            else:
                high = mid - 1
        return low


async def _read_raw(store: SessionStore, session_id: str, pos: int, until: int) -> list[Record]:
    return await store.read(session_id, since_seq=pos, until_seq=until, limit=PAGE)


def step_key(record: Record) -> tuple[str, int] | None:
    """``(plan_id, step_index)`` of a step entry."""
    body = _body(record)
    plan_id, index = body.get("plan_id"), body.get("step_index")
    if isinstance(plan_id, str) and type(index) is int:
        return (plan_id, index)
    return None
