from django.apps import AppConfig


class RotationConfig(AppConfig):
    name = "rotation"
    verbose_name = "Credential rotation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from rotation import signals

        signals.connect()
