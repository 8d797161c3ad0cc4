"""How fast pushes may go for one installation's token, shared by every worker on every node."""

from __future__ import annotations

from django.db import models

from rotation.models.resources import Installation


class PushPace(models.Model):
    """Vercel rate-limits per token, so a 429 seen by one worker pauses all of them.

    A row exists only once an installation has been rate limited or Vercel's answers carried
    rate-limit headers: without one, pushes go at `ROTATION_PUSH_PER_INSTALLATION` requests in
    flight per worker. `concurrency` is halved on a 429 and grows back by one per
    `concurrency` successful pushes (AIMD). While `rate_limit` is set, every PUT also takes a
    token from a bucket refilled at `rate_limit` per `rate_window` seconds and primed from the
    headers, so pushes slow down before Vercel answers 429.
    """

    installation = models.OneToOneField(
        Installation, on_delete=models.CASCADE, primary_key=True, related_name="push_pace"
    )
    paused_until = models.DateTimeField(null=True, blank=True)
    concurrency = models.PositiveSmallIntegerField()
    rate_limited_count = models.PositiveIntegerField(default=0)
    # X-RateLimit-Limit as last seen; None: Vercel sent none, pushes are not paced.
    rate_limit = models.PositiveIntegerField(null=True, blank=True)
    # The window the limit counts over, in seconds: Vercel does not say, the reset times bound it.
    rate_window = models.FloatField(default=1.0)
    # PUTs Vercel would take at `tokens_at`, as estimated (negative: PUTs booked ahead).
    tokens = models.FloatField(default=0.0)
    tokens_at = models.DateTimeField(null=True, blank=True)
    # PUTs that took a token, numbering each answer among the sends; and the latest answer used.
    sent = models.PositiveBigIntegerField(default=0)
    observed_seq = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "push pace"

    def __str__(self) -> str:
        return f"pace of installation {self.installation_id}"
