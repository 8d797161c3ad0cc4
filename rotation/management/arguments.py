"""Reading commands' arguments that name users and installations, with clear errors."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from rotation.models import Installation


def user_named(username: str) -> Any:
    """The user; a CommandError naming it when there is none."""
    user_model = get_user_model()
    try:
        return user_model.objects.get_by_natural_key(username)
    except user_model.DoesNotExist:
        raise CommandError(f"no user {username!r}") from None


def installation_pks(vercel_ids: list[str]) -> dict[str, int]:
    """Installation ids (icfg_...) -> our ids, in the order given; unknown ones are an error."""
    wanted = list(dict.fromkeys(vercel_ids))
    found = dict(Installation.objects.filter(vercel_id__in=wanted).values_list("vercel_id", "pk"))
    unknown = [vercel_id for vercel_id in wanted if vercel_id not in found]
    if unknown:
        raise CommandError(f"no such installation: {', '.join(unknown)}")
    return {vercel_id: found[vercel_id] for vercel_id in wanted}
