"""The one error the kit raises: what is wrong and what to do about it.

The command line prints both and exits 2; nothing the pod can fix ever shows a traceback.
"""

from __future__ import annotations


class AppError(Exception):
    """``message`` says what is wrong, ``hint`` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message
