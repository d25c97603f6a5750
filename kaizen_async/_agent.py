"""Agents: what they are (``AgentProtocol``), the declarative way to write one
(``Agent`` + ``@capability``) and the long-lived task that serves one (``AgentRunner``).

A capability method receives validated params and may return an :class:`InvokeResult`
or any JSON value (wrapped as a success). Params are validated against the capability's
pydantic model before the method runs; invalid params give ``agent_invalid_params`` with
pydantic's error details and record nothing.

The session a capability is handed is the caller's session seen as that agent: its
``set``/``delete``/``write_artifact``/``delete_artifact`` entries are recorded under the
agent's ``agent_id`` (``system`` for writes made on the session outside any agent), so
the trajectory says who changed what.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, cast, runtime_checkable

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel, ValidationError

from ._canonical import check_json
from ._exceptions import DispatchError, ErrorCode, KaizenValidationError, SessionClosedError
from ._mailbox import Mailbox, MailboxClosedError, MailboxStatistics, Reply
from ._session import Session, agent_view
from ._state import _validate_agent_id
from ._trajectory import EntryType
from ._types import AgentInfo, CapabilitySpec, InvokeResult

__all__ = [
    "Agent",
    "AgentProtocol",
    "AgentRunner",
    "Invocation",
    "capability",
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@runtime_checkable
class AgentProtocol(Protocol):
    """What the dispatcher needs of an agent."""

    def info(self) -> AgentInfo: ...

    async def invoke(
        self, capability: str, session: Session, params: dict[str, Any]
    ) -> InvokeResult: ...


@dataclass(frozen=True)
class _CapabilityMethod:
    spec: CapabilitySpec
    method_name: str


def capability(
    name: str,
    *,
    params: type[BaseModel] | None = None,
    description: str = "",
    streamable: bool = True,
    idempotent: bool = False,
) -> Callable[[F], F]:
    """Declare an ``async def method(self, session, params)`` as a capability.

    Args:
        name: the capability name plans refer to.
        params: a pydantic model the params are validated against (strictly).
        description: what it does, for the planner's prompt.
        streamable: whether it may run before the whole plan has been validated.
        idempotent: whether it is safe to repeat: ``resume_sequence`` re-runs a step of it
            that a crash interrupted (others stop there with ``step_interrupted``).
    """

    def decorate(method: F) -> F:
        if not inspect.iscoroutinefunction(cast(Any, method)):
            raise TypeError(f"capability {name!r} must be an async method")
        schema = params.model_json_schema() if params is not None else {"type": "object"}
        spec = CapabilitySpec(
            name=name,
            description=description or (inspect.getdoc(method) or "").split("\n")[0],
            params_schema=schema,
            streamable=streamable,
            idempotent=idempotent,
            params_model=params,
        )
        method.__kaizen_capability__ = spec  # type: ignore[attr-defined]
        return method

    return decorate


def _format_errors(capability_name: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "params"
        if error["type"] == "missing":
            problems.append(f"Missing required parameter: {where}")
        else:
            problems.append(f"Invalid parameter '{where}': {error['msg']}")
    return f"Invalid params for '{capability_name}': " + "; ".join(problems)


class Agent:
    """Base class for declarative agents.

    Subclasses set ``agent_id``, ``name``, ``version`` (and optionally ``description``)
    as class attributes and declare methods with :func:`capability`.
    """

    agent_id: str = ""
    name: str = ""
    version: str = "1.0.0"
    description: str = ""
    _capabilities: ClassVar[dict[str, _CapabilityMethod]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, _CapabilityMethod] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                spec = getattr(value, "__kaizen_capability__", None)
                if isinstance(spec, CapabilitySpec):
                    found[spec.name] = _CapabilityMethod(spec, attr)
        cls._capabilities = found

    def info(self) -> AgentInfo:
        return AgentInfo(
            agent_id=self.agent_id,
            name=self.name or type(self).__name__,
            version=self.version,
            description=self.description,
            capabilities=list(self._capabilities),
            specs={name: c.spec for name, c in self._capabilities.items()},
        )

    async def invoke(
        self, capability: str, session: Session, params: dict[str, Any]
    ) -> InvokeResult:
        """Validate ``params`` and run the capability's method with ``session`` seen as
        this agent (its writes recorded under ``agent_id``)."""
        entry = self._capabilities.get(capability)
        if entry is None:
            return self.fail(
                ErrorCode.AGENT_CAPABILITY_NOT_FOUND,
                f"Unknown capability '{capability}'. Available: {sorted(self._capabilities)}",
                capability,
            )
        model = entry.spec.params_model
        arg: Any = params
        if model is not None:
            try:
                arg = model.model_validate(params, strict=True)
            except ValidationError as exc:
                return self.fail(
                    ErrorCode.AGENT_INVALID_PARAMS,
                    _format_errors(capability, exc),
                    capability,
                    details={
                        "errors": exc.errors(include_url=False, include_context=False),
                        "received": params,
                    },
                )
        if isinstance(session, Session) and session._writer != self.agent_id:
            # called directly, not through a dispatcher (whose runner made the view)
            session = agent_view(session, _validate_agent_id(self.agent_id))
        outcome = await getattr(self, entry.method_name)(session, arg)
        if isinstance(outcome, InvokeResult):
            return outcome
        return InvokeResult.ok(outcome, self.agent_id, capability)

    # helpers for capability methods --------------------------------------------------------

    def ok(self, result: Any, capability: str) -> InvokeResult:
        return InvokeResult.ok(result, self.agent_id, capability)

    def fail(
        self,
        code: ErrorCode,
        message: str,
        capability: str,
        details: dict[str, Any] | None = None,
    ) -> InvokeResult:
        return InvokeResult.fail(code, message, self.agent_id, capability, details)

    def invalid_params(
        self, message: str, capability: str, details: dict[str, Any] | None = None
    ) -> InvokeResult:
        return self.fail(ErrorCode.AGENT_INVALID_PARAMS, message, capability, details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(agent_id={self.agent_id!r})"


@dataclass(eq=False)  # compared and hashed by identity
class Invocation:
    """One message in an agent's mailbox: a call and where to send its result."""

    capability: str
    session: Session
    params: dict[str, Any]
    reply: Reply
    scope: anyio.CancelScope | None = None
    cancelled: bool = False

    def cancel(self) -> None:
        """The caller gave up (timeout or cancellation): stop the work if it started."""
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class _StrayCancellation(Exception):
    """Carries a CancelledError that escaped a capability without anyone cancelling it."""


def _stray_cancellation(invocation: Invocation) -> bool:
    """True when a cancellation came from the capability's own code, not from a cancel of
    this call or of the worker (only possible on asyncio, where user code can raise one)."""
    if invocation.scope is not None and invocation.scope.cancel_called:
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # Trio: a Cancelled always comes from a real cancel scope
        return False
    return task is not None and task.cancelling() == 0


class AgentRunner:
    """Serves one agent: ``max_concurrency`` tasks draining a bounded FIFO mailbox.

    A capability that raises becomes a failed result (``agent_invocation_failed``) and an
    ``agent_failed`` entry; a result that is not an :class:`InvokeResult`, or a success
    whose ``result`` is not a JSON value, becomes ``agent_invalid_result``. Either way the
    runner goes on with the next message. The agent is handed the session seen as itself
    (:func:`~kaizen_async._session.agent_view`), so its writes are attributed to it.
    """

    def __init__(
        self, agent: AgentProtocol, info: AgentInfo, *, mailbox_size: int, max_concurrency: int
    ) -> None:
        if max_concurrency < 1:
            raise DispatchError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if mailbox_size < 1:
            raise DispatchError(f"mailbox_size must be at least 1, got {mailbox_size}")
        _validate_agent_id(info.agent_id)  # it is recorded as the writer of its entries
        self.agent = agent
        self.info = info
        self.max_concurrency = max_concurrency
        self.mailbox_size = mailbox_size
        self._mailbox: Mailbox[Invocation] | None = None
        self._in_progress: set[Invocation] = set()
        self.served = 0

    @property
    def mailbox(self) -> Mailbox[Invocation]:
        if self._mailbox is None:
            raise SessionClosedError(f"agent {self.info.agent_id} is not running")
        return self._mailbox

    def start(self, task_group: TaskGroup) -> None:
        """Open the mailbox (on the running loop's backend) and start serving it."""
        self._mailbox = Mailbox(self.mailbox_size)
        task_group.start_soon(self.run, name=f"agent {self.info.agent_id}")

    def close(self) -> None:
        """No new messages; what is queued is still served."""
        if self._mailbox is not None:
            self._mailbox.close()

    def statistics(self) -> MailboxStatistics:
        if self._mailbox is None:
            return MailboxStatistics(0, self.mailbox_size, 0, 0)
        return self._mailbox.statistics()

    async def run(self) -> None:
        try:
            if self.max_concurrency == 1:
                await self._worker()
                return
            async with anyio.create_task_group() as tg:
                for _ in range(self.max_concurrency):
                    tg.start_soon(self._worker)
        finally:
            self._fail_pending()

    def _fail_pending(self) -> None:
        """The runner stopped (its dispatcher was cancelled): no caller waits forever."""
        mailbox = self.mailbox
        mailbox.close()
        stopped = MailboxClosedError(f"agent {self.info.agent_id} stopped")
        for invocation in self._in_progress:
            invocation.reply.send_error(stopped)
        while len(mailbox):
            mailbox.receive_nowait().reply.send_error(stopped)

    async def _worker(self) -> None:
        # One cancel scope serves many messages: entering a scope costs more than a whole
        # message hop, so a new one is made only after a caller cancelled the one in use.
        # A caller can cancel only while its own message is in progress (the scope is
        # attached to the message just for that time), so no other message is affected.
        while True:
            with anyio.CancelScope() as scope:
                if not await self._serve(scope):
                    return

    async def _serve(self, scope: anyio.CancelScope) -> bool:
        """Serve messages until the mailbox closes (False) or ``scope`` was cancelled (True).

        A capability may finish even though its caller cancelled it (it shielded its
        cleanup, say): the scope is spent then, and the next message gets a fresh one.
        """
        receive = self.mailbox.receive
        while True:
            try:
                invocation = await receive()
            except MailboxClosedError:
                return False
            if invocation.cancelled or invocation.reply.withdrawn:
                continue
            invocation.scope = scope
            self._in_progress.add(invocation)
            try:
                result = await self._invoke(invocation)
            finally:
                invocation.scope = None
                self._in_progress.discard(invocation)
            invocation.reply.send(result)
            self.served += 1
            if scope.cancel_called:
                return True

    async def _invoke(self, invocation: Invocation) -> InvokeResult:
        capability = invocation.capability
        agent_id = self.info.agent_id
        session = invocation.session
        if isinstance(session, Session):
            session = agent_view(session, agent_id)
        try:
            try:
                result = await self.agent.invoke(capability, session, invocation.params)
            except anyio.get_cancelled_exc_class() as exc:
                if not _stray_cancellation(invocation):
                    raise
                # asyncio only: the capability let a CancelledError out (say it awaited a
                # task that was cancelled) while nobody cancelled this worker: a failure
                raise _StrayCancellation(str(exc) or "CancelledError") from exc
        except Exception as exc:
            if isinstance(exc, _StrayCancellation):
                exc = exc.__cause__ or exc  # type: ignore[assignment]
            text = str(exc)
            if not text.isascii():  # a lone surrogate would keep agent_failed from the record
                text = text.encode("utf-8", "backslashreplace").decode()
            details = {"exception_type": type(exc).__name__, "exception_message": text}
            message = f"Agent raised exception: {type(exc).__name__}: {text}"
            # if the session itself is gone, the failed result still says why
            with contextlib.suppress(Exception):
                await invocation.session.append(
                    agent_id,
                    EntryType.AGENT_FAILED,
                    {
                        "capability": capability,
                        "params": invocation.params,
                        "error": message,
                        **details,
                    },
                )
            return InvokeResult.fail(
                ErrorCode.AGENT_INVOCATION_FAILED, message, agent_id, capability, details
            )
        if not isinstance(result, InvokeResult):
            return InvokeResult.fail(
                ErrorCode.AGENT_INVALID_RESULT,
                f"Agent returned {type(result).__name__}, not an InvokeResult",
                agent_id,
                capability,
                {"returned_type": type(result).__name__},
            )
        if result.success and result.result is not None:
            try:
                check_json(result.result, "result")
            except KaizenValidationError as exc:
                return InvokeResult.fail(
                    ErrorCode.AGENT_INVALID_RESULT,
                    f"Agent returned a result that is not a JSON value: {exc}",
                    agent_id,
                    capability,
                    {"returned_type": type(result.result).__name__},
                )
        return result
