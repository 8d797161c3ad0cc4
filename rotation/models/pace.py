"""How fast calls to Vercel may go for one installation's token, shared by every worker on
every node."""

from __future__ import annotations

from django.db import models

from rotation.models.resources import Installation


class Pace(models.Model):
    """How fast one kind of call may go for one installation's token, shared by every worker
    on every node: Vercel rate-limits per token and endpoint, so a 429 seen by one worker
    pauses all of them.

    A row exists only once an installation has been rate limited or Vercel's answers carried
    rate-limit headers: without one, calls go at `ROTATION_PUSH_PER_INSTALLATION` requests in
    flight per worker. `concurrency` is halved on a 429 and grows back by one per
    `concurrency` successful calls (AIMD). While `rate_limit` is set, every call also takes a
    token from a bucket refilled at `rate_limit` per `rate_window` seconds and primed from the
    headers, so calls slow down before Vercel answers 429.
    """

    paused_until = models.DateTimeField(null=True, blank=True)
    concurrency = models.PositiveSmallIntegerField()
    rate_limited_count = models.PositiveIntegerField(default=0)
    # X-RateLimit-Limit as last seen; None: Vercel sent none, calls are not paced.
    rate_limit = models.PositiveIntegerField(null=True, blank=True)
    # The window the limit counts over, in seconds: Vercel does not say, the reset times bound it.
    rate_window = models.FloatField(default=1.0)
    # Calls Vercel would take at `tokens_at`, as estimated (negative: calls booked ahead).
    tokens = models.FloatField(default=0.0)
    tokens_at = models.DateTimeField(null=True, blank=True)
    # Calls that took a token, numbering each answer among the sends; and the latest answer used.
    sent = models.PositiveBigIntegerField(default=0)
    observed_seq = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self._meta.verbose_name} of installation {self.installation_id}"  # type: ignore[attr-defined]


class PushPace(Pace):
    """The pace of secret pushes (PUT .../secrets)."""

    installation = models.OneToOneField(
        Installation, on_delete=models.CASCADE, primary_key=True, related_name="push_pace"
    )

    class Meta:
        verbose_name = "push pace"


class NotificationPace(Pace):
    """The pace of dashboard notifications (PATCH .../resources/{id}), an endpoint Vercel
    limits on its own."""

    installation = models.OneToOneField(
        Installation, on_delete=models.CASCADE, primary_key=True, related_name="notification_pace"
    )

    class Meta:
        verbose_name = "notification pace"
