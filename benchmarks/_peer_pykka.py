"""The peer workload on Pykka: ``ThreadingActor`` s, one thread each.

A request carries a ``ThreadingFuture`` made by its client; the router passes it to a
worker, the worker to the session, and the session sets it after the write (so the reply
goes straight to the client, as on the other runtimes). "N callers" is N client threads,
each sending a request and blocking on its future before the next.
"""

from __future__ import annotations

import threading
from typing import Any, cast

import pykka
from _peers import TEXT, WORKERS, Measured, best_of, check, clock

NAME = "Pykka"
CALLERS_MEAN = "N client threads, each blocking on its request's future"


class _Session(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, str] = {}
        self.log: list[tuple[str, str]] = []

    def on_receive(self, message: Any) -> Any:
        if message == "applied":
            return len(self.log)
        key, value, reply = message
        self.state[key] = value
        self.log.append((key, value))
        reply.set(value)
        return None


class _Worker(pykka.ThreadingActor):
    def __init__(self, session: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.session = session

    def on_receive(self, message: Any) -> Any:
        key, text, reply = message
        self.session.tell((key, text[::-1], reply))


class _Router(pykka.ThreadingActor):
    def __init__(self, workers: list[pykka.ActorRef[Any]]) -> None:
        super().__init__()
        self.workers = workers
        self.next = 0

    def on_receive(self, message: Any) -> Any:
        self.workers[self.next % WORKERS].tell(message)
        self.next += 1


def measure(callers: int, seconds: float, repeats: int) -> Measured:
    session = _Session.start()
    workers = [_Worker.start(session) for _ in range(WORKERS)]
    router = _Router.start(workers)
    try:

        def client(key: str, per: int, go: threading.Event) -> None:
            go.wait()
            for _ in range(per):
                reply: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
                router.tell((key, TEXT, reply))
                reply.get()

        def run(n: int) -> float:
            go = threading.Event()
            threads = [
                threading.Thread(target=client, args=(f"text{c}", n // callers, go))
                for c in range(callers)
            ]
            for thread in threads:
                thread.start()
            start = clock()
            go.set()
            for thread in threads:
                thread.join()
            return clock() - start

        measured = best_of(run, callers, seconds, repeats)
        check(NAME, cast(int, session.ask("applied")), measured.steps)
        return measured
    finally:
        refs: list[pykka.ActorRef[Any]] = [router, *workers, session]
        for ref in refs:
            ref.stop()
