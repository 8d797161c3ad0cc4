from typing import Any

from django.apps import AppConfig


def _forget_queries(**kwargs: Any) -> None:
    """With DEBUG on, Django logs each query until a request starts; a worker runs no
    requests, so each task starts a fresh log (as a request does) instead of holding 9,000."""
    from django.db import reset_queries

    reset_queries()


class RotationConfig(AppConfig):
    name = "rotation"
    verbose_name = "Credential rotation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_q.signals import pre_execute

        from rotation import checks  # noqa: F401 (registers the system checks)
        from rotation.audit import signals

        signals.connect()
        pre_execute.connect(_forget_queries, dispatch_uid="rotation.forget_queries")
