"""The planner: a model turns a request into capability calls, streamed step by step.

:meth:`Planner.stream` asks the model for ``{"steps": [{"capability", "params"}, ...]}``
and yields each step as a validated :class:`CapabilityCall` the moment its JSON object
closes in the token stream, so a dispatcher can start the first step while the model is
still writing the rest. :meth:`Planner.plan` is the same stream, collected.

Model and parse failures are results, never exceptions: a :class:`PlanResult` says what
went wrong (``plan_generation_failed``, ``plan_llm_error``, ``plan_invalid_format``,
``plan_truncated``) and keeps the raw output. A step that is cut off is never yielded, and
an empty plan is accepted only as ``{"steps": []}``, never read into prose.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from uuid import uuid4

import anyio
import orjson
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._canonical import encode
from ._exceptions import ErrorCode, KaizenValidationError, LLMError, SessionClosedError
from ._plan_parser import PlanStreamParser
from ._trajectory import EntryType
from ._types import CapabilityCall, CapabilitySpec
from .llm._base import LLMChunk, LLMProvider, LLMResponse

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["PlanResult", "PlanStream", "Planner"]

#: agent id of the planner's trajectory entries
PLANNER_AGENT_ID = "planner"

_PLAN_EXAMPLE = (
    '{"steps": [{"capability": "reverse", "params": {"key": "text"}}, '
    '{"capability": "uppercase", "params": {"key": "text"}}]}'
)

_DEFAULT_PROMPT = """\
You are the planner of an agent runtime. Turn the user's request into a plan: the \
capability calls that carry it out, in execution order.

Available capabilities:
{capabilities}

Reply with ONLY a JSON object of this form, and no other text:
{{"steps": [{{"capability": "<name>", "params": {{...}}}}]}}

Rules:
- Use only the capabilities listed above, by their exact names.
- "params" must be a JSON object that matches the capability's params schema.
- List the steps in the order they must run.
- If no capability applies, reply {{"steps": []}}.

Example: for "reverse the text, then make it uppercase", with capabilities "reverse" and \
"uppercase" (the example's capabilities may not be among yours), the reply is:
{example}"""


class PlanResult(BaseModel):
    """The outcome of planning.

    ``error`` is ``{"error_code", "message"[, "details"]}`` exactly when ``success`` is
    False; ``calls`` is empty then. ``raw_response`` is the model's whole output (None when
    the model was not called).
    """

    model_config = ConfigDict(frozen=True)

    success: bool
    calls: list[CapabilityCall] = Field(default_factory=list)
    error: dict[str, Any] | None = None
    raw_response: str | None = None
    plan_id: str = Field(default_factory=lambda: uuid4().hex)

    @model_validator(mode="after")
    def _consistent(self) -> PlanResult:
        if self.success and self.error is not None:
            raise ValueError("a successful plan cannot carry an error")
        if not self.success and not self.error:
            raise ValueError("a failed plan needs an error")
        return self

    @classmethod
    def ok(
        cls,
        calls: Iterable[CapabilityCall],
        raw_response: str | None = None,
        *,
        plan_id: str | None = None,
    ) -> PlanResult:
        """A successful plan of ``calls`` (possibly none)."""
        return cls(
            success=True,
            calls=list(calls),
            raw_response=raw_response,
            plan_id=plan_id or uuid4().hex,
        )

    @classmethod
    def fail(
        cls,
        error_code: ErrorCode | str,
        message: str,
        details: dict[str, Any] | None = None,
        raw_response: str | None = None,
        *,
        plan_id: str | None = None,
    ) -> PlanResult:
        """A failed plan; ``details`` is included when not empty."""
        error: dict[str, Any] = {"error_code": str(ErrorCode(error_code)), "message": message}
        if details:
            error["details"] = details
        return cls(
            success=False, error=error, raw_response=raw_response, plan_id=plan_id or uuid4().hex
        )

    @property
    def error_code(self) -> ErrorCode | None:
        return None if self.error is None else ErrorCode(self.error["error_code"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy (calls as ``{"capability", "params"}`` dicts)."""
        return {
            "success": self.success,
            "calls": [call.to_dict() for call in self.calls],
            "error": self.error,
            "raw_response": self.raw_response,
            "plan_id": self.plan_id,
        }

    @classmethod
    def from_dict(cls, data: Any) -> PlanResult:
        """The inverse of :meth:`to_dict`; raises :class:`KaizenValidationError`."""
        if not isinstance(data, dict):
            raise KaizenValidationError(
                f"PlanResult.from_dict needs a dict, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise KaizenValidationError(f"invalid PlanResult: {exc}") from None


def _as_spec(capability: CapabilitySpec | str) -> CapabilitySpec:
    if isinstance(capability, CapabilitySpec):
        return capability
    if isinstance(capability, str):
        return CapabilitySpec(name=capability)
    raise TypeError(f"a capability is a CapabilitySpec or a name, not {type(capability).__name__}")


def _params_schema(spec: CapabilitySpec) -> dict[str, Any]:
    """The schema shown to the model: the spec's, or its params model's when only that is set."""
    if spec.params_model is not None and spec.params_schema == {"type": "object"}:
        return spec.params_model.model_json_schema()
    return spec.params_schema


class Planner:
    """Plans with an LLM over a set of capabilities.

    Args:
        provider: the model.
        capabilities: what plans may use: :class:`CapabilitySpec` values or plain names
            (a name is a spec without description or params model). Duplicates are ignored.
        options: model options; ``temperature`` defaults to 0.
        system_prompt: replaces the built-in system prompt; ``{capabilities}`` in it is
            replaced by the capability list (name, description and params schema of each).
    """

    def __init__(
        self,
        provider: LLMProvider,
        capabilities: Iterable[CapabilitySpec | str] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
    ) -> None:
        self._provider = provider
        self._specs: dict[str, CapabilitySpec] = {}
        self._options: dict[str, Any] = {"temperature": 0, **(options or {})}
        self._system_prompt = system_prompt
        self.set_capabilities(capabilities or ())

    @property
    def provider(self) -> LLMProvider:
        return self._provider

    @property
    def capabilities(self) -> list[CapabilitySpec]:
        """The capabilities plans may use (a copy), in the order they were added."""
        return list(self._specs.values())

    def set_capabilities(self, capabilities: Iterable[CapabilitySpec | str]) -> None:
        """Replace the capabilities."""
        specs: dict[str, CapabilitySpec] = {}
        for item in capabilities:
            spec = _as_spec(item)
            specs.setdefault(spec.name, spec)
        self._specs = specs

    def add_capability(self, capability: CapabilitySpec | str) -> None:
        """Add one capability; a name already present is ignored."""
        spec = _as_spec(capability)
        self._specs.setdefault(spec.name, spec)

    @property
    def options(self) -> dict[str, Any]:
        """The model options sent with each request (a copy)."""
        return dict(self._options)

    @property
    def system_prompt(self) -> str:
        """The system prompt for the current capabilities."""
        listing = "\n".join(
            f"- {spec.name}: {spec.description or '(no description)'}\n"
            f"  params schema: {orjson.dumps(_params_schema(spec)).decode()}"
            for spec in self._specs.values()
        )
        if self._system_prompt is not None:
            return self._system_prompt.replace("{capabilities}", listing)
        return _DEFAULT_PROMPT.format(capabilities=listing, example=_PLAN_EXAMPLE)

    @property
    def format_schema(self) -> dict[str, Any]:
        """The JSON schema of a plan, passed to the model as its output ``format``."""
        step = {
            "type": "object",
            "properties": {
                "capability": {"type": "string", "enum": list(self._specs)},
                "params": {"type": "object"},
            },
            "required": ["capability", "params"],
            "additionalProperties": False,
        }
        return {
            "type": "object",
            "properties": {"steps": {"type": "array", "items": step}},
            "required": ["steps"],
            "additionalProperties": False,
        }

    def stream(
        self, request: str, session: Session | None = None, *, plan_id: str | None = None
    ) -> PlanStream:
        """Plan ``request``, yielding each step as soon as the model has written it.

        The model is called when iteration (or :meth:`PlanStream.complete`) starts. With a
        ``session``, the exchange and a ``plan_created``/``plan_failed`` entry are recorded.
        """
        return PlanStream(self, request, session, plan_id=plan_id)

    async def plan(
        self, request: str, session: Session | None = None, *, plan_id: str | None = None
    ) -> PlanResult:
        """Plan ``request`` and return the whole plan (the stream, collected)."""
        async with self.stream(request, session, plan_id=plan_id) as stream:
            return await stream.complete()


class PlanStream:
    """The steps of one plan, as an async iterator of validated :class:`CapabilityCall`.

    Each step is yielded once, as soon as its JSON object has closed in the model's output
    and its params have validated. Iteration ends when the plan ends, whether it succeeded
    or failed; then :attr:`result` says which. After an invalid step nothing more is
    yielded. :meth:`complete` reads the rest of the output at once (the steps not yet
    yielded are kept for iteration) and returns the result: call it before running a step
    that must not start until the whole plan is known.

    Close it (``aclose()`` or ``async with``) when done; closing early stops the model.
    """

    def __init__(
        self,
        planner: Planner,
        request: str,
        session: Session | None,
        *,
        plan_id: str | None = None,
    ) -> None:
        self._plan_id = plan_id or uuid4().hex
        self._request = request
        self._session = session
        # A snapshot: later changes to the planner do not affect a plan being made.
        self._provider = planner.provider
        self._specs = dict(planner._specs)
        self._system = planner.system_prompt
        self._format = planner.format_schema
        self._options = planner.options
        self._parser = PlanStreamParser()
        self._chunks: AsyncIterator[LLMChunk] | None = None
        self._called = False
        self._response: LLMResponse | None = None
        self._calls: list[CapabilityCall] = []
        self._pending: deque[CapabilityCall] = deque()
        self._result: PlanResult | None = None
        self._closed = False
        self._lock = anyio.Lock()

    @property
    def plan_id(self) -> str:
        """The id of this plan (in its results and trajectory entries)."""
        return self._plan_id

    @property
    def result(self) -> PlanResult | None:
        """The final result once the stream has ended, else None."""
        return self._result

    @property
    def calls(self) -> list[CapabilityCall]:
        """The steps validated so far, yielded or not (a copy)."""
        return list(self._calls)

    # -- iteration -------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> CapabilityCall:
        async with self._lock:
            while not self._pending:
                if self._result is not None or self._closed:
                    raise StopAsyncIteration
                await self._advance()
            return self._pending.popleft()

    async def complete(self) -> PlanResult:
        """Read the rest of the model's output now and return the final result."""
        async with self._lock:
            while self._result is None:
                await self._advance()
            return self._result

    async def aclose(self) -> None:
        """Stop: close the model's stream; a plan not finished yet is a failed one."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        # shielded: closing must also work (and stop the model) when leaving on cancellation
        with anyio.CancelScope(shield=True):
            async with self._lock:
                if self._result is not None:
                    await self._close_model()
                    return
                result = self._failure(
                    ErrorCode.PLAN_GENERATION_FAILED,
                    "the plan stream was closed before the plan was complete",
                    details={"steps_received": len(self._calls)},
                )
                with contextlib.suppress(SessionClosedError):  # nowhere left to record it
                    await self._finish(result)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the work ----------------------------------------------------------------------------

    async def _advance(self) -> None:
        """Take one more chunk from the model (calling it first if needed)."""
        if self._chunks is None:
            if self._called:  # the model's stream was closed without a result
                await self._finish(self._end_result())
                return
            if not self._specs:
                await self._finish(
                    PlanResult.fail(
                        ErrorCode.PLAN_GENERATION_FAILED,
                        "No capabilities available for planning",
                        plan_id=self._plan_id,
                    )
                )
                return
            self._called = True
            try:
                self._chunks = self._provider.stream(
                    self._request,
                    system=self._system,
                    format=self._format,
                    options=self._options,
                    session=self._session,
                )
            except LLMError as exc:
                await self._finish(self._llm_failure(exc))
                return
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._chunks = None
            await self._finish(self._end_result())
            return
        except LLMError as exc:
            self._chunks = None
            await self._finish(self._llm_failure(exc))
            return
        if self._response is not None:
            return  # after the final chunk: nothing more is part of the reply
        if chunk.text:
            for index, raw in self._parser.feed(chunk.text):
                call = self._validate(index, raw)
                if isinstance(call, PlanResult):
                    await self._finish(call)
                    return
                self._calls.append(call)
                self._pending.append(call)
            if self._parser.error is not None:  # no more steps can come: stop the model now
                await self._finish(
                    self._failure(
                        ErrorCode.PLAN_INVALID_FORMAT,
                        f"Failed to parse LLM response: {self._parser.error}",
                        details={"steps_received": len(self._calls)},
                    )
                )
                return
        if chunk.done:
            self._response = chunk.response or LLMResponse(
                text=self._parser.text,
                model=self._provider.model_name,
                provider=self._provider.name,
            )

    def _validate(self, index: int, raw: str) -> CapabilityCall | PlanResult:
        """Step ``index`` as a call, or the failed result it makes of the plan."""

        def invalid(message: str, **details: Any) -> PlanResult:
            return self._failure(
                ErrorCode.PLAN_INVALID_FORMAT,
                f"Failed to parse LLM response: step {index} {message}",
                details={"step_index": index, **details},
            )

        try:
            step = pydantic_core.from_json(raw, allow_inf_nan=False)
        except ValueError as exc:
            return invalid(f"is not valid JSON: {exc}")
        capability = step.get("capability")
        if not isinstance(capability, str) or not capability.strip():
            return invalid('has no "capability" name')
        extra = sorted(set(step) - {"capability", "params"})
        if extra:
            return invalid(f"has unexpected keys {extra}", capability=capability)
        params = step.get("params", {})
        if not isinstance(params, dict):
            kind = "null" if params is None else type(params).__name__
            return invalid(f'has "params" that is not an object ({kind})', capability=capability)
        spec = self._specs.get(capability)
        if spec is None:
            available = list(self._specs)
            return self._failure(
                ErrorCode.PLAN_INVALID_FORMAT,
                f"Unknown capability '{capability}'. Available: {available}",
                details={"step_index": index, "capability": capability, "available": available},
            )
        try:
            params_json = encode(params, "params")
        except KaizenValidationError as exc:
            return invalid(f"has params that are not storable JSON: {exc}", capability=capability)
        if spec.params_model is not None:
            try:
                spec.params_model.model_validate_json(params_json, strict=True)
            except ValidationError as exc:
                errors = [
                    {
                        "loc": [str(part) for part in err["loc"]],
                        "msg": err["msg"],
                        "type": err["type"],
                    }
                    for err in exc.errors(include_url=False)
                ]
                summary = "; ".join(
                    f"{'.'.join(e['loc']) or '(params)'}: {e['msg']}" for e in errors
                )
                return invalid(
                    f"has invalid params for '{capability}': {summary}",
                    capability=capability,
                    errors=errors,
                )
        return CapabilityCall(capability=capability, params=params)

    def _end_result(self) -> PlanResult:
        """The result once the model's stream has ended."""
        parser = self._parser
        text = parser.text
        if self._response is None:  # no final chunk: the stream dropped
            if not text:
                return self._failure(
                    ErrorCode.PLAN_LLM_ERROR,
                    "LLM error: the model's stream ended without a reply",
                    details={"provider": self._provider.name},
                )
            return self._failure(
                ErrorCode.PLAN_TRUNCATED,
                f"The plan was cut off: the model's stream ended without a final response "
                f"after {len(text)} characters",
                details={"steps_received": len(self._calls)},
            )
        outcome = parser.finish()
        if outcome.complete:
            return PlanResult.ok(self._calls, text, plan_id=self._plan_id)
        done_reason = self._response.done_reason
        if outcome.status == "invalid":
            return self._failure(
                ErrorCode.PLAN_INVALID_FORMAT,
                f"Failed to parse LLM response: {outcome.message}",
                details={"steps_received": len(self._calls)},
            )
        if done_reason == "length":
            return self._failure(
                ErrorCode.PLAN_TRUNCATED,
                f"The plan was cut off at the model's length limit: {outcome.message}",
                details={"done_reason": done_reason, "steps_received": len(self._calls)},
            )
        if outcome.status == "empty":
            message = "Failed to parse LLM response: no JSON plan in the model's output"
        else:
            message = f"Failed to parse LLM response: the JSON is incomplete ({outcome.message})"
        return self._failure(
            ErrorCode.PLAN_INVALID_FORMAT,
            message,
            details={"done_reason": done_reason, "steps_received": len(self._calls)},
        )

    def _llm_failure(self, exc: LLMError) -> PlanResult:
        """A model error: before any output it is an LLM error, after some a truncation."""
        details: dict[str, Any] = {"provider": exc.provider, "status": exc.status}
        if exc.details:
            details["llm_details"] = _json_safe(exc.details)
        text = self._parser.text
        if not text:
            return self._failure(ErrorCode.PLAN_LLM_ERROR, f"LLM error: {exc}", details=details)
        details["steps_received"] = len(self._calls)
        return self._failure(
            ErrorCode.PLAN_TRUNCATED,
            f"The plan was cut off by an LLM error after {len(text)} characters: {exc}",
            details=details,
        )

    def _failure(
        self, code: ErrorCode, message: str, *, details: dict[str, Any] | None = None
    ) -> PlanResult:
        return PlanResult.fail(
            code,
            message,
            details=details,
            raw_response=self._parser.text if self._called else None,
            plan_id=self._plan_id,
        )

    async def _finish(self, result: PlanResult) -> None:
        """Settle on ``result``: stop the model, then record the outcome."""
        self._result = result
        await self._close_model()
        if self._session is None:
            return
        if result.success:
            await self._session.append(
                PLANNER_AGENT_ID,
                EntryType.PLAN_CREATED,
                {
                    "plan_id": self._plan_id,
                    "user_input": self._request,
                    "calls": [call.to_dict() for call in result.calls],
                    "model": self._response.model if self._response else self._provider.model_name,
                },
            )
        else:
            await self._session.append(
                PLANNER_AGENT_ID,
                EntryType.PLAN_FAILED,
                {
                    "plan_id": self._plan_id,
                    "user_input": self._request,
                    "error": result.error,
                    "raw_response": result.raw_response,
                },
            )

    async def _close_model(self) -> None:
        chunks, self._chunks = self._chunks, None
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


def _json_safe(value: Any) -> Any:
    """``value`` as plain JSON (anything else as its ``str``)."""
    return orjson.loads(orjson.dumps(value, default=str))
