"""A small typed program as a user would write it, for ``mypy --strict``.

Not a test module (pytest does not collect it): ``tests/test_typing.py`` type-checks a copy
of it outside the repository, where only the installed package can be found.
"""

from __future__ import annotations

import anyio
from pydantic import BaseModel

from agents import ReverseAgent
from kaizen_async import (
    Agent,
    CapabilityCall,
    Dispatcher,
    DispatchResult,
    InvokeResult,
    Session,
    capability,
    sync,
)


class KeyParams(BaseModel):
    key: str


class ShoutAgent(Agent):
    agent_id = "shout_v1"

    @capability("shout", params=KeyParams, description="Upper-case the text at `key`.")
    async def shout(self, session: Session, params: KeyParams) -> dict[str, str]:
        text = await session.get(params.key)
        shouted = str(text).upper()
        await session.set(params.key, shouted)
        return {"shouted": shouted}


async def main() -> str:
    async with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(ShoutAgent())
        dispatcher.register(ReverseAgent())
        await session.set("text", "hello")
        first: InvokeResult = await dispatcher.dispatch_single("shout", session, {"key": "text"})
        plan: DispatchResult = await dispatcher.dispatch_sequence(
            [CapabilityCall("reverse", {"key": "text"})], session
        )
        assert first.success and plan.success
        return str(await session.get("text"))


def blocking() -> int:
    with sync.Session() as session:
        return session.set("k", 1)


if __name__ == "__main__":
    print(anyio.run(main), blocking())
