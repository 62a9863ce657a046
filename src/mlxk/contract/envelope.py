"""The envelope every command returns, and the one exception type operations raise.

Operations never print: they return an :class:`Envelope` (or raise :class:`MlxkError`,
which the CLI turns into an error envelope). The exit code is derived from the error
type, so scripts get the same code whether they read JSON or not.
"""

from __future__ import annotations

from typing import Any

# Spec 0.1.7 "Exit Codes": 1 validation/not found, 2 network, 3 permission/filesystem.
_EXIT_CODES: dict[str, int] = {
    "ValidationError": 1,
    "ambiguous_match": 1,
    "model_not_found": 1,
    "locks_present": 1,
    "not_runnable": 1,
    "unhealthy": 1,
    "workspace_model": 1,  # rm on a folder the user manages (mlxk never deletes those)
    "cancelled": 130,
    "download_failed": 2,
    "NetworkError": 2,
    "access_denied": 2,
    "auth_error": 2,
    "push_failed": 2,
    "clone_failed": 2,
    "PermissionError": 3,
    "FilesystemError": 3,
    "OperationError": 3,
    "InternalError": 1,
}


def exit_code_for(error_type: str | None) -> int:
    if error_type is None:
        return 0
    return _EXIT_CODES.get(error_type, 1)


class MlxkError(Exception):
    """A failure with a contract error type, a message and optional partial data.

    ``extra`` lands inside the ``error`` object (e.g. ``matches`` for ambiguous names);
    ``data`` is the command's partial data as the spec shows for that error.
    """

    def __init__(
        self,
        type: str,
        message: str,
        *,
        data: dict[str, Any] | None = None,
        exit_code: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.data = data
        self.extra = extra
        self.exit_code = exit_code if exit_code is not None else exit_code_for(type)

    def error_object(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, **self.extra}


class Envelope:
    """``{"status", "command", "data", "error"}`` plus the exit code it implies."""

    __slots__ = ("command", "data", "error", "exit_code")

    def __init__(
        self,
        command: str,
        data: Any = None,
        error: dict[str, Any] | None = None,
        exit_code: int | None = None,
    ) -> None:
        self.command = command
        self.data = data
        self.error = error
        if exit_code is None:
            exit_code = exit_code_for(error["type"]) if error else 0
        self.exit_code = exit_code

    @classmethod
    def success(cls, command: str, data: Any) -> "Envelope":
        return cls(command, data)

    @classmethod
    def failure(cls, command: str, err: MlxkError) -> "Envelope":
        return cls(command, err.data, err.error_object(), err.exit_code)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "success" if self.error is None else "error",
            "command": self.command,
            "data": self.data,
            "error": self.error,
        }
