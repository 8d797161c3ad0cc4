"""Rules for values that come from outside (the import file, the installation form), kept
once so both refuse the same things with the same words.

Ids are Vercel's id characters (ASCII letters, digits, `_`, `-`): no spaces around them, no
right-to-left overrides, no fullwidth lookalikes. Access tokens are printable ASCII without
whitespace, as a bearer token in an HTTP header must be. An error never echoes more than
ECHO_LIMIT characters of what it refuses.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

ECHO_LIMIT = 100
VERCEL_ID = re.compile(r"[A-Za-z0-9_-]+")
ACCESS_TOKEN = re.compile(r"[\x21-\x7e]+")


def shown(value: object) -> str:
    """`repr(value)`, cut to ECHO_LIMIT characters, for an error line."""
    text = repr(value)
    return text if len(text) <= ECHO_LIMIT else text[: ECHO_LIMIT - 3] + "..."


def vercel_id_problem(value: str) -> str | None:
    """Why `value` is not a Vercel id, or None."""
    if VERCEL_ID.fullmatch(value):
        return None
    return f"{shown(value)} is not a Vercel id (ASCII letters, digits, '_' and '-' only, no spaces)"


def access_token_problem(value: str) -> str | None:
    """Why `value` cannot be a bearer token, or None (the token is never echoed)."""
    if ACCESS_TOKEN.fullmatch(value):
        return None
    return "must be printable ASCII without spaces or line breaks"


def validate_vercel_id(value: str) -> None:
    """Django validator of `vercel_id_problem`."""
    problem = vercel_id_problem(value)
    if problem:
        raise ValidationError(problem, code="invalid")


def validate_access_token(value: str) -> None:
    """Django validator of `access_token_problem`."""
    problem = access_token_problem(value)
    if problem:
        raise ValidationError(f"The access token {problem}.", code="invalid")
