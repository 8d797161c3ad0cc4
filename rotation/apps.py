from django.apps import AppConfig


class RotationConfig(AppConfig):
    name = "rotation"
    verbose_name = "Credential rotation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from rotation import checks  # noqa: F401 (registers the system checks)
        from rotation.audit import signals

        signals.connect()
