"""The Vercel client: the one place that talks to Vercel's REST API, and the facts of its
contract that the importer and the stand-in share. Nothing here imports models.

Modules: `client` (the request helper and the endpoints), `contract` (environments and
variable names).
"""

from rotation.vercel.client import (
    RETRY_AFTER_MAX,
    RETRY_AFTER_MIN,
    USER_AGENT,
    VERSION,
    VercelError,
    create_event,
    default_session,
    parse_retry_after,
    secrets_body,
    update_resource_secrets,
    validate_secrets,
)

__all__ = [
    "RETRY_AFTER_MAX",
    "RETRY_AFTER_MIN",
    "USER_AGENT",
    "VERSION",
    "VercelError",
    "create_event",
    "default_session",
    "parse_retry_after",
    "secrets_body",
    "update_resource_secrets",
    "validate_secrets",
]
