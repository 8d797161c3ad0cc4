"""A local stand-in for Vercel's marketplace secrets API: a real HTTP server on 127.0.0.1.

It serves both Update Resource Secrets endpoints and Create Event as Vercel documents them
(`rotation/vercel_openapi.json`, a copy of Vercel's published schema), checks the bearer
token per installation, and injects faults for tests and benchmarks: a token-bucket rate
limit (429), 5xx answers, latency, hangs and dropped connections. Bodies are checked by a
small strict interpreter of that schema (`schema.py`, stdlib only, so the demo needs no test
packages): an object that lists its properties accepts no other key, at any level.

Faults are decided in this order: drop, hang (then answered normally, as a request that
landed after the client gave up), latency, scripted answer, rate limit, 5xx, then the real
handling. Knobs (`rate`, `fail_rate`, `latency_ms`, `hang_rate`, `drop_rate`,
`hang_seconds`) may be changed while the server runs. Logs never contain tokens or values.
"""

from rotation.devtools.fake_vercel.page import mask
from rotation.devtools.fake_vercel.schema import request_schemas, schema_problems
from rotation.devtools.fake_vercel.server import FakeVercel, RecordedRequest

__all__ = ["FakeVercel", "RecordedRequest", "mask", "request_schemas", "schema_problems"]
