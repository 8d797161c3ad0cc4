"""Sending a chunk's PUTs, in this thread or in threads as Vercel's latency makes worth it."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection

from rotation.crypto import CryptoError
from rotation.services.backoff import resource_secrets_put
from rotation.services.pace import PACER, threads_may_query
from rotation.services.push.claim import Push

if TYPE_CHECKING:
    import requests


# What `push_one` returns for a push it did not start (the task ran out of time).
NOT_STARTED = "not started"


def push_one(
    push: Push,
    *,
    tokens: dict[int, str],
    session: requests.Session | None,
    deadline: float | None,
) -> str | None:
    """One rotation's PUT with its retries: None when Vercel took it, else the state."""
    if deadline is not None and time.monotonic() > deadline:
        return NOT_STARTED
    installation = push.rotation.resource.installation
    try:
        secrets = push.pending.secrets()
        if installation.pk not in tokens:
            tokens[installation.pk] = installation.access_token()
    except CryptoError as exc:
        return push.fail(status=None, code="decrypt_failed", message=str(exc))
    try:
        return resource_secrets_put(
            push,
            resource=push.rotation.resource,
            token=tokens[installation.pk],
            secrets=secrets,
            session=session,
            deadline=deadline,
        )
    finally:
        del secrets


def push_concurrency(count: int) -> int:
    """Threads pushing a chunk of `count`; 0 means in this thread.

    As many as Vercel's latency makes worth having (`Pacer.threads`), up to
    `ROTATION_PUSH_CONCURRENCY`; none where threads may not use the database
    (`threads_may_query`).
    """
    threads = min(PACER.threads(settings.ROTATION_PUSH_CONCURRENCY), count)
    if threads <= 1 or not threads_may_query():
        return 0
    return threads


class InFlight:
    """Pushes of a chunk with up to `ROTATION_PUSH_CONCURRENCY` PUTs in flight (each
    installation capped by its pace, `rotation.services.pace`).

    The threads worth having are counted again as PUTs complete (`push_concurrency`), and
    started when the count rises: a chunk that began pushing here, one PUT at a time, takes on
    threads as soon as Vercel turns out slow. No thread is ever stopped early: one finds no
    push waiting, and ends.
    """

    def __init__(self, *, session: requests.Session | None, deadline: float | None) -> None:
        self._session, self._deadline = session, deadline
        self._tokens: dict[int, str] = {}
        self._lock = threading.Lock()
        self._waiting: deque[Push] = deque()
        self._threads = 0  # running; changed under the lock, with `_waiting`
        self._done: queue.SimpleQueue[tuple[Push, str | BaseException | None]] = queue.SimpleQueue()
        self.outstanding = 0  # handed in, their outcomes not yet taken

    def add(self, pushes: list[Push]) -> None:
        with self._lock:
            self._waiting.extend(pushes)
        self.outstanding += len(pushes)
        self._grow()

    @property
    def threads(self) -> int:
        """Threads running."""
        with self._lock:
            return self._threads

    def ready(self) -> tuple[Push, str | BaseException | None] | None:
        """The next outcome if one is in (see `take`), else None."""
        try:
            done = self._done.get_nowait()
        except queue.Empty:
            return None
        self._taken()
        return done

    def take(self) -> tuple[Push, str | BaseException | None]:
        """The next outcome: an exception raised by the push, `NOT_STARTED`, None when Vercel
        took it, else the state. Pushes here when no thread is running."""
        try:
            done = self._done.get_nowait()
        except queue.Empty:
            with self._lock:
                push = self._waiting.popleft() if self._waiting and not self._threads else None
            done = (push, self._push(push)) if push is not None else self._done.get()
        self._taken()
        return done

    def _taken(self) -> None:
        self.outstanding -= 1
        self._grow()

    def _grow(self) -> None:
        wanted = push_concurrency(self.outstanding)
        with self._lock:
            start = max(0, min(wanted - self._threads, len(self._waiting)))
            self._threads += start
        for _ in range(start):
            threading.Thread(target=self._work, name="push", daemon=True).start()

    def _work(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._waiting:
                        self._threads -= 1
                        return
                    push = self._waiting.popleft()
                self._done.put((push, self._push(push)))
        finally:
            connection.close()  # this thread's own connection

    def _push(self, push: Push) -> str | BaseException | None:
        try:
            return push_one(
                push, tokens=self._tokens, session=self._session, deadline=self._deadline
            )
        except Exception as exc:  # handed to the caller, raised once the rest is recorded
            return exc
