"""The peer workload on AutoGen core's ``SingleThreadedAgentRuntime`` (asyncio).

Each actor is a ``RoutedAgent`` with a ``message_handler``; a request is an RPC
(``send_message`` returns the recipient's answer): the client sends to the router, whose
handler sends to a worker (agent type ``worker``, keys ``0`` to ``3`` round robin), whose
handler sends the write to the session agent; the session's answer travels back up the
awaiting handlers to the client. The runtime runs each delivered message as its own task,
so handlers waiting on an answer do not block the others. "N callers" is N asyncio tasks,
each awaiting ``runtime.send_message`` before sending the next.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from _peers import TEXT, WORKERS, Measured, abest_of, check, clock
from autogen_core import AgentId, MessageContext, RoutedAgent, SingleThreadedAgentRuntime
from autogen_core import message_handler as _message_handler

NAME = "AutoGen core"
CALLERS_MEAN = "N asyncio tasks, each awaiting runtime.send_message"

_ROUTER = AgentId("router", "default")
_SESSION = AgentId("session", "default")


@dataclass
class Request:
    key: str
    text: str


@dataclass
class Write:
    key: str
    value: str


@dataclass
class Applied:
    """Asks the session how many writes it applied."""


class _Session(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("the session: applies writes in arrival order")
        self.state: dict[str, str] = {}
        self.log: list[tuple[str, str]] = []

    @_message_handler
    async def on_write(self, message: Write, ctx: MessageContext) -> str:
        self.state[message.key] = message.value
        self.log.append((message.key, message.value))
        return message.value

    @_message_handler
    async def on_applied(self, message: Applied, ctx: MessageContext) -> int:
        return len(self.log)


class _Worker(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("a worker: reverses the text")

    @_message_handler
    async def on_request(self, message: Request, ctx: MessageContext) -> str:
        reply: str = await self.send_message(Write(message.key, message.text[::-1]), _SESSION)
        return reply


class _Router(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("the router: round robin over the workers")
        self.next = 0

    @_message_handler
    async def on_request(self, message: Request, ctx: MessageContext) -> str:
        worker = AgentId("worker", str(self.next % WORKERS))
        self.next += 1
        reply: str = await self.send_message(message, worker)
        return reply


async def _measure(callers: int, seconds: float, repeats: int) -> Measured:
    runtime = SingleThreadedAgentRuntime()
    await _Session.register(runtime, "session", _Session)
    await _Worker.register(runtime, "worker", _Worker)
    await _Router.register(runtime, "router", _Router)
    runtime.start()
    try:

        async def client(key: str, per: int) -> None:
            for _ in range(per):
                await runtime.send_message(Request(key, TEXT), _ROUTER)

        async def run(n: int) -> float:
            per = n // callers
            start = clock()
            await asyncio.gather(*(client(f"text{c}", per) for c in range(callers)))
            return clock() - start

        measured = await abest_of(run, callers, seconds, repeats)
        check(NAME, await runtime.send_message(Applied(), _SESSION), measured.steps)
        return measured
    finally:
        await runtime.stop_when_idle()


def measure(callers: int, seconds: float, repeats: int) -> Measured:
    return asyncio.run(_measure(callers, seconds, repeats))
