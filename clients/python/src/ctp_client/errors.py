"""Exceptions of ctp_client: every failed RPC becomes a :class:`CtpError` carrying the gRPC
status code and the daemon's message, and task outcomes that are not success get their own
types, so callers can ``except`` exactly what they handle."""
from __future__ import annotations

from typing import Optional

import grpc


class CtpError(Exception):
    """An RPC to ctpd failed.

    Attributes:
        code: the :class:`grpc.StatusCode` (``None`` for errors that are not RPC failures).
        message: the daemon's message, e.g. ``sample 12: image is 5000x300 pixels; ...``.
    """

    def __init__(self, code: Optional[grpc.StatusCode], message: str):
        self.code = code
        self.message = message
        name = code.name if code is not None else "ERROR"
        super().__init__(f"{name}: {message}")

    @property
    def code_name(self) -> str:
        """``INVALID_ARGUMENT``, ``NOT_FOUND``, … (``ERROR`` without a gRPC code)."""
        return self.code.name if self.code is not None else "ERROR"


class InvalidArgument(CtpError):
    """Bad input (a sample, a setting, a malformed message); the message names it."""


class NotFound(CtpError):
    """Unknown task, model or version."""


class AlreadyExists(CtpError):
    """The resource exists already."""


class FailedPrecondition(CtpError):
    """E.g. cancelling a finished task, or an idempotency key reused with other content."""


class Aborted(CtpError):
    """A compare-and-set lost, e.g. rollback with a stale ``expected_head``."""


class PermissionDenied(CtpError):
    """The token lacks the scope (``submit``, ``admin``) the RPC needs."""


class Unauthenticated(CtpError):
    """No or unknown bearer token."""


class ResourceExhausted(CtpError):
    """A message over the daemon's limit, or its disk is full."""


class Unavailable(CtpError):
    """The daemon cannot be reached, is recovering, or is draining."""


class DeadlineExceeded(CtpError):
    """The call's timeout passed."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(e: grpc.RpcError) -> CtpError:
    """The :class:`CtpError` subclass for a failed call."""
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    return _BY_CODE.get(code, CtpError)(code, details or "")


class TaskFailed(CtpError):
    """A watched task ended FAILED or CANCELLED. ``task`` is its final state (a ``Task``
    message) when known, ``state`` the state name."""

    def __init__(self, task_id: str, state: str, error: str):
        self.task_id = task_id
        self.state = state
        super().__init__(None, f"task {task_id} ended {state}: {error}")


class GateRejected(CtpError):
    """The task SUCCEEDED but the model's promotion gate refused its version: the version
    exists (state REJECTED) and the head did not move."""

    def __init__(self, task_id: str, version: Optional[int], reason: str):
        self.task_id = task_id
        self.version = version
        self.reason = reason
        super().__init__(
            None, f"version {version} was rejected ({reason}); the head did not move"
        )
