"""Anchors: append-only places outside the database that keep the audit chain's checkpoints.

`AUDIT_ANCHOR_URL` names one; its scheme picks the sink class in `SINKS`. A sink appends
one line (a signed checkpoint, see `rotation.audit.checkpoints`) and reads its lines back,
oldest first. Only `file://` ships; an `s3://` or `https://` sink is a class with the same
two methods registered under its scheme. Knows no database.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from django.conf import settings


class AnchorError(Exception):
    """The anchor is misconfigured, unreachable or unreadable; the message names it."""


class AnchorSink(Protocol):
    def append(self, line: str) -> None: ...

    def lines(self) -> Iterator[str]: ...


class FileAnchor:
    """A JSON-lines file opened for append only, locked while writing, synced to disk.

    Give the file to an account the database administrators do not control (or ship it
    elsewhere with the system's log tooling): an anchor the same person can rewrite
    anchors nothing.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise AnchorError(
                f"audit anchor {url!r}: a file URL is file:///absolute/path (no host)"
            )
        self.path = Path(unquote(parts.path))

    def __repr__(self) -> str:
        return f"FileAnchor({str(self.path)!r})"

    def append(self, line: str) -> None:
        if "\n" in line or "\r" in line:
            raise AnchorError("an anchor line must be a single line")
        data = (line + "\n").encode("ascii")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                os.write(descriptor, data)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as exc:
            raise AnchorError(
                f"cannot append to the audit anchor {self.path}: {exc.strerror}"
            ) from None

    def lines(self) -> Iterator[str]:
        """Each line, oldest first; nothing when the file does not exist yet."""
        try:
            with self.path.open(encoding="ascii", errors="replace") as handle:
                for line in handle:
                    yield line.rstrip("\n")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AnchorError(f"cannot read the audit anchor {self.path}: {exc.strerror}") from None


SINKS: dict[str, type[FileAnchor]] = {"file": FileAnchor}


def anchor_sink(url: str | None = None) -> AnchorSink:
    """The sink for `url` (default `AUDIT_ANCHOR_URL`); AnchorError for a missing or unknown one."""
    url = settings.AUDIT_ANCHOR_URL if url is None else url
    if not url:
        raise AnchorError("AUDIT_ANCHOR_URL is not set: there is nowhere to write checkpoints")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SINKS:
        known = ", ".join(f"{name}://" for name in sorted(SINKS))
        given = f"{scheme}://" if scheme else "(none)"
        raise AnchorError(f"AUDIT_ANCHOR_URL has the unsupported scheme {given}; use {known}")
    return SINKS[scheme](url)


def anchor_label(url: str | None = None) -> str:
    """The anchor URL without user, password or query, fit for an audit event or a log."""
    parts = urlsplit(settings.AUDIT_ANCHOR_URL if url is None else url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
