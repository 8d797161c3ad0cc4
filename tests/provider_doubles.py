"""Providers the tests configure by dotted path (settings take a path, not an object)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.db import connection

from rotation.devtools.demo_provider import RandomCredentialProvider


class PartnerBackendProvider:
    """Stands in for a partner's own provider where start-up only needs one that imports."""

    def create(self, *, resource, rotation_id=None):
        raise NotImplementedError("start-up tests never rotate")

    def expire(self, *, resource, version):
        raise NotImplementedError("start-up tests never rotate")


class NotAProvider:
    """Has neither create nor expire."""


class FailingExpiryProvider:
    """A partner backend that cannot expire credentials right now."""

    def create(self, *, resource, rotation_id=None):
        raise NotImplementedError

    def expire(self, *, resource, version):
        raise ConnectionError("partner backend unreachable")


class LockCheckingProvider(RandomCredentialProvider):
    """The demo provider, noting each call and whether a database transaction was open.

    A call inside `transaction.atomic()` could be holding row locks, so it also fails: the
    service then records a provider failure, which the tests see as well.
    """

    calls: ClassVar[list[str]] = []
    under_lock: ClassVar[list[str]] = []

    def create(self, *, resource, rotation_id=None):
        self._note(f"create {resource.vercel_id}")
        return super().create(resource=resource, rotation_id=rotation_id)

    def expire(self, *, resource, version):
        self._note(f"expire {version.pk}")
        super().expire(resource=resource, version=version)

    def _note(self, call: str) -> None:
        type(self).calls.append(call)
        if connection.in_atomic_block:
            type(self).under_lock.append(call)
            raise AssertionError(f"provider call under a transaction: {call}")


class WorkerDied(BaseException):
    """What a worker killed mid-task looks like to the code after it: nothing catches it."""


class DiesAfterExpiringProvider(RandomCredentialProvider):
    """Expires at the partner's backend, then the worker dies before recording it."""

    expired: ClassVar[list[str]] = []

    def expire(self, *, resource, version):
        type(self).expired.append(str(version.pk))
        raise WorkerDied


class SecondWorkerProvider(RandomCredentialProvider):
    """While one worker is in the provider call, a second one runs the same step.

    `during_expire`/`during_create` (set by the test) is that second worker; what it
    returned is kept in `seen`.
    """

    during_create: ClassVar[Callable[[Any], Any] | None] = None
    during_expire: ClassVar[Callable[[Any], Any] | None] = None
    seen: ClassVar[list[Any]] = []
    calls: ClassVar[list[str]] = []

    def create(self, *, resource, rotation_id=None):
        type(self).calls.append("create")
        if type(self).during_create is not None:
            type(self).seen.append(type(self).during_create(resource))
        return super().create(resource=resource, rotation_id=rotation_id)

    def expire(self, *, resource, version):
        type(self).calls.append("expire")
        if type(self).during_expire is not None:
            type(self).seen.append(type(self).during_expire(version))
        super().expire(resource=resource, version=version)


class WorkerKilled(BaseException):
    """What a worker killed mid-task looks like to the code it was running."""


class DyingProvider:
    """Makes credentials like the demo provider, then the worker dies on the 15th call."""

    def __init__(self):
        from rotation.devtools.demo_provider import RandomCredentialProvider

        self.demo = RandomCredentialProvider()
        self.calls = 0

    def create(self, *, resource, rotation_id=None):
        self.calls += 1
        if self.calls == 15:
            raise WorkerKilled
        return self.demo.create(resource=resource, rotation_id=rotation_id)

    def expire(self, *, resource, version):
        return None


def reset_doubles() -> None:
    """Forget what the doubles recorded (tests/conftest.py does this around every test)."""
    LockCheckingProvider.calls.clear()
    LockCheckingProvider.under_lock.clear()
    DiesAfterExpiringProvider.expired.clear()
    SecondWorkerProvider.calls.clear()
    SecondWorkerProvider.seen.clear()
    SecondWorkerProvider.during_create = None
    SecondWorkerProvider.during_expire = None
    DiesAfterCreatingLoginProvider.died.clear()


class DeclaringProvider(RandomCredentialProvider):
    """The demo provider, declaring metadata and secret names like a real backend's would."""

    metadata_fields = ("role", "database")
    secret_names = ("DATABASE_URL", "PGPASSWORD")


class DiesAfterCreatingLoginProvider:
    """The PostgreSQL provider, but the worker dies once right after `create` returned:
    the login exists at the partner's cluster, and nothing recorded it."""

    died: ClassVar[list[int]] = []

    def __init__(self):
        from rotation.providers.postgres import PostgresRoleProvider

        self.real = PostgresRoleProvider()

    def create(self, *, resource, rotation_id):
        made = self.real.create(resource=resource, rotation_id=rotation_id)
        if not type(self).died:
            type(self).died.append(rotation_id)
            raise WorkerDied
        return made

    def expire(self, *, resource, version):
        self.real.expire(resource=resource, version=version)
