"""Exception types, one per failure kind. A ``StageError`` ends a stage with a readable message
(no traceback); a ``RejectedInput`` becomes a rejection record and the run goes on."""

from __future__ import annotations


class StageError(RuntimeError):
    """A stage cannot run (missing inputs, wrong config): printed as one line, exit code 1."""


class RejectedInput(Exception):
    """One input file cannot be used; ``reason`` is written to the rejections table."""

    def __init__(self, reason: str, stage: str = "decode") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage
