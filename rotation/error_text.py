"""How a failure is stored on a row for staff: the exception's class and text, bounded."""

ERROR_LIMIT = 500


def error_text(exc: BaseException) -> str:
    """`Class: message`, at most ERROR_LIMIT characters (callers pass errors that hold no
    secret value: provider, mail and Vercel client errors never quote one)."""
    return f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT]
