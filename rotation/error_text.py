"""How a failure is stored on a row for staff: the exception's class and text, masked, bounded."""

from collections.abc import Iterable

from rotation.redaction import redact

ERROR_LIMIT = 500


def error_text(exc: BaseException, *, secrets: Iterable[str] = ()) -> str:
    """`Class: message` with `secrets` (and runs of them) and URL passwords masked, then cut
    to ERROR_LIMIT characters."""
    return redact(f"{type(exc).__name__}: {exc}", secrets, limit=ERROR_LIMIT)
