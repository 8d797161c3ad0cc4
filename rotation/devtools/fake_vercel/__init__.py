"""A local stand-in for Vercel's marketplace secrets API: a real HTTP server on 127.0.0.1.

It serves both Update Resource Secrets endpoints as Vercel documents them
(`rotation/vercel_openapi.json`, a copy of Vercel's published schema), checks the bearer
token per installation, and injects faults for tests and benchmarks: a token-bucket rate
limit per token and method (429, and Vercel's `X-RateLimit-*` headers), 5xx answers,
latency, hangs and dropped connections. It also serves the
Marketplace calls around them (`marketplace`: list resources, update a resource and its
dashboard notification, rotate and revoke installation credentials, with several live
tokens per installation until one is revoked). Any other path answers 404.
Bodies are checked by a small strict interpreter of that schema (`schema.py`, stdlib only, so
the demo needs no test packages): an object that lists its properties accepts no other key,
at any level.

Modules: `server` (`FakeVercel`: assembly and lifecycle), `wire` (HTTP plumbing, handed one
callable), `responder` (one request: page or API, faults first, in the order its docstring
gives), `faults` (knobs, seeded draws, rate limit, scripted answers), `endpoints` (routing,
bearer check, schema check), `installations` (installations, tokens, resources and secrets
held), `database` (learning installations from the project's database), `recording`
(requests seen and counters), `schema`, `page` (the page at `/`), `marketplace`.

Knobs (`rate`, `fail_rate`, `latency_ms`, `hang_rate`, `drop_rate`, `hang_seconds`, and
`gone_deprecated`: the deprecated endpoint answers 410 or 404, as once Vercel removed it) may
be changed while the server runs. Logs never contain tokens or values.
"""

from rotation.devtools.fake_vercel.page import mask
from rotation.devtools.fake_vercel.recording import RecordedRequest
from rotation.devtools.fake_vercel.schema import request_schemas, schema_problems
from rotation.devtools.fake_vercel.server import FakeVercel

__all__ = ["FakeVercel", "RecordedRequest", "mask", "request_schemas", "schema_problems"]
