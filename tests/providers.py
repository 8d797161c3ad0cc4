"""Providers the tests configure by dotted path (settings take a path, not an object)."""

from __future__ import annotations


class PartnerBackendProvider:
    """Stands in for a partner's own provider where start-up only needs one that imports."""

    def create(self, *, resource):
        raise NotImplementedError("start-up tests never rotate")

    def expire(self, *, resource, version):
        raise NotImplementedError("start-up tests never rotate")


class NotAProvider:
    """Has neither create nor expire."""


class FailingExpiryProvider:
    """A partner backend that cannot expire credentials right now."""

    def create(self, *, resource):
        raise NotImplementedError

    def expire(self, *, resource, version):
        raise ConnectionError("partner backend unreachable")
