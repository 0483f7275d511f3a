"""Errors of the client protocol; the codes are the room engine's (router/error_codes.py)."""

from router.error_codes import ErrorCode

__all__ = ["ErrorCode", "ProtocolError"]


class ProtocolError(Exception):
    """The remote side broke the protocol; `code` is what to answer, `close` whether to hang up."""

    def __init__(self, code: ErrorCode, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
