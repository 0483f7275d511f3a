"""The exit codes of `meshchat` commands, one per kind of outcome (docs/cli.md#exit-codes)."""

from mesh.wire.errors import ErrorCode

EXIT_OK = 0
# The node refused the request itself (forbidden, not_found, conflict, ...): a retry
# would be refused too.
EXIT_REFUSED = 1
EXIT_USAGE = 2
# The mesh could not do it now (unavailable, rate_limited, a lost connection, something
# sent but not acknowledged); the same command may work later.
EXIT_UNAVAILABLE = 3
# A node whose database was deleted or replaced under it stopped rather than acknowledge.
EXIT_DATA_DIR_LOST = 4
# No node could be reached at all: nothing listening, another kind of port, no route.
EXIT_UNREACHABLE = 5
# The token was refused, or names another user than --user.
EXIT_UNAUTHORIZED = 6

RETRY_LATER_CODES = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL})


def exit_code_of(code: ErrorCode) -> int:
    """The exit code for a node's refusal with `code`."""
    if code == ErrorCode.UNAUTHORIZED:
        return EXIT_UNAUTHORIZED
    return EXIT_UNAVAILABLE if code in RETRY_LATER_CODES else EXIT_REFUSED
