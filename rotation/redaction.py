"""Masking secret values in a message before it is stored, logged or shown.

An error text from Vercel or a provider may echo what it was sent, whole or in part (the
password inside a `DATABASE_URL`, a slice of a token). `redact` masks every secret value,
every run of MIN_RUN or more characters of one, and the password part of every URL
(`scheme://user:PASSWORD@host`) whether or not it is a known secret. Truncate after masking,
never before: a cut could leave a run too short to be recognised. Imports no models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "[redacted]"
# Runs this long of a secret value are masked wherever they appear.
MIN_RUN = 8
# Shorter whole values are masked too, down to this length (shorter ones would mask words).
MIN_VALUE = 4
# Masking reads at most this much of a message; callers keep far less (the rest is cut).
SCAN_LIMIT = 100_000
# `scheme://user:password@`; the password runs to the last `@` before a `/` or a space.
URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*:)[^\s/]*@")


def secret_values(secrets: Iterable[dict[str, Any]]) -> list[str]:
    """Every value of a secret set (each secret's value and its per-environment overrides)."""
    values = []
    for secret in secrets:
        values.append(secret["value"])
        values.extend((secret.get("environmentOverrides") or {}).values())
    return values


def _masked_spans(text: str, secrets: Iterable[str]) -> list[tuple[int, int]]:
    spans = []
    for secret in secrets:
        if not isinstance(secret, str) or len(secret) < MIN_VALUE:
            continue
        # Every window of MIN_RUN characters; together their matches cover every longer run.
        pieces = (
            {secret}
            if len(secret) <= MIN_RUN
            else {secret[start : start + MIN_RUN] for start in range(len(secret) - MIN_RUN + 1)}
        )
        for piece in pieces:
            start = text.find(piece)
            while start != -1:
                spans.append((start, start + len(piece)))
                start = text.find(piece, start + 1)
    return spans


def redact(text: str, secrets: Iterable[str] = (), *, limit: int | None = None) -> str:
    """`text` with secret values, runs of them and URL passwords masked, then cut to `limit`."""
    text = text[:SCAN_LIMIT]
    merged: list[list[int]] = []
    for start, end in sorted(_masked_spans(text, secrets)):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    parts, position = [], 0
    for start, end in merged:
        parts += [text[position:start], MASK]
        position = end
    text = "".join([*parts, text[position:]])
    text = URL_PASSWORD.sub(lambda match: match.group(1) + MASK + "@", text)
    return text if limit is None else text[:limit]
