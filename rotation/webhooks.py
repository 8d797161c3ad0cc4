"""Vercel webhook endpoint: verify the signature, cap the size, hand the event to a service."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST

from rotation.audit import Origin
from rotation.audit.origin import client_ip
from rotation.prepared_statements import prepared_statements
from rotation.redeploy import WebhookInvalid, webhook_event_handle, webhook_refusal_record

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-vercel-signature"
# Vercel's payloads nest a few levels; anything far deeper is hostile, refused before use.
MAX_JSON_DEPTH = 32
# Characters no database column takes (NUL; a lone surrogate is not even UTF-8): refused
# up front, so storing the delivery cannot fail.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_REFUSED = "NUL or lone surrogate in a string"


class MalformedBody(ValueError):
    """The signed body is not JSON we are willing to read."""


@sensitive_variables("secret")
def sign_webhook(body: bytes, secret: str) -> str:
    """Vercel's signature of a delivery: hex HMAC-SHA1 of the raw body, keyed by the secret."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


@sensitive_variables("secret", "signature", "expected", "given")
def signature_valid(*, body: bytes, signature: str, secret: str) -> bool:
    """Constant-time check of `signature` against the body; an unset secret never matches."""
    if not secret or not signature:
        return False
    try:
        # Bytes on both sides: compare_digest raises TypeError on a non-ASCII str.
        given = signature.strip().lower().encode("ascii")
    except UnicodeEncodeError:
        return False
    expected = sign_webhook(body, secret).encode("ascii")
    return hmac.compare_digest(expected, given)


def parse_body(body: bytes) -> object:
    """The JSON document of a delivery, or MalformedBody with a short reason."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise MalformedBody("JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise MalformedBody("malformed JSON") from None
    # Walked without recursion, so a hostile shape cannot exhaust the stack later on.
    pending: list[tuple[object, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise MalformedBody("JSON nested too deeply")
        if isinstance(value, dict):
            if any(UNSTORABLE.search(key) for key in value):
                raise MalformedBody(UNSTORABLE_REFUSED)
            pending.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            pending.extend((child, depth + 1) for child in value)
        elif isinstance(value, str) and UNSTORABLE.search(value):
            raise MalformedBody(UNSTORABLE_REFUSED)
    return document


def _answer(status: int, outcome: str) -> JsonResponse:
    return JsonResponse({"outcome": outcome}, status=status)


@csrf_exempt
@require_POST
@sensitive_variables("secret")
def vercel_webhook(request: HttpRequest) -> JsonResponse:
    """Vercel posts integration and deployment events here."""
    secret = settings.VERCEL_CLIENT_SECRET
    if not secret:
        logger.error("Vercel webhook refused: VERCEL_CLIENT_SECRET is not set")
        return _answer(403, "webhook secret not configured")
    limit = settings.VERCEL_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _answer(413, "body too large")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _answer(413, "body too large")
    if not signature_valid(
        body=body, signature=request.headers.get(SIGNATURE_HEADER, ""), secret=secret
    ):
        logger.warning(
            "Vercel webhook with a bad or missing signature from %s",
            client_ip(request.META, trusted_proxies=settings.TRUSTED_PROXY_COUNT),
        )
        return _answer(403, "bad signature")
    origin = Origin.of(request)
    try:
        event = parse_body(body)
        with prepared_statements():  # Vercel posts one for each deployment: a hot path
            handled = webhook_event_handle(event=event, origin=origin)
    except (MalformedBody, WebhookInvalid) as exc:
        webhook_refusal_record(reason=str(exc), origin=origin)
        return _answer(400, str(exc))
    return _answer(200, handled.outcome.value)
