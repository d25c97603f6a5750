"""The peer workload on Thespian's in-process ``simpleSystemBase``.

simpleSystemBase runs every actor in the thread that calls ``ask``/``tell`` and delivers
one queued message after another until none is left, so requests from outside cannot
overlap. The clients are therefore actors too: "N callers" is N caller actors inside the
system, each sending a request and sending the next when its reply arrives; one ``ask`` to a
driver actor starts them all and returns when every caller is done. The router remembers
each request's sender and passes it along, and the session replies to it directly.
"""

from __future__ import annotations

from typing import Any

from _peers import TEXT, WORKERS, Measured, best_of, check, clock
from thespian.actors import Actor, ActorSystem

NAME = "Thespian"
CALLERS_MEAN = "N caller actors inside the system, one request outstanding each"
ASK_NAME = "Thespian, ActorSystem.ask per step"
ASK_CALLERS_MEAN = (
    "1 caller only: the program's thread, one ActorSystem.ask per step (asks cannot overlap)"
)


class _Session(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, str] = {}
        self.log: list[tuple[str, str]] = []

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple):
            key, value, reply_to = message
            self.state[key] = value
            self.log.append((key, value))
            self.send(reply_to, value)
        elif message == "applied":
            self.send(sender, len(self.log))


class _Worker(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.session: Any = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple):
            key, text, reply_to = message
            self.send(self.session, (key, text[::-1], reply_to))
        elif isinstance(message, dict):
            self.session = message["session"]


class _Router(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.workers: list[Any] = []
        self.next = 0

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, str):
            self.send(self.workers[self.next % WORKERS], (message, TEXT, sender))
            self.next += 1
        elif isinstance(message, dict):
            self.workers = message["workers"]


class _Caller(Actor):
    """Sends ``per`` requests one after another, then tells the driver it is done."""

    def __init__(self) -> None:
        super().__init__()
        self.left = 0
        self.key = ""
        self.router: Any = None
        self.driver: Any = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, dict):
            self.key, self.router, self.left = message["key"], message["router"], message["per"]
            self.driver = sender
            self.send(self.router, self.key)
        elif isinstance(message, str):  # a reply
            self.left -= 1
            if self.left:
                self.send(self.router, self.key)
            else:
                self.send(self.driver, "done")


class _Driver(Actor):
    """Starts every caller; answers the external ``ask`` when all are done."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0
        self.asker: Any = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, dict):
            self.asker = sender
            self.waiting = len(message["callers"])
            for i, caller in enumerate(message["callers"]):
                self.send(
                    caller, {"key": f"text{i}", "router": message["router"], "per": message["per"]}
                )
        elif message == "done":
            self.waiting -= 1
            if not self.waiting:
                self.send(self.asker, "all done")


def _start(system: Any) -> tuple[Any, Any]:
    """The session, 4 workers and the router; returns (session, router)."""
    session = system.createActor(_Session)
    workers = [system.createActor(_Worker) for _ in range(WORKERS)]
    for worker in workers:
        system.tell(worker, {"session": session})
    router = system.createActor(_Router)
    system.tell(router, {"workers": workers})
    return session, router


def measure(callers: int, seconds: float, repeats: int) -> Measured:
    """``callers`` caller actors (see the module docstring)."""
    system = ActorSystem("simpleSystemBase", logDefs=False)
    try:
        session, router = _start(system)
        clients = [system.createActor(_Caller) for _ in range(callers)]
        driver = system.createActor(_Driver)

        def run(n: int) -> float:
            start = clock()
            done = system.ask(driver, {"callers": clients, "router": router, "per": n // callers})
            elapsed = clock() - start
            if done != "all done":
                raise RuntimeError(f"{NAME}: the driver answered {done!r}")
            return elapsed

        measured = best_of(run, callers, seconds, repeats)
        check(NAME, system.ask(session, "applied"), measured.steps)
        return measured
    finally:
        system.shutdown()


def measure_ask(callers: int, seconds: float, repeats: int) -> Measured:
    """One request per ``ActorSystem.ask`` from the program (``callers`` must be 1)."""
    if callers != 1:
        raise ValueError("asks from outside a simpleSystemBase cannot overlap")
    system = ActorSystem("simpleSystemBase", logDefs=False)
    try:
        session, router = _start(system)

        def run(n: int) -> float:
            start = clock()
            for _ in range(n):
                system.ask(router, "text0")
            return clock() - start

        measured = best_of(run, 1, seconds, repeats)
        check(ASK_NAME, system.ask(session, "applied"), measured.steps)
        return measured
    finally:
        system.shutdown()
