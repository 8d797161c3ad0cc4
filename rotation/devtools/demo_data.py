"""Demo data for `manage.py seed_demo`: users, installations and resources on the stand-in."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from rotation.models import ConnectedProject, CredentialVersion, Installation, Resource
from rotation.roles import COMPLIANCE, SUPPORT, SUPPORT_LEAD, roles_sync
from rotation.vercel.contract import ENVIRONMENTS

# Demo-only credentials, printed by seed_demo and stated in the README.
DEMO_USERS = [
    ("support", "support-demo-password", SUPPORT, False),
    ("lead", "lead-demo-password", SUPPORT_LEAD, False),
    ("compliance", "compliance-demo-password", COMPLIANCE, False),
    ("admin", "admin-demo-password", None, True),
]
DEMO_INSTALLATIONS = [
    ("icfg_demo_acme", "Acme Inc.", "current", "postgres", 20),
    ("icfg_demo_globex", "Globex", "current", "redis", 15),
    ("icfg_demo_initech", "Initech (deprecated endpoint)", "deprecated", "postgres", 15),
]
TEMPLATES = {
    "postgres": [
        {"name": "DATABASE_URL", "prefix": "", "environments": list(ENVIRONMENTS)},
        {"name": "PGPASSWORD", "prefix": "", "environments": list(ENVIRONMENTS)},
    ],
    "redis": [
        {"name": "REDIS_URL", "prefix": "KV_", "environments": list(ENVIRONMENTS)},
        {"name": "REST_API_TOKEN", "prefix": "KV_", "environments": ["production", "preview"]},
    ],
}


@dataclass
class SeedResult:
    users_created: list[tuple[str, str]] = field(default_factory=list)
    installations: int = 0
    resources: int = 0


def _initial_secrets(resource: Resource) -> list[dict]:
    return [
        {"name": item["name"], "prefix": item["prefix"], "value": secrets.token_urlsafe(24)}
        for item in resource.secret_template
    ]


@transaction.atomic
def demo_seed() -> SeedResult:
    """Idempotent: existing rows are kept (passwords are not reset)."""
    roles_sync()
    result = SeedResult()
    user_model = get_user_model()
    for username, password, group, superuser in DEMO_USERS:
        user, created = user_model.objects.get_or_create(
            username=username,
            defaults={
                "email": f"{username}@demo.invalid",
                "is_staff": True,
                "is_superuser": superuser,
            },
        )
        if created:
            user.set_password(password)
            user.save()
            result.users_created.append((username, password))
        if group:
            user.groups.add(Group.objects.get(name=group))
    for vercel_id, name, endpoint, product, count in DEMO_INSTALLATIONS:
        installation, created = Installation.objects.get_or_create(
            vercel_id=vercel_id,
            defaults={
                "name": name,
                "team_id": f"team_{vercel_id[10:]}",
                "contact_email": f"ops@{vercel_id[10:]}.demo.invalid",
                "endpoint": endpoint,
            },
        )
        if created or not installation.has_access_token:
            installation.set_access_token(f"vci_demo_{secrets.token_urlsafe(24)}")
            installation.save()
        result.installations += 1
        for index in range(1, count + 1):
            resource, created = Resource.objects.get_or_create(
                installation=installation,
                vercel_id=f"res_{vercel_id[10:]}_{index:02d}",
                defaults={
                    "product": product,
                    "name": f"{product}-{vercel_id[10:]}-{index:02d}",
                    "secret_template": TEMPLATES[product],
                },
            )
            result.resources += 1
            if created:
                for project in range(1 + index % 2):
                    ConnectedProject.objects.create(
                        resource=resource,
                        project_id=f"prj_{vercel_id[10:]}_{index:02d}_{project}",
                        source=ConnectedProject.Source.IMPORT,
                    )
                version = CredentialVersion(resource=resource, stage="current")
                version.seal(_initial_secrets(resource))
                version.save(force_insert=True)
    return result
