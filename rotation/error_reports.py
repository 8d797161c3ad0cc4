"""What Django's error pages and error e-mails may show: never a secret, with DEBUG on too."""

from __future__ import annotations

import re
from types import FrameType
from typing import Any

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter


class SecretHidingReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, active whatever DEBUG says, hiding more than names it is told.

    Django's own filter stands down under DEBUG, so the debug page would show the locals
    `sensitive_variables` names; development runs with DEBUG on and real secrets may be set.
    Locals are hidden by name too (`password`, `token`, a dict's `new_access_token` key),
    since a library's frame (an authentication backend's) may hold one undecorated. URLs
    carry passwords (`DATABASE_URL`, `REDIS_URL`, in settings and in the environment that
    runserver copies into META).
    """

    hidden_settings = re.compile(
        r"API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|PLAINTEXT|URL|DATABASE|Q_CLUSTER",
        flags=re.IGNORECASE,
    )

    def is_active(self, request: HttpRequest | None) -> bool:
        return True

    def get_traceback_frame_variables(
        self, request: HttpRequest | None, tb_frame: FrameType
    ) -> Any:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, self.cleanse_setting(name, value)) for name, value in variables]

    def get_post_parameters(self, request: HttpRequest | None) -> Any:
        parameters = super().get_post_parameters(request)
        if not parameters:
            return parameters
        cleansed = parameters.copy()
        for name in cleansed:
            if self.hidden_settings.search(name):
                cleansed[name] = self.cleansed_substitute
        return cleansed
