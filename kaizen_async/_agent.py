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
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, cast, runtime_checkable

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel, ValidationError

from ._canonical import check_json
from ._exceptions import DispatchError, ErrorCode, KaizenValidationError, SessionClosedError
from ._mailbox import Mailbox, MailboxClosedError, MailboxStatistics
from ._session import Session, StepWrites, agent_view
from ._state import _validate_agent_id
from ._steps import completed_content, started_content
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
T = TypeVar("T")
#: a finished capability call: its checked result, and the result's JSON if it has one
_Outcome = tuple["InvokeResult", bytes | None]


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
    #: ``(params, canonical params or None) -> the method's argument``: strict validation
    validate: Callable[[dict[str, Any], bytes | None], Any] | None


_FLAT_TYPES = frozenset({str, int, float, bool, type(None)})
_UNIONS = (typing.Union, types.UnionType)
_CACHE_SIZE = 1024


def _cacheable(model: type[BaseModel]) -> bool:
    """Whether validated params of ``model`` can be shared between calls: a frozen model of
    scalar fields (str, int, float, bool, None, or an optional of one) with no custom
    validators, so equal canonical params always validate to equal, immutable values."""
    if not model.model_config.get("frozen"):
        return False
    decorators = model.__pydantic_decorators__
    if decorators.field_validators or decorators.model_validators or decorators.validators:
        return False
    for field in model.model_fields.values():
        kind = field.annotation
        kinds = typing.get_args(kind) if typing.get_origin(kind) in _UNIONS else (kind,)
        if not all(kind in _FLAT_TYPES for kind in kinds):
            return False
    return True


def _params_validator(
    model: type[BaseModel] | None,
) -> Callable[[dict[str, Any], bytes | None], Any] | None:
    """Strict validation through the model's compiled validator (half the cost of
    ``model_validate``), remembered by canonical params for a :func:`_cacheable` model."""
    if model is None:
        return None
    validate = model.__pydantic_validator__.validate_python
    if not _cacheable(model):
        return lambda params, _key: validate(params, strict=True)
    cache: dict[bytes, Any] = {}

    def cached(params: dict[str, Any], key: bytes | None) -> Any:
        if key is None:
            return validate(params, strict=True)
        value = cache.get(key)
        if value is None:
            value = validate(params, strict=True)  # a failure raises: never remembered
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[key] = value
        return value

    return cached


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
                    found[spec.name] = _CapabilityMethod(
                        spec, attr, _params_validator(spec.params_model)
                    )
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
        if isinstance(session, Session) and session._writer != self.agent_id:
            # called directly, not through a dispatcher (whose runner made the view)
            session = agent_view(session, _validate_agent_id(self.agent_id))
        outcome = self._kaizen_start(capability, session, params, None)
        if not isinstance(outcome, InvokeResult):
            outcome = await outcome
            if not isinstance(outcome, InvokeResult):
                return InvokeResult.ok(outcome, self.agent_id, capability)
        return outcome

    def _kaizen_start(
        self, capability: str, session: Session, params: dict[str, Any], key: bytes | None
    ) -> InvokeResult | Awaitable[Any]:
        """:meth:`invoke` on the session view the runner made, up to the capability call:
        the method's coroutine (what it returns, if not an :class:`InvokeResult`, is a
        success), or the failure that refused it. ``key``: the canonical params (validated
        params of a frozen, flat model are remembered by it). The runner awaits the call
        itself: no coroutine of its own per step."""
        entry = self._capabilities.get(capability)
        if entry is None:
            return self.fail(
                ErrorCode.AGENT_CAPABILITY_NOT_FOUND,
                f"Unknown capability '{capability}'. Available: {sorted(self._capabilities)}",
                capability,
            )
        arg: Any = params
        if entry.validate is not None:
            try:
                arg = entry.validate(params, key)
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
        return getattr(self, entry.method_name)(session, arg)  # type: ignore[no-any-return]

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


# what became of a step message: in the mailbox, taken by the runner, answered by it, or
# given up by its caller (timed out or cancelled), who then records its end
QUEUED, TAKEN, DONE, ABANDONED = 0, 1, 2, 3
_STARTED = EntryType.PLAN_STEP_STARTED.value
_COMPLETED = EntryType.PLAN_STEP_COMPLETED.value


class Invocation(StepWrites):
    """One message in an agent's mailbox: a dispatched step, and where its result goes.

    The dispatcher encodes the step's header up front (``started``: the content of its
    ``plan_step_started``); the runner that takes the message records the whole step (see
    :class:`~kaizen_async._session.StepWrites`) and then answers ``slot``. On the success
    path that is the caller's only hop: it sends once and waits once.
    """

    __slots__ = (
        "capability",
        "capability_json",
        "index",
        "key",
        "params",
        "params_json",
        "plan_json",
        "result",
        "scope",
        "session",
        "slot",
        "started",
        "status",
    )

    def __init__(
        self,
        capability: str,
        capability_json: bytes,
        session: Session,
        params: dict[str, Any],
        params_json: bytes,
        plan_id: str,
        plan_json: bytes,
        index: int,
        slot: list[Any],
    ) -> None:
        self.ops = None
        self.keys = ()
        self.capability = capability
        self.capability_json = capability_json
        self.session = session
        self.params = params
        self.params_json = params_json
        self.plan_json = plan_json
        self.key = (plan_id, index)  # the step's key among its session's open steps
        self.index = index
        self.started = started_content(capability_json, params_json, plan_json, index)
        self.slot = slot
        self.scope: anyio.CancelScope | None = None
        self.status = QUEUED
        self.result: InvokeResult | None = None

    def take(self) -> None:
        """The runner starts the step: its writes are collected from here on."""
        self.status = TAKEN
        self.ops = [self.session._core.step_op(_STARTED, self.started, self.key)]

    def end(self, result: InvokeResult, result_json: bytes | None = None) -> None:
        """Record the step's end (posting everything it collected as one message);
        ``result_json``: the result's canonical JSON, when known."""
        ops = self.ops or []
        self.ops = None
        core = self.session._core
        content = completed_content(
            self.capability_json, self.plan_json, self.index, result, result_json
        )
        ops.append(core.step_op(_COMPLETED, content, self.key))
        self.session._post(core.apply_step, (ops,), self.keys)

    def abandon(self, result: InvokeResult) -> InvokeResult:
        """The caller gives up: record the step's end with ``result`` unless the runner
        already answered (then its result stands: it is what was recorded). Work under
        way is cancelled; what it still writes is queued directly, after the end."""
        status = self.status
        if status == DONE:
            assert self.result is not None
            return self.result
        if status == ABANDONED:  # its end is recorded already
            return result
        if status == QUEUED:  # never taken: its start was not recorded either
            self.take()
        self.status = ABANDONED
        if self.scope is not None:
            self.scope.cancel()
        self.end(result)
        return result


@types.coroutine
def _recorded(
    coro: Coroutine[Any, Any, T], trap: Any, invocation: Invocation
) -> Generator[Any, Any, T]:
    """Await the rest of ``coro``, a capability call that suspended on ``trap`` at its first
    step, posting the step's collected writes first.

    A capability that finishes without suspending (its reads served at once) is run by
    its first ``send`` alone and has its whole step posted as one message at its end. One
    that suspends (it awaits a model, I/O, a timer) comes here: what it collected so far,
    ``plan_step_started`` first, is posted right then, before it waits, so the step is
    seen to start (subscribers, a durable store's commit) while it runs, as if each write
    had been queued at once. The rest is ``yield from``, spelled out because the first
    step of the coroutine was taken by hand."""
    if invocation.status == TAKEN:
        with contextlib.suppress(Exception):  # a closed session fails the step's end
            invocation.flush(invocation.session)
    while True:
        try:
            sent = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                trap = coro.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


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

    The runner records each step it takes: ``plan_step_started``, the agent's posted
    writes and ``plan_step_completed`` go to the session as one message, and only then is
    the caller answered (see :class:`Invocation`). A capability that raises becomes a
    failed result (``agent_invocation_failed``) and an ``agent_failed`` entry; a result
    that is not an :class:`InvokeResult`, or a success whose ``result`` is not a JSON value,
    becomes ``agent_invalid_result``. Either way the runner goes on with the next message.
    The agent is handed the session seen as itself
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
        self.served = 0
        # an Agent whose invoke is the base class's: validated params can be remembered
        self._start = agent._kaizen_start if type(agent).invoke is Agent.invoke else None  # type: ignore[attr-defined]

    @property
    def mailbox(self) -> Mailbox[Invocation]:
        if self._mailbox is None:
            raise SessionClosedError(f"agent {self.info.agent_id} is not running")
        return self._mailbox

    def start(self, task_group: TaskGroup) -> None:
        """Open the mailbox (on the running loop's backend) and start serving it."""
        self._mailbox = Mailbox(self.mailbox_size)
        # one worker is the task itself: every wake of the runner resumes one frame less
        run = self._worker if self.max_concurrency == 1 else self.run
        task_group.start_soon(run, name=f"agent {self.info.agent_id}")

    def close(self) -> None:
        """No new messages; what is queued is still served."""
        if self._mailbox is not None:
            self._mailbox.close()

    def statistics(self) -> MailboxStatistics:
        if self._mailbox is None:
            return MailboxStatistics(0, self.mailbox_size, 0, 0)
        return self._mailbox.statistics()

    async def run(self) -> None:
        """``max_concurrency`` workers, each a task of its own, serving the mailbox."""
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.max_concurrency):
                    tg.start_soon(self._worker, False)
        finally:
            self._fail_pending()

    def _stopped(self) -> MailboxClosedError:
        return MailboxClosedError(f"agent {self.info.agent_id} stopped")

    def _fail_pending(self) -> None:
        """The runner stopped (its dispatcher was cancelled): no caller waits forever."""
        mailbox = self.mailbox
        mailbox.close()
        wake = mailbox.parker.wake
        while len(mailbox):
            invocation = mailbox.receive_nowait()
            if invocation.status == QUEUED:
                wake(invocation.slot, None, self._stopped())

    async def _worker(self, alone: bool = True) -> None:
        """Serve messages until the mailbox closes; ``alone``: the runner's only worker,
        which fails what is left queued when it stops (``run`` does for several).

        One cancel scope serves many messages: entering a scope costs more than a whole
        message hop, so a new one is made only after a caller cancelled the one in use. A
        caller can cancel only while its own message is in progress (the scope is attached
        to the message just for that time, and only a caller that abandons its step cancels
        it), so no other message is affected. A capability may finish even though its caller
        cancelled it (it shielded its cleanup, say): the scope is spent then (its step was
        abandoned), and the next message gets a fresh one. Reading the step's status says
        so without asking the scope (``cancel_called`` costs about 1 µs a step on Trio).
        """
        mailbox = self.mailbox
        items, receive_nowait = mailbox.items, mailbox.receive_nowait
        receive, wake = mailbox.receive, mailbox.parker.wake
        try:
            while True:
                with anyio.CancelScope() as scope:
                    while True:
                        try:  # a queued message is taken without a coroutine of receive's
                            invocation = receive_nowait() if items else await receive()
                        except MailboxClosedError:
                            return
                        if invocation.status != QUEUED:  # its caller gave up while queued
                            continue
                        invocation.take()
                        invocation.scope = scope
                        try:
                            outcome = self._invoke(invocation)
                            if not isinstance(outcome, tuple):  # the capability suspended
                                outcome = await outcome
                            result, result_json = outcome
                        except BaseException:
                            invocation.scope = None
                            if invocation.status == TAKEN:  # the runner is stopped mid-step
                                wake(invocation.slot, None, self._stopped())
                            raise
                        invocation.scope = None
                        self.served += 1
                        if invocation.status == TAKEN:
                            self._answer(invocation, result, result_json, wake)
                        else:  # abandoned while it ran: its caller cancelled the scope
                            break
        finally:
            if alone:
                self._fail_pending()

    @staticmethod
    def _answer(
        invocation: Invocation,
        result: InvokeResult,
        result_json: bytes | None,
        wake: Callable[..., bool],
    ) -> None:
        """Record the step's end and answer its caller (a store-backed session answers
        once the step's entries are durable)."""
        invocation.status = DONE
        invocation.result = result
        try:
            invocation.end(result, result_json)
            answered = invocation.session._acknowledge(invocation.slot, result)
        except Exception as exc:  # the session was closed meanwhile, say
            wake(invocation.slot, None, exc)
        else:
            if not answered:
                wake(invocation.slot, result)

    def _invoke(self, invocation: Invocation) -> _Outcome | Coroutine[Any, Any, _Outcome]:
        """Run the capability: its result, checked, and the result's JSON if it has one;
        or, when the capability suspended (it awaits a model, I/O, a timer), a coroutine
        that finishes it. Most steps end here, without a coroutine of the runner's own."""
        session = invocation.session
        if isinstance(session, Session):
            session = agent_view(session, self.info.agent_id, invocation)
        try:
            start = self._start
            if start is not None:
                call = start(
                    invocation.capability, session, invocation.params, invocation.params_json
                )
            else:
                call = self.agent.invoke(invocation.capability, session, invocation.params)
            if type(call) is InvokeResult:  # refused before its method ran
                result = call
            elif type(call) is types.CoroutineType:
                try:
                    trap = call.send(None)  # most steps end here, without suspending
                except StopIteration as stop:
                    result = stop.value
                else:
                    return self._finish(invocation, session, _recorded(call, trap, invocation))
            else:  # some other awaitable: the step is seen to start before it is awaited
                invocation.flush(invocation.session)
                return self._finish(invocation, session, call)
        except BaseException as exc:
            return self._raised(invocation, session, exc)
        return self._checked(invocation, result)

    async def _finish(
        self, invocation: Invocation, session: Session, call: Awaitable[Any]
    ) -> _Outcome:
        """The rest of a capability call that suspended (see :meth:`_invoke`)."""
        try:
            result = await call
        except BaseException as exc:
            return self._raised(invocation, session, exc)
        return self._checked(invocation, result)

    def _raised(self, invocation: Invocation, session: Session, exc: BaseException) -> _Outcome:
        """A capability call that raised ``exc``: a failed result, and an ``agent_failed``
        entry recorded with the step. A cancellation of this call or of the worker (any
        other BaseException too) propagates."""
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            # asyncio only: the capability let a CancelledError out (say it awaited a task
            # that was cancelled) while nobody cancelled this worker: a failure
            if not _stray_cancellation(invocation):
                raise exc
        elif not isinstance(exc, Exception):
            raise exc
        agent_id = self.info.agent_id
        capability = invocation.capability
        text = str(exc)
        if not text.isascii():  # a lone surrogate would keep agent_failed from the record
            text = text.encode("utf-8", "backslashreplace").decode()
        details = {"exception_type": type(exc).__name__, "exception_message": text}
        message = f"Agent raised exception: {type(exc).__name__}: {text}"
        # recorded with the step; if the session itself is gone, the result says why
        with contextlib.suppress(Exception):
            session.append_nowait(
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
        ), None

    def _checked(self, invocation: Invocation, result: Any) -> _Outcome:
        """What the capability returned, as a result (an Agent's plain value is a success;
        anything else that is not an InvokeResult, or a success whose result is not JSON,
        is ``agent_invalid_result``), and the result's canonical JSON if it has one."""
        agent_id = self.info.agent_id
        capability = invocation.capability
        if not isinstance(result, InvokeResult):
            if self._start is not None:  # an Agent's plain result
                result = InvokeResult.ok(result, agent_id, capability)
            else:
                return InvokeResult.fail(
                    ErrorCode.AGENT_INVALID_RESULT,
                    f"Agent returned {type(result).__name__}, not an InvokeResult",
                    agent_id,
                    capability,
                    {"returned_type": type(result).__name__},
                ), None
        if result.success and result.result is not None:
            try:
                return result, check_json(result.result, "result")
            except KaizenValidationError as exc:
                return InvokeResult.fail(
                    ErrorCode.AGENT_INVALID_RESULT,
                    f"Agent returned a result that is not a JSON value: {exc}",
                    agent_id,
                    capability,
                    {"returned_type": type(result.result).__name__},
                ), None
        return result, None
