from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    name = "rotation.devtools"
    label = "devtools"
    verbose_name = "Development tools"
