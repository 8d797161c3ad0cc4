"""Request Secrets Rotation: Vercel asks us to rotate a resource's secrets (CONTRACT §5).

A thin view: it checks Vercel's OIDC token, then the body, hands the request to one service
and answers `202 {"sync": false}` or an error in Vercel's shape
(`{"error": {"code", "message"}}`). Every refusal is audited with the caller's origin.
We never answer `200 {"sync": true}`: new credentials are made, sealed and pushed by the
pipeline's workers, so no plaintext secret is ever part of a web response.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from rotation.audit import Origin, VercelActor
from rotation.partner_api.body import (
    MAX_BODY_BYTES,
    BodyInvalid,
    idempotency_key_parse,
    rotate_body_parse,
)
from rotation.partner_api.oidc import (
    KeysUnavailable,
    NotConfigured,
    TokenRefused,
    vercel_token_verify,
)
from rotation.services.vercel_request import (
    VercelRequestRefused,
    rotation_request_from_vercel,
    vercel_call_refuse,
)

logger = logging.getLogger(__name__)

# Seconds Vercel is asked to wait when its signing keys could not be fetched.
KEYS_RETRY_AFTER = 30
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    405: "method_not_allowed",
    503: "service_unavailable",
}


def vercel_error(status: int, code: str, message: str) -> JsonResponse:
    """An answer in Vercel's error shape."""
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    elif status == 503:
        response["Retry-After"] = str(KEYS_RETRY_AFTER)
    elif status == 405:
        response["Allow"] = "POST"
    return response


def _bearer(request: HttpRequest) -> str:
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@csrf_exempt
def secrets_rotate(request: HttpRequest, installation_id: str, resource_id: str) -> JsonResponse:
    """POST /v1/installations/<installationId>/resources/<resourceId>/secrets/rotate"""
    origin = Origin.of(request)

    def refused(status: int, message: str, actor: VercelActor | None = None) -> JsonResponse:
        error = vercel_call_refuse(
            message=message,
            status=status,
            code=CODES[status],
            origin=origin,
            installation_id=installation_id,
            resource_id=resource_id,
            actor=actor,
        )
        return vercel_error(error.status, error.code, error.message)

    if request.method != "POST":
        return refused(405, "Use POST.")
    token = _bearer(request)
    if not token:
        return refused(401, "A bearer token (Vercel's OIDC token) is required.")
    try:
        actor = vercel_token_verify(token=token, installation_id=installation_id)
    except NotConfigured as exc:
        logger.error("Request Secrets Rotation refused: %s", exc)
        return refused(403, "Secrets rotation requests are not configured on this partner.")
    except KeysUnavailable as exc:
        logger.warning("Request Secrets Rotation: %s", exc)
        return refused(503, "Vercel's signing keys could not be fetched; try again later.")
    except TokenRefused as exc:
        return refused(exc.status, exc.message, exc.actor)
    try:
        body = rotate_body_parse(request.read(MAX_BODY_BYTES + 1))
        key = idempotency_key_parse(request.headers.get("Idempotency-Key") or "")
    except BodyInvalid as exc:
        return refused(400, str(exc), actor)
    try:
        answer = rotation_request_from_vercel(
            installation_id=installation_id,
            resource_id=resource_id,
            actor=actor,
            reason=body.reason,
            delay_hours=body.delay_hours,
            idempotency_key=key,
            origin=origin,
        )
    except VercelRequestRefused as exc:
        return vercel_error(exc.status, exc.code, exc.message)
    return JsonResponse(answer.body, status=answer.status)
