"""Learning installations from the project's database, so `manage.py fake_vercel` without
`--config` answers for whatever the app holds, and keeps up as installations are added.

The database is the truth for the installations it holds: removed installations and
resources are forgotten, and a changed token replaces the old one.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from django.db import connection

from rotation.crypto import CryptoError
from rotation.devtools.fake_vercel.installations import InstallationStore
from rotation.models import Installation, Resource

logger = logging.getLogger(__name__)


def installations_from_database(store: InstallationStore) -> int:
    """Put the database's installations into `store`; returns how many it knows from it."""
    count = 0
    for installation in Installation.objects.prefetch_related("resources"):
        if installation.status == Installation.Status.REMOVED:
            store.remove(installation.vercel_id)
            continue
        if not installation.has_access_token:
            continue
        try:
            token = installation.access_token()
        except CryptoError:
            logger.warning("fake vercel: cannot read the token of %s", installation.vercel_id)
            continue
        resources = {
            resource.vercel_id: resource.product
            for resource in installation.resources.all()
            if resource.status != Resource.Status.REMOVED
        }
        store.replace(installation.vercel_id, token, resources)
        store.credentials.learn_names(
            installation.vercel_id, {r.vercel_id: r.name for r in installation.resources.all()}
        )
        count += 1
    return count


class DatabaseReload:
    """Reads the database again when a call names something the store does not know.

    Called on handler threads; at most one read per `interval` seconds, so a client hammering
    an unknown installation does not hammer the database too.
    """

    def __init__(self, store: InstallationStore, *, enabled: bool, interval: float = 1.0) -> None:
        self.store = store
        self.enabled = enabled
        self.interval = interval
        self._lock = threading.Lock()
        self._reloaded_at = -math.inf

    def __call__(self) -> bool:
        """Whether the store was refreshed (False when disabled, too soon, or it failed)."""
        if not self.enabled:
            return False
        with self._lock:
            now = time.monotonic()
            if now - self._reloaded_at < self.interval:
                return False
            self._reloaded_at = now
        try:
            installations_from_database(self.store)
        except Exception:
            logger.exception("fake vercel: reloading installations from the database failed")
            return False
        finally:
            # Handler threads are short-lived: give their connection back.
            connection.close()
        return True
