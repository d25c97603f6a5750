"""Value types shared by agents, the dispatcher and the planner.

``CapabilityCall`` (what to run), ``CapabilitySpec`` / ``AgentInfo`` (what an agent
offers) and ``InvokeResult`` (what came of it). All frozen; params and results are JSON.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._exceptions import DispatchError, ErrorCode, KaizenValidationError

__all__ = ["AgentInfo", "CapabilityCall", "CapabilitySpec", "InvokeResult"]

_M = TypeVar("_M", bound=BaseModel)
_MISSING: Any = object()


def _model_from_dict(cls: type[_M], data: Any) -> _M:
    """``cls.model_validate(data)`` with bad input as :class:`KaizenValidationError`."""
    if not isinstance(data, dict):
        raise KaizenValidationError(
            f"{cls.__name__}.from_dict needs a dict, got {type(data).__name__}"
        )
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise KaizenValidationError(f"invalid {cls.__name__}: {exc}") from None


class CapabilityCall(BaseModel):
    """One step of a plan: a capability name and its params.

    ``CapabilityCall("reverse", {"key": "text"})`` or with keywords, as in the original Kaizen;
    params ``None`` means no params.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    capability: str
    params: dict[str, Any] = Field(default_factory=dict)

    def __init__(
        self, capability: str = _MISSING, params: dict[str, Any] | None = None, **data: Any
    ) -> None:
        if capability is not _MISSING:
            data["capability"] = capability
        data["params"] = {} if params is None else params
        super().__init__(**data)

    @field_validator("capability")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("capability cannot be empty")
        return value

    @classmethod
    def from_dict(cls, data: Any) -> CapabilityCall:
        """From ``{"capability": ..., "params": {...}}``; raises :class:`DispatchError`."""
        if isinstance(data, CapabilityCall):
            return data
        if not isinstance(data, dict):
            raise DispatchError(
                f"a call must be a CapabilityCall or a dict, got {type(data).__name__}"
            )
        if "capability" not in data:
            raise DispatchError(
                "a call dict needs a 'capability' key", details={"call": repr(data)}
            )
        params = data.get("params")
        try:
            return cls(capability=data["capability"], params={} if params is None else params)
        except ValueError as exc:
            raise DispatchError(f"invalid call {data!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"capability": self.capability, "params": dict(self.params)}


class CapabilitySpec(BaseModel):
    """What a planner needs to know of a capability.

    ``streamable``: whether it may run before the whole plan has been received and
    validated (a capability with irreversible effects would say False). ``idempotent``:
    whether running it twice has the effect of running it once, so a step interrupted by
    a crash may be re-run by ``resume_sequence`` without asking.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    description: str = ""
    params_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    streamable: bool = True
    idempotent: bool = False
    #: the pydantic model params are validated with (not serialized)
    params_model: type[BaseModel] | None = Field(default=None, exclude=True, repr=False)

    @field_validator("name")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("capability name cannot be empty")
        return value


class AgentInfo(BaseModel):
    """An agent's identity and its capabilities (names, or full specs)."""

    model_config = ConfigDict(frozen=True)

    agent_id: str
    name: str
    version: str
    capabilities: list[str]
    description: str = ""
    specs: dict[str, CapabilitySpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split_specs(cls, data: Any) -> Any:
        # capabilities may be given as names or as CapabilitySpec objects / dicts
        if isinstance(data, dict) and isinstance(data.get("capabilities"), list | tuple):
            names: list[str] = []
            specs = dict(data.get("specs") or {})
            for item in data["capabilities"]:
                if isinstance(item, CapabilitySpec):
                    spec = item
                elif isinstance(item, dict):
                    spec = CapabilitySpec.model_validate(item)
                else:
                    names.append(item)
                    continue
                names.append(spec.name)
                specs[spec.name] = spec
            data = {**data, "capabilities": names, "specs": specs}
        return data

    @field_validator("agent_id", "name")
    @classmethod
    def _non_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("capabilities")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if not value or any(not isinstance(v, str) or not v.strip() for v in value):
            raise ValueError("an agent needs at least one non-empty capability name")
        return value

    def spec(self, capability: str) -> CapabilitySpec:
        """The spec of one capability (a plain one when only a name was given)."""
        return self.specs.get(capability) or CapabilitySpec(name=capability)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy (specs without their pydantic params models)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any) -> AgentInfo:
        """The inverse of :meth:`to_dict`; raises :class:`KaizenValidationError`."""
        return _model_from_dict(cls, data)


_new_tuple = tuple.__new__


class InvokeResult(tuple[bool, Any, "dict[str, Any] | None", str, str]):
    """The outcome of one capability call: ``InvokeResult(success, result=None, error=None,
    agent_id="", capability="")``.

    ``error`` is ``{"error_code", "message"[, "details"]}`` exactly when ``success`` is
    False. Immutable, compared by value, its fields read as attributes. A tuple underneath,
    not a dataclass or a pydantic model: one is made per dispatched step, and building a
    tuple is one C call (a frozen dataclass sets each field through ``object.__setattr__``).
    """

    __slots__ = ()
    __match_args__ = ("success", "result", "error", "agent_id", "capability")

    def __new__(
        cls,
        success: bool,
        result: Any = None,
        error: dict[str, Any] | None = None,
        agent_id: str = "",
        capability: str = "",
    ) -> InvokeResult:
        if success and error is not None:
            raise KaizenValidationError("a successful result cannot carry an error")
        if not success and not error:
            raise KaizenValidationError("a failed result needs an error")
        return _new_tuple(cls, (success, result, error, agent_id, capability))

    def __getnewargs__(self) -> tuple[Any, ...]:
        return tuple(self)  # copy and pickle pass the fields to __new__

    @property
    def success(self) -> bool:
        return self[0]

    @property
    def result(self) -> Any:
        return self[1]

    @property
    def error(self) -> dict[str, Any] | None:
        return self[2]

    @property
    def agent_id(self) -> str:
        return self[3]

    @property
    def capability(self) -> str:
        return self[4]

    def __repr__(self) -> str:
        return (
            f"InvokeResult(success={self[0]!r}, result={self[1]!r}, error={self[2]!r}, "
            f"agent_id={self[3]!r}, capability={self[4]!r})"
        )

    @classmethod
    def ok(cls, result: Any = None, agent_id: str = "", capability: str = "") -> InvokeResult:
        return _new_tuple(cls, (True, result, None, agent_id, capability))

    @classmethod
    def fail(
        cls,
        error_code: ErrorCode | str,
        message: str,
        agent_id: str = "",
        capability: str = "",
        details: dict[str, Any] | None = None,
    ) -> InvokeResult:
        """A failed result; ``details`` is included when not empty."""
        error: dict[str, Any] = {"error_code": str(error_code), "message": message}
        if details:
            error["details"] = details
        return cls(False, None, error, agent_id, capability)

    @property
    def error_code(self) -> ErrorCode | None:
        """The error's code as an :class:`ErrorCode` (None on success or for a custom code)."""
        if self.error is None:
            return None
        try:
            return ErrorCode(self.error["error_code"])
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "result": self.result,
            "error": self.error,
            "agent_id": self.agent_id,
            "capability": self.capability,
        }

    @classmethod
    def from_dict(cls, data: Any) -> InvokeResult:
        """The inverse of :meth:`to_dict`; raises :class:`KaizenValidationError`."""
        if not isinstance(data, dict):
            raise KaizenValidationError(
                f"InvokeResult.from_dict needs a dict, got {type(data).__name__}"
            )
        success, error = data.get("success"), data.get("error")
        agent_id, capability = data.get("agent_id", ""), data.get("capability", "")
        if not isinstance(success, bool):
            raise KaizenValidationError("InvokeResult.from_dict: 'success' must be a bool")
        if error is not None and not isinstance(error, dict):
            raise KaizenValidationError("InvokeResult.from_dict: 'error' must be a dict or None")
        if not isinstance(agent_id, str) or not isinstance(capability, str):
            raise KaizenValidationError(
                "InvokeResult.from_dict: 'agent_id' and 'capability' must be strings"
            )
        return cls(success, data.get("result"), error, agent_id, capability)
