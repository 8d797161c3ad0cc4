"""The API the stand-in serves: both Update Resource Secrets endpoints, checked as Vercel
checks them (path, method, bearer token per installation, body against the published schema,
variable names), then applied to the installation store.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

from rotation.devtools.fake_vercel.installations import InstallationStore
from rotation.devtools.fake_vercel.marketplace import MarketplaceEndpoints, live_token_check
from rotation.devtools.fake_vercel.recording import RecordedRequest
from rotation.devtools.fake_vercel.schema import name_problems, request_schemas, schema_problems
from rotation.devtools.fake_vercel.wire import Answer, Handler, error, parse_json

# (path, operationId in the OpenAPI subset); both take PUT.
ROUTES = (
    (
        re.compile(
            r"^/v1/installations/(?P<installation>[^/]+)/products/(?P<product>[^/]+)"
            r"/resources/(?P<resource>[^/]+)/secrets$"
        ),
        "update-resource-secrets",
    ),
    (
        re.compile(
            r"^/v1/installations/(?P<installation>[^/]+)/resources/(?P<resource>[^/]+)/secrets$"
        ),
        "update-resource-secrets-by-id",
    ),
)


DEPRECATED_OPERATION = "update-resource-secrets"
# Vercel's answers once it has removed the deprecated path.
GONE_ANSWERS = {
    410: ("gone", "This endpoint has been removed; use the current Update Resource Secrets"),
    404: ("not_found", "The requested path was not found"),
}


class SecretsEndpoints:
    """Answers API calls from the store; `reload` is asked to look again for unknown ids.

    `deprecated_gone` (410 or 404, None: served) plays Vercel after it removed the
    deprecated endpoint: every call there gets that answer.
    """

    def __init__(self, store: InstallationStore, reload: Callable[[], bool]) -> None:
        self.store = store
        self.reload = reload
        self.deprecated_gone: int | None = None
        self.marketplace = MarketplaceEndpoints(store, reload)

    def answer(
        self, handler: Handler, method: str, path: str, raw: bytes, recorded: RecordedRequest
    ) -> Answer:
        """The answer to one API call; fills in the recorded operation and parsed body."""
        try:
            return self._handle(handler, method, path, raw, recorded)
        except Answer as answer:
            return answer

    def _handle(
        self, handler: Handler, method: str, path: str, raw: bytes, recorded: RecordedRequest
    ) -> Answer:
        found = [
            (match, operation) for pattern, operation in ROUTES if (match := pattern.match(path))
        ]
        if not found:
            return self.marketplace.answer(handler, method, path, raw, recorded)
        match, operation = found[0]
        if method != "PUT":
            raise error(405, "method_not_allowed", "Not allowed")
        recorded.operation = operation
        gone = self.deprecated_gone
        if operation == DEPRECATED_OPERATION and gone:
            raise error(gone, *GONE_ANSWERS[gone])
        ids = {key: unquote(value) for key, value in match.groupdict().items()}
        self._authorize(handler, ids["installation"])
        body = recorded.body = parse_json(handler, raw)
        problems = schema_problems(request_schemas()[operation], body) or name_problems(body)
        if problems:
            raise error(400, "bad_request", f"Invalid request: {problems[0]}.")
        self._check_resource(ids)
        self.store.put_secrets(
            ids["installation"], ids["resource"], body["secrets"], partial=bool(body.get("partial"))
        )
        return Answer(201)

    def _authorize(self, handler: Handler, installation_id: str) -> None:
        # Rotated tokens are live until revoked; a revoked one is refused (marketplace.py).
        live_token_check(handler, self.store, self.reload, installation_id)

    def _check_resource(self, ids: dict[str, str]) -> None:
        product = self.store.product_of(ids["installation"], ids["resource"])
        if product is None and self.reload():
            product = self.store.product_of(ids["installation"], ids["resource"])
        if product is None:
            raise error(404, "not_found", "Resource not found")
        if "product" in ids and ids["product"] != product:
            raise error(404, "not_found", "Product not found")
