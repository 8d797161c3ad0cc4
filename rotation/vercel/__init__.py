"""The Vercel client: the one place that talks to Vercel's REST API, and the facts of its
contract that the importer and the stand-in share. Nothing here imports models.

Modules: `client` (the session, the request helper and the endpoints), `errors`
(`VercelError` and how answers, transport failures and refusals become one, with the waits
Vercel asks for), `contract` (environments and variable names), `endpoints` (which secrets
endpoint a push calls: the sunset date and the fallback from the deprecated one),
`marketplace` (list and update resources, rotate and revoke installation credentials),
`ratelimit` (the rate-limit headers of an answer).
"""

from rotation.vercel.client import (
    USER_AGENT,
    VERSION,
    default_session,
    secrets_body,
    update_resource_secrets,
    validate_secrets,
)
from rotation.vercel.errors import RETRY_AFTER_MAX, RETRY_AFTER_MIN, VercelError, parse_retry_after
from rotation.vercel.marketplace import (
    NewToken,
    VercelResource,
    list_resources,
    notification_body,
    revoke_installation_credential,
    rotate_installation_credential,
    update_resource,
)
from rotation.vercel.ratelimit import RateLimit, rate_limit_from_headers

__all__ = [
    "RETRY_AFTER_MAX",
    "RETRY_AFTER_MIN",
    "USER_AGENT",
    "VERSION",
    "NewToken",
    "RateLimit",
    "VercelError",
    "VercelResource",
    "default_session",
    "list_resources",
    "notification_body",
    "parse_retry_after",
    "rate_limit_from_headers",
    "revoke_installation_credential",
    "rotate_installation_credential",
    "secrets_body",
    "update_resource",
    "update_resource_secrets",
    "validate_secrets",
]
