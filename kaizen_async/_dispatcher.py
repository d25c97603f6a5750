"""``Dispatcher``: routes capability calls to agents and records every step around them.

Each step records ``plan_step_started`` before the call and ``plan_step_completed`` after
it, whatever happens (success, failure, no agent, timeout, cancellation of the caller),
so the trajectory never holds a started step without its end. The dispatcher encodes the
step's header and sends it with the call as one message; the agent's runner records the
whole step (both ends and the agent's posted writes) as one message to the session and
then answers. The caller records the end itself only when no runner will: it gave up on
the call, or no agent took it. Either way the step's entries are queued before the
caller returns, so any later read, write or save of the session sees them.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import orjson
from anyio.abc import TaskGroup
from pydantic import ValidationError

from ._actor import exit_task_group as _exit_task_group
from ._agent import AgentProtocol, AgentRunner, Invocation
from ._agent import _format_errors as _params_errors
from ._canonical import check_text, encode
from ._exceptions import DispatchError, ErrorCode, KaizenValidationError, SessionClosedError
from ._logging import get_logger
from ._mailbox import MailboxClosedError, MailboxStatistics
from ._trajectory import EntryType
from ._types import AgentInfo, CapabilityCall, CapabilitySpec, InvokeResult

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["DispatchResult", "Dispatcher"]

_log = get_logger("kaizen_async.dispatcher")
_INFO, _WARNING = logging.INFO, logging.WARNING
_DISPATCHER = "dispatcher"
_STARTED = EntryType.PLAN_STEP_STARTED
_COMPLETED = EntryType.PLAN_STEP_COMPLETED
_INTERRUPTED = ErrorCode.STEP_INTERRUPTED.value

CallLike = CapabilityCall | dict[str, Any]


class DispatchResult:
    """The results of a dispatched plan, in step order.

    ``success`` means every step succeeded (an empty plan succeeds) and, for a streamed
    plan, that the plan itself arrived whole. ``failed_at`` and ``error`` describe the
    first failure; ``executed_count`` counts results, resumed ones included.

    A sequence refused before anything ran (a call with no agent, or params that do not
    validate) has no results: ``failed_at`` is that call's index, ``error`` its error.
    """

    __slots__ = ("_failed_at", "plan_error", "plan_id", "results")

    def __init__(
        self,
        results: list[InvokeResult] | None = None,
        plan_id: str = "",
        plan_error: dict[str, Any] | None = None,
        *,
        failed_at: int | None = None,
    ) -> None:
        self.results = [] if results is None else results
        self.plan_id = plan_id
        self.plan_error = plan_error
        self._failed_at = failed_at

    @property
    def success(self) -> bool:
        return self.plan_error is None and all(r.success for r in self.results)

    @property
    def failed_at(self) -> int | None:
        if self._failed_at is not None:
            return self._failed_at
        for index, result in enumerate(self.results):
            if not result.success:
                return index
        return None if self.plan_error is None else len(self.results)

    @property
    def error(self) -> dict[str, Any] | None:
        for result in self.results:
            if not result.success:
                return result.error
        return self.plan_error

    @property
    def executed_count(self) -> int:
        return len(self.results)

    @property
    def completed_indices(self) -> list[int]:
        return [i for i, r in enumerate(self.results) if r.success]

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "success": self.success,
            "failed_at": self.failed_at,
            "error": self.error,
            "executed_count": self.executed_count,
            "completed_indices": self.completed_indices,
            "results": [r.to_dict() for r in self.results],
            "plan_error": self.plan_error,
        }

    @classmethod
    def from_dict(cls, data: Any) -> DispatchResult:
        """The inverse of :meth:`to_dict` (the derived keys are not read back)."""
        if not isinstance(data, dict):
            raise KaizenValidationError(
                f"DispatchResult.from_dict needs a dict, got {type(data).__name__}"
            )
        results, plan_id = data.get("results", []), data.get("plan_id", "")
        plan_error = data.get("plan_error")
        if not isinstance(results, list) or not isinstance(plan_id, str):
            raise KaizenValidationError(
                "DispatchResult.from_dict: 'results' must be a list and 'plan_id' a str"
            )
        if plan_error is not None and not isinstance(plan_error, dict):
            raise KaizenValidationError("DispatchResult.from_dict: 'plan_error' must be a dict")
        calls = [InvokeResult.from_dict(r) for r in results]
        # a refused sequence fails at a call it has no result for: read that index back
        failed_at = data.get("failed_at")
        if (
            plan_error is None
            or not isinstance(failed_at, int)
            or isinstance(failed_at, bool)
            or not all(r.success for r in calls)
        ):
            failed_at = None
        return cls(calls, plan_id, plan_error, failed_at=failed_at)

    def __repr__(self) -> str:
        if self.success:
            return f"DispatchResult(success=True, executed={self.executed_count})"
        error = self.error or {}
        return (
            f"DispatchResult(success=False, failed_at={self.failed_at}, "
            f"error_code={error.get('error_code')})"
        )


_dumps = orjson.dumps
_perf_counter = time.perf_counter
_capability_names: dict[str, bytes] = {}


def _capability_json(capability: object) -> bytes:
    """The JSON of a capability name, once it is checked (a non-blank str of valid UTF-8,
    else :class:`DispatchError`); the few names a process uses are remembered checked."""
    encoded = _capability_names.get(capability) if type(capability) is str else None
    if encoded is not None:
        return encoded
    encoded = _dumps(_checked_text(capability, "capability"))
    if type(capability) is str and len(_capability_names) < 4096:
        _capability_names[capability] = encoded
    return encoded


def _encode_params(params: dict[str, Any]) -> bytes:
    try:
        return encode(params, "params")
    except KaizenValidationError as exc:
        raise DispatchError(str(exc)) from None


def _no_agent(capability: str, available: list[str], index: int) -> InvokeResult:
    return InvokeResult.fail(
        ErrorCode.DISPATCH_NO_AGENT_FOR_CAPABILITY,
        f"No agent registered for capability '{capability}'",
        _DISPATCHER,
        capability,
        {"available_capabilities": available, "step_index": index},
    )


def _normalize(calls: Iterable[CallLike]) -> list[tuple[CapabilityCall, bytes]]:
    """Validate every call before any runs: a malformed plan has no side effects.

    Returns each call with its canonical params encoding.
    """
    normalized = []
    for index, raw in enumerate(calls):
        try:
            call = CapabilityCall.from_dict(raw)
            check_text(call.capability, "capability")
            normalized.append((call, encode(call.params, "params")))
        except (DispatchError, KaizenValidationError) as exc:
            raise DispatchError(
                f"call {index} is malformed: {exc}", details={"step_index": index}
            ) from None
    return normalized


def _checked_text(value: object, what: str) -> str:
    """A capability name or a caller's plan id: a non-blank str of valid UTF-8, else
    :class:`DispatchError`. Both are recorded in every step's entries (a plan id is matched
    by :meth:`Dispatcher.resume_sequence`), so they are checked where a dispatch starts,
    before anything is queued."""
    if not isinstance(value, str) or not value.strip():
        raise DispatchError(f"{what} must be a non-empty string, got {value!r:.80}")
    try:
        return check_text(value, what)
    except KaizenValidationError as exc:
        raise DispatchError(str(exc)) from None


def _refused(failure: InvokeResult, plan_id: str) -> DispatchResult:
    """The result of a sequence refused before any step ran."""
    assert failure.error is not None
    return DispatchResult(
        [], plan_id, failure.error, failed_at=failure.error["details"]["step_index"]
    )


class Dispatcher:
    """Hosts agents as long-lived tasks and routes capability calls to them.

    Use as ``async with Dispatcher() as dispatcher:``; leaving the block lets every agent
    finish what is in its mailbox, then stops it.

    Args:
        mailbox_size: default bound of each agent's mailbox (senders wait when full).
        max_concurrency: default number of messages an agent works on at once.
    """

    def __init__(self, *, mailbox_size: int = 64, max_concurrency: int = 1) -> None:
        if mailbox_size < 1 or max_concurrency < 1:
            raise DispatchError("mailbox_size and max_concurrency must be at least 1")
        self.mailbox_size = mailbox_size
        self.max_concurrency = max_concurrency
        self._agents: dict[str, AgentRunner] = {}
        self._routes: dict[str, AgentRunner] = {}
        self._task_group: TaskGroup | None = None
        self._closed = False
        self._plan_prefix = uuid.uuid4().hex[:16]
        self._plans = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._task_group is not None or self._closed:
            raise SessionClosedError("a Dispatcher can be entered only once")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        for runner in self._agents.values():
            runner.start(task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        self._closed = True
        for runner in self._agents.values():
            runner.close()
        return await _exit_task_group(self._task_group, exc_type, exc, tb)

    def _check_running(self) -> None:
        if self._task_group is None or self._closed:
            raise SessionClosedError("the dispatcher is not running; use it inside `async with`")

    # -- registry --------------------------------------------------------------------------

    def register(
        self,
        agent: AgentProtocol,
        *,
        mailbox_size: int | None = None,
        max_concurrency: int | None = None,
    ) -> AgentInfo:
        """Start serving ``agent``; a capability registered before is taken over (warned)."""
        if self._closed:
            raise SessionClosedError("the dispatcher is closed")
        if not isinstance(agent, AgentProtocol):
            raise DispatchError(f"{agent!r} is not an agent (needs info() and invoke())")
        info = agent.info()
        if not isinstance(info, AgentInfo):
            raise DispatchError(f"{agent!r}.info() returned {type(info).__name__}, not AgentInfo")
        if info.agent_id in self._agents:
            _log.warning("dispatcher.agent_replaced", agent_id=info.agent_id)
            self.unregister(info.agent_id)
        runner = AgentRunner(
            agent,
            info,
            mailbox_size=mailbox_size or self.mailbox_size,
            max_concurrency=max_concurrency or self.max_concurrency,
        )
        for name in info.capabilities:
            previous = self._routes.get(name)
            if previous is not None:
                _log.warning(
                    "dispatcher.capability_replaced",
                    capability=name,
                    previous_agent_id=previous.info.agent_id,
                    agent_id=info.agent_id,
                )
            self._routes[name] = runner
        self._agents[info.agent_id] = runner
        if self._task_group is not None:
            runner.start(self._task_group)
        return info

    def unregister(self, agent_id: str) -> bool:
        """Stop routing to ``agent_id`` (it finishes its mailbox, then stops)."""
        runner = self._agents.pop(agent_id, None)
        if runner is None:
            return False
        for name in [n for n, r in self._routes.items() if r is runner]:
            del self._routes[name]
        runner.close()
        return True

    def get_capabilities(self) -> list[str]:
        return sorted(self._routes)

    def has_capability(self, name: str) -> bool:
        return name in self._routes

    def get_registered_agents(self) -> list[AgentInfo]:
        return [runner.info for runner in self._agents.values()]

    def get_agent_for_capability(self, name: str) -> AgentProtocol | None:
        """The agent serving ``name`` (None when no agent does), as in the original Kaizen."""
        runner = self._routes.get(name)
        return None if runner is None else runner.agent

    def capability_specs(self) -> list[CapabilitySpec]:
        """What a planner needs: each routed capability's name, description, params schema."""
        return [self._routes[name].info.spec(name) for name in sorted(self._routes)]

    def statistics(self, agent_id: str) -> MailboxStatistics:
        """The mailbox statistics of one agent."""
        return self._agents[agent_id].statistics()

    def __repr__(self) -> str:
        return f"Dispatcher(agents={list(self._agents)}, capabilities={self.get_capabilities()})"

    # -- one step ----------------------------------------------------------------------------

    async def _step(
        self,
        capability: str,
        params: dict[str, Any],
        params_json: bytes,
        session: Session,
        plan_id: str,
        index: int,
        timeout: float | None,
    ) -> InvokeResult:
        """Route and run one call, recorded; ``params_json`` is its canonical params.

        The agent's runner records the step (see :class:`Invocation`); the caller records
        its end itself only when it gives up on it (timeout, cancellation) or no runner
        can take it (no agent, the agent stopped)."""
        started = _perf_counter()
        session._writable()  # closed or read-only: refused before anything is queued
        runner = self._routes.get(capability)
        parker = None if runner is None else runner.mailbox.parker
        invocation = Invocation(
            capability,
            _capability_json(capability),
            session,
            params,
            params_json,
            plan_id,
            _dumps(plan_id),
            index,
            [] if parker is None else parker.new_slot(),
        )
        if runner is None or parker is None:
            result = invocation.abandon(_no_agent(capability, sorted(self._routes), index))
            self._log(session, plan_id, index, capability, result, started)
            return result
        mailbox = runner.mailbox
        slot = invocation.slot
        try:
            if timeout is None:
                if not mailbox.try_send(invocation):
                    await mailbox.send(invocation)
                result = await parker.park(slot)
            else:
                with anyio.move_on_after(timeout) as scope:
                    await mailbox.send(invocation)
                    result = await parker.park(slot)
                if scope.cancelled_caught:
                    parker.withdraw(invocation.slot)
                    result = invocation.abandon(
                        InvokeResult.fail(
                            ErrorCode.AGENT_TIMEOUT,
                            f"Capability '{capability}' timed out after {timeout}s",
                            runner.info.agent_id,
                            capability,
                            {"timeout": timeout, "step_index": index},
                        )
                    )
        except anyio.get_cancelled_exc_class():
            parker.withdraw(invocation.slot)
            result = InvokeResult.fail(
                ErrorCode.AGENT_CANCELLED,
                f"Capability '{capability}' was cancelled by its caller",
                runner.info.agent_id,
                capability,
                {"step_index": index},
            )
            with contextlib.suppress(SessionClosedError):  # closing with it: nothing to record
                result = invocation.abandon(result)
            self._log(session, plan_id, index, capability, result, started)
            raise
        except MailboxClosedError:
            result = invocation.abandon(
                InvokeResult.fail(
                    ErrorCode.AGENT_NOT_FOUND,
                    f"The agent for '{capability}' stopped (unregistered or shut down) "
                    "before it answered",
                    runner.info.agent_id,
                    capability,
                    {"step_index": index},
                )
            )
        self._log(session, plan_id, index, capability, result, started)
        return result

    @staticmethod
    def _log(
        session: Session,
        plan_id: str,
        index: int,
        capability: str,
        result: InvokeResult,
        started: float,
    ) -> None:
        level = _INFO if result.success else _WARNING
        if _log.enabled(level):
            _log.log(
                level,
                "dispatch.step",
                session_id=session.session_id,
                plan_id=plan_id,
                step_index=index,
                capability=capability,
                agent_id=result.agent_id,
                duration_ms=round((_perf_counter() - started) * 1000, 3),
                outcome="success" if result.success else str(result.error_code),
            )

    # -- plans -------------------------------------------------------------------------------

    async def dispatch_single(
        self,
        capability: str,
        session: Session,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        plan_id: str | None = None,
    ) -> InvokeResult:
        """Run one capability call as a one-step plan; returns its result.

        The step's entries are queued in order before this returns, so any later read,
        write or save of the session sees them.
        """
        if self._task_group is None or self._closed:
            self._check_running()
        if plan_id is None:
            self._plans += 1  # _new_plan_id, inlined
            plan_id = f"{self._plan_prefix}{self._plans:08x}"
        else:
            plan_id = _checked_text(plan_id, "plan_id")
        _capability_json(capability)
        if params is None:
            params = {}
        elif not isinstance(params, dict):
            raise DispatchError(f"params must be a dict, got {type(params).__name__}")
        params_json = _encode_params(params)
        return await self._step(capability, params, params_json, session, plan_id, 0, timeout)

    def _refusal(
        self, plan: list[tuple[CapabilityCall, bytes]], skip: set[int] | None = None
    ) -> InvokeResult | None:
        """The failure of the first call that cannot run as given, before any runs.

        A call cannot run when no agent is registered for its capability, or when its
        params do not validate against the params model of the capability's spec
        (strictly, as :meth:`Agent.invoke` validates them). Indices in ``skip`` (steps a
        resume will not run) are not checked. What depends on the session (say, a value
        at a key) is the agent's to check when the step runs.
        """
        for index, (call, _) in enumerate(plan):
            if skip and index in skip:
                continue
            name = call.capability
            runner = self._routes.get(name)
            if runner is None:
                return _no_agent(name, sorted(self._routes), index)
            model = runner.info.spec(name).params_model
            if model is None:
                continue
            try:
                model.model_validate(call.params, strict=True)
            except ValidationError as exc:
                message = _params_errors(name, exc)
                details = {
                    "errors": exc.errors(include_url=False, include_context=False),
                    "received": call.params,
                    "step_index": index,
                }
            except Exception as exc:  # a validator that crashed: not valid either
                message = f"Invalid params for '{name}': {type(exc).__name__}: {exc}"
                details = {"received": call.params, "step_index": index}
            else:
                continue
            return InvokeResult.fail(
                ErrorCode.AGENT_INVALID_PARAMS, message, runner.info.agent_id, name, details
            )
        return None

    def _new_plan_id(self) -> str:
        """Unique plan ids without a uuid4 per step: a random prefix and a counter."""
        self._plans += 1
        return f"{self._plan_prefix}{self._plans:08x}"

    async def dispatch_sequence(
        self,
        calls: Sequence[CallLike],
        session: Session,
        *,
        plan_id: str | None = None,
        timeout: float | None = None,
    ) -> DispatchResult:
        """Run calls in order, stopping at the first failure.

        All are checked before any runs: a malformed call raises :class:`DispatchError`;
        a call with no agent for its capability, or with params that do not validate,
        refuses the whole plan (a failed result at that call, nothing run or recorded).
        """
        self._check_running()
        plan_id = self._new_plan_id() if plan_id is None else _checked_text(plan_id, "plan_id")
        plan = _normalize(calls)
        refused = self._refusal(plan)
        if refused is not None:
            return _refused(refused, plan_id)
        results: list[InvokeResult] = []
        for index, (call, params_json) in enumerate(plan):
            result = await self._step(
                call.capability, call.params, params_json, session, plan_id, index, timeout
            )
            results.append(result)
            if not result.success:
                break
        return DispatchResult(results, plan_id)

    async def resume_sequence(
        self,
        calls: Sequence[CallLike],
        session: Session,
        *,
        plan_id: str,
        timeout: float | None = None,
        rerun_interrupted: bool = False,
    ) -> DispatchResult:
        """Re-run plan ``plan_id``, skipping its steps that already succeeded with the same
        capability and params; the rest are checked up front and run (and record) as in
        :meth:`dispatch_sequence`.

        A step whose last attempt was interrupted (its process died after recording
        ``plan_step_started``; closed as ``step_interrupted`` when the session was opened
        again) may have taken effect: it is re-run only if its capability is declared
        ``idempotent`` or ``rerun_interrupted`` is true; otherwise the result fails there
        with ``step_interrupted`` naming the step, and nothing of it runs.
        """
        self._check_running()
        plan_id = _checked_text(plan_id, "plan_id")
        plan = _normalize(calls)
        done, interrupted = await self._completed_steps(session, plan_id)
        refused = self._refusal(
            plan,
            {i for i, (call, params) in enumerate(plan) if (i, call.capability, params) in done},
        )
        if refused is not None:
            return _refused(refused, plan_id)
        results: list[InvokeResult] = []
        for index, (call, params_json) in enumerate(plan):
            if (index, call.capability, params_json) in done:
                results.append(
                    InvokeResult.ok(
                        {"resumed": True, "step_index": index}, _DISPATCHER, call.capability
                    )
                )
                continue
            started_seq = interrupted.get(index)
            if (
                started_seq is not None
                and not rerun_interrupted
                and not self._idempotent(call.capability)
            ):
                results.append(
                    InvokeResult.fail(
                        ErrorCode.STEP_INTERRUPTED,
                        f"Step {index} ('{call.capability}') of plan '{plan_id}' was "
                        f"interrupted (started at seq {started_seq}, never completed) and may "
                        "have taken effect; pass rerun_interrupted=True to run it again",
                        _DISPATCHER,
                        call.capability,
                        {"step_index": index, "plan_id": plan_id, "started_seq": started_seq},
                    )
                )
                break
            result = await self._step(
                call.capability,
                call.params,
                _encode_params(call.params),
                session,
                plan_id,
                index,
                timeout,
            )
            results.append(result)
            if not result.success:
                break
        return DispatchResult(results, plan_id)

    def _idempotent(self, capability: str) -> bool:
        runner = self._routes.get(capability)
        return runner is not None and runner.info.spec(capability).idempotent

    @staticmethod
    async def _completed_steps(
        session: Session, plan_id: str
    ) -> tuple[set[tuple[int, str, bytes]], dict[int, int]]:
        """(step_index, capability, canonical params) of every step of the plan that
        completed successfully (a started entry paired with its completed entry), and the
        steps whose last attempt was interrupted (step_index -> its started seq).

        Only the two step entry types are read (a store-backed session filters them in
        the store)."""
        started: dict[int, tuple[str, bytes, int]] = {}
        done: set[tuple[int, str, bytes]] = set()
        interrupted: dict[int, int] = {}
        for entry in await session.get_trajectory(entry_types=[_STARTED, _COMPLETED]):
            content = entry.content
            if not isinstance(content, dict) or content.get("plan_id") != plan_id:
                continue
            index = content.get("step_index")
            if not isinstance(index, int):
                continue
            if entry.entry_type is _STARTED:
                started[index] = (
                    str(content.get("capability")),
                    encode(content.get("params")),
                    entry.seq,
                )
                continue
            begun = started.pop(index, None)
            if content.get("success") is True:
                interrupted.pop(index, None)
                if begun is not None and begun[0] == content.get("capability"):
                    done.add((index, begun[0], begun[1]))
            elif content.get("error_code") == _INTERRUPTED:
                interrupted[index] = entry.seq if begun is None else begun[2]
            else:  # a later attempt ended (and failed) normally: nothing is in doubt
                interrupted.pop(index, None)
        return done, interrupted

    async def dispatch_parallel(
        self,
        calls: Sequence[CallLike],
        session: Session,
        *,
        max_concurrency: int = 8,
        plan_id: str | None = None,
        timeout: float | None = None,
    ) -> DispatchResult:
        """Run independent calls concurrently (at most ``max_concurrency`` at once).

        Every call runs whatever the others do (no fail-fast); results keep call order.
        """
        self._check_running()
        if max_concurrency < 1:
            raise DispatchError("max_concurrency must be at least 1")
        plan_id = self._new_plan_id() if plan_id is None else _checked_text(plan_id, "plan_id")
        plan = _normalize(calls)
        results: list[InvokeResult | None] = [None] * len(plan)
        limiter = anyio.CapacityLimiter(max_concurrency)

        errors: list[Exception] = []

        async def run(index: int, call: CapabilityCall, params_json: bytes) -> None:
            async with limiter:
                if errors:  # the session went away: start nothing more
                    return
                try:
                    results[index] = await self._step(
                        call.capability, call.params, params_json, session, plan_id, index, timeout
                    )
                except Exception as exc:  # e.g. the session was closed meanwhile
                    errors.append(exc)

        async with anyio.create_task_group() as tg:
            for index, (call, params_json) in enumerate(plan):
                tg.start_soon(run, index, call, params_json)
        if errors:
            raise errors[0]  # as itself, not wrapped in an ExceptionGroup
        return DispatchResult([r for r in results if r is not None], plan_id)

    async def dispatch_stream(
        self,
        calls: AsyncIterable[CallLike],
        session: Session,
        *,
        plan_id: str | None = None,
        timeout: float | None = None,
    ) -> DispatchResult:
        """Run calls in order as they arrive (e.g. from ``Planner.stream``), fail-fast.

        A capability declared ``streamable=False`` waits until the whole plan has been
        received and validated (``await calls.complete()`` when the source offers it);
        if the plan turns out broken, it and everything after it do not run. When a step
        fails, the rest of the plan is still received (so it is recorded and can be
        resumed by its ``plan_id``) but not run. When the source ends with a failed plan
        result, the dispatch result says so.
        """
        self._check_running()
        if plan_id is None:  # the source's own (a planner stream's), or a new one
            plan_id = getattr(calls, "plan_id", None)
        plan_id = self._new_plan_id() if plan_id is None else _checked_text(plan_id, "plan_id")
        results: list[InvokeResult] = []
        plan_error: dict[str, Any] | None = None
        complete = getattr(calls, "complete", None)
        iterator = aiter(calls)
        stopped_early = True
        try:
            async for raw in iterator:
                index = len(results)
                try:
                    ((call, params_json),) = _normalize([raw])
                except DispatchError as exc:
                    results.append(
                        InvokeResult.fail(
                            ErrorCode.DISPATCH_INVALID_CALL,
                            str(exc),
                            _DISPATCHER,
                            "",
                            {"step_index": index},
                        )
                    )
                    break
                runner = self._routes.get(call.capability)
                if (
                    complete is not None
                    and runner is not None
                    and not runner.info.spec(call.capability).streamable
                ):
                    outcome = await complete()
                    complete = None
                    if not getattr(outcome, "success", True):
                        plan_error = getattr(outcome, "error", None) or {
                            "error_code": str(ErrorCode.PLAN_INVALID_FORMAT),
                            "message": "the plan failed before a non-streamable step",
                        }
                        break
                result = await self._step(
                    call.capability, call.params, params_json, session, plan_id, index, timeout
                )
                results.append(result)
                if not result.success:
                    if complete is not None:
                        # keep the whole plan (plan_created, its plan_id) so it can be fixed
                        # and resumed with resume_sequence; nothing more of it is run
                        await complete()
                    break
            else:
                stopped_early = False
        finally:
            closer = getattr(iterator, "aclose", None)
            if stopped_early and closer is not None:
                with anyio.CancelScope(shield=True):
                    await closer()
        final = getattr(calls, "result", None)
        if plan_error is None and final is not None and not getattr(final, "success", True):
            plan_error = getattr(final, "error", None)
        return DispatchResult(results, plan_id, plan_error)
