"""kaizen_async: a minimal, deterministic substrate for agent workflows.

A session is an append-only, hash-chained trajectory + versioned state + artifacts, run
as an actor; agents are long-lived tasks with mailboxes; a dispatcher routes capability
calls to them; a planner streams a model's plan so dispatch starts before it is complete.
"""

from __future__ import annotations

from ._agent import Agent as Agent
from ._agent import AgentProtocol as AgentProtocol
from ._agent import capability as capability
from ._dispatcher import Dispatcher as Dispatcher
from ._dispatcher import DispatchResult as DispatchResult
from ._exceptions import ArtifactNotFoundError as ArtifactNotFoundError
from ._exceptions import ArtifactTooLargeError as ArtifactTooLargeError
from ._exceptions import DispatchError as DispatchError
from ._exceptions import ErrorCode as ErrorCode
from ._exceptions import KaizenError as KaizenError
from ._exceptions import KaizenNotFoundError as KaizenNotFoundError
from ._exceptions import KaizenTypeError as KaizenTypeError
from ._exceptions import KaizenValidationError as KaizenValidationError
from ._exceptions import LLMError as LLMError
from ._exceptions import PersistError as PersistError
from ._exceptions import PersistFileNotFoundError as PersistFileNotFoundError
from ._exceptions import SchemaMismatchError as SchemaMismatchError
from ._exceptions import SessionBusyError as SessionBusyError
from ._exceptions import SessionClosedError as SessionClosedError
from ._exceptions import SessionCorruptedError as SessionCorruptedError
from ._exceptions import SessionExistsError as SessionExistsError
from ._exceptions import SessionFencedError as SessionFencedError
from ._exceptions import SessionInUseError as SessionInUseError
from ._exceptions import SessionNotFoundError as SessionNotFoundError
from ._exceptions import SessionReadOnlyError as SessionReadOnlyError
from ._exceptions import StateKeyNotFoundError as StateKeyNotFoundError
from ._hub import HubStatistics as HubStatistics
from ._hub import SessionHub as SessionHub
from ._hub import SessionLease as SessionLease
from ._mailbox import MailboxStatistics as MailboxStatistics
from ._planner import Planner as Planner
from ._planner import PlanResult as PlanResult
from ._planner import PlanStream as PlanStream
from ._session import Session as Session
from ._session import SessionStatistics as SessionStatistics
from ._session import Transaction as Transaction
from ._state import SCHEMA_VERSION as SCHEMA_VERSION
from ._trajectory import EntryType as EntryType
from ._trajectory import TrajectoryEntry as TrajectoryEntry
from ._types import AgentInfo as AgentInfo
from ._types import CapabilityCall as CapabilityCall
from ._types import CapabilitySpec as CapabilitySpec
from ._types import InvokeResult as InvokeResult

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Agent",
    "AgentInfo",
    "AgentProtocol",
    "CapabilityCall",
    "CapabilitySpec",
    "DispatchResult",
    "Dispatcher",
    "HubStatistics",
    "InvokeResult",
    "MailboxStatistics",
    "PlanResult",
    "PlanStream",
    "Planner",
    "capability",
    "ArtifactNotFoundError",
    "ArtifactTooLargeError",
    "DispatchError",
    "EntryType",
    "ErrorCode",
    "KaizenError",
    "KaizenNotFoundError",
    "KaizenTypeError",
    "KaizenValidationError",
    "LLMError",
    "PersistError",
    "PersistFileNotFoundError",
    "SchemaMismatchError",
    "Session",
    "SessionClosedError",
    "SessionCorruptedError",
    "SessionBusyError",
    "SessionExistsError",
    "SessionFencedError",
    "SessionHub",
    "SessionInUseError",
    "SessionLease",
    "SessionNotFoundError",
    "SessionReadOnlyError",
    "SessionStatistics",
    "StateKeyNotFoundError",
    "TrajectoryEntry",
    "Transaction",
    "__version__",
]
