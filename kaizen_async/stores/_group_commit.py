"""Group commit: one writer task commits everything queued meanwhile in one transaction.

Callers queue a write and park; the writer takes the whole queue, hands it to the store's
``transact`` (one transaction, run off the event loop) and answers each caller with its own
outcome only after that transaction returned. While a transaction runs, new writes queue
up for the next one, so the number of writes per transaction grows with the load by itself.

A caller cancelled while its write is still queued withdraws it (it is never written); one
cancelled after its transaction began only stops waiting (the write may stand). A write
*posted* (:meth:`GroupCommitter.post`, what a session's actor does with its batch) is never
withdrawn: its poster waits on a firm slot for the outcome, cancelled or not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .._exceptions import ErrorCode, PersistError
from .._waiting import Parker, create_parker
from ._common import closed_error

__all__ = ["GroupCommitter", "Outcome", "Write"]

#: one queued write: (kind, payload); the store's transact interprets it
Write = tuple[str, Any]
#: a write's outcome: its result, or the exception its caller gets
Outcome = Any


class GroupCommitter:
    """The writer task of one store.

    ``transact(writes)`` commits a list of writes in one transaction and returns whether
    the transaction committed and one outcome per write (an exception instance is raised
    to that write's caller); it must not raise for a single write's failure.
    """

    def __init__(
        self, transact: Callable[[list[Write]], Awaitable[tuple[bool, list[Outcome]]]]
    ) -> None:
        self._transact = transact
        self._parker: Parker | None = None
        #: (kind, payload, slot, firm): a firm slot is woken with the outcome as its value
        self._queue: list[tuple[str, Any, list[Any], bool]] = []
        self._sleeper: list[Any] | None = None
        self._open = False
        self._closing = False
        self.commits = 0
        self.batches = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def open(self) -> None:
        """Accept writes (call from the event loop before starting :meth:`run`)."""
        self._parker = create_parker()
        self._queue = []
        self._closing = False
        self._open = True

    async def submit(self, kind: str, payload: Any) -> Any:
        """Queue one write and wait for its outcome."""
        parker = self._parker
        if not self._open or self._closing or parker is None:
            raise closed_error(ErrorCode.PERSIST_COMMIT_FAILED)
        slot = parker.new_slot()
        self._queue.append((kind, payload, slot, False))
        sleeper = self._sleeper
        if sleeper is not None:
            self._sleeper = None
            parker.wake(sleeper)
        return await parker.park(slot)

    def post(self, kind: str, payload: Any) -> list[Any]:
        """Queue one write and return the firm slot its outcome (a result, or the
        exception instance its poster should raise) will be woken with: wait for it with
        :meth:`~kaizen_async._waiting.Parker.park_firm`. Raises if the store is closed."""
        parker = self._parker
        if not self._open or self._closing or parker is None:
            raise closed_error(ErrorCode.PERSIST_COMMIT_FAILED)
        slot = parker.new_firm_slot()
        self._queue.append((kind, payload, slot, True))
        sleeper = self._sleeper
        if sleeper is not None:
            self._sleeper = None
            parker.wake(sleeper)
        return slot

    def close(self) -> None:
        """Refuse new writes; :meth:`run` commits what is queued, then returns."""
        self._closing = True
        sleeper = self._sleeper
        if sleeper is not None and self._parker is not None:
            self._sleeper = None
            self._parker.wake(sleeper)

    async def run(self) -> None:
        """The writer loop: until closed and drained, commit the whole queue at a time."""
        parker = self._parker
        assert parker is not None
        in_flight: list[tuple[str, Any, list[Any], bool]] = []
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    slot = parker.new_slot()
                    self._sleeper = slot
                    await parker.park(slot)
                    continue
                taken, self._queue = self._queue, []
                in_flight = [item for item in taken if not parker.withdrawn(item[2])]
                if not in_flight:
                    continue
                committed, outcomes = await self._transact(
                    [(kind, payload) for kind, payload, _, _ in in_flight]
                )
                if committed:  # count the batches written (not those refused alone)
                    written = sum(not isinstance(o, BaseException) for o in outcomes)
                    if written:
                        self.commits += 1
                        self.batches += written
                for (_, _, slot, firm), outcome in zip(in_flight, outcomes, strict=True):
                    if firm or not isinstance(outcome, BaseException):
                        parker.wake(slot, outcome)
                    else:
                        parker.wake(slot, None, outcome)
                in_flight = []
        finally:
            self._open = False
            self._sleeper = None
            unknown = PersistError(
                "the store's writer stopped during this commit: whether it is durable is "
                "unknown (reload the session)",
                code=ErrorCode.PERSIST_COMMIT_FAILED,
            )
            for _, _, slot, firm in in_flight:
                parker.wake(slot, unknown) if firm else parker.wake(slot, None, unknown)
            error = closed_error(ErrorCode.PERSIST_COMMIT_FAILED)
            for _, _, slot, firm in self._queue:
                parker.wake(slot, error) if firm else parker.wake(slot, None, error)
            self._queue = []
