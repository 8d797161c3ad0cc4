"""How fast pushes may go for one installation's token, shared by every worker on every node."""

from __future__ import annotations

from django.db import models

from rotation.models.resources import Installation


class PushPace(models.Model):
    """Vercel rate-limits per token, so a 429 seen by one worker pauses all of them.

    A row exists only once an installation has been rate limited: without one, pushes go at
    `ROTATION_PUSH_PER_INSTALLATION` requests in flight per worker. `concurrency` is halved on
    a 429 and grows back by one per `concurrency` successful pushes (AIMD).
    """

    installation = models.OneToOneField(
        Installation, on_delete=models.CASCADE, primary_key=True, related_name="push_pace"
    )
    paused_until = models.DateTimeField(null=True, blank=True)
    concurrency = models.PositiveSmallIntegerField()
    rate_limited_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "push pace"

    def __str__(self) -> str:
        return f"pace of installation {self.installation_id}"
