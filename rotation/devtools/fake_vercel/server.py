"""`FakeVercel`: the stand-in as tests, benchmarks and `manage.py fake_vercel` use it.

It puts the parts together (the installation store, fault knobs, the recorder, the secrets
endpoints and the responder the wire server calls), runs the server on a background thread,
and offers each part's methods under one name.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from rotation.devtools.fake_vercel.database import DatabaseReload, installations_from_database
from rotation.devtools.fake_vercel.endpoints import SecretsEndpoints
from rotation.devtools.fake_vercel.faults import Faults
from rotation.devtools.fake_vercel.installations import InstallationStore, Secret
from rotation.devtools.fake_vercel.marketplace import MarketplaceControls
from rotation.devtools.fake_vercel.partner_calls import PartnerCaller, SentRequest
from rotation.devtools.fake_vercel.recording import RecordedRequest, Recorder
from rotation.devtools.fake_vercel.responder import Responder
from rotation.devtools.fake_vercel.wire import Answer, Server


class FakeVercel(MarketplaceControls):
    """The stand-in: `start()`, point VERCEL_API_URL at `url`, then `stop()`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float | None = None,
        fail_rate: float = 0.0,
        latency_ms: float = 0,
        hang_rate: float = 0.0,
        drop_rate: float = 0.0,
        hang_seconds: float = 30.0,
        seed: int | None = None,
        reload_from_database: bool = False,
        gone_deprecated: int | None = None,
        portal_url: str = "http://127.0.0.1:8000",
        client_id: str = "demo-client",
        issuer: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._stopping = threading.Event()
        self._store = InstallationStore()
        self._faults = Faults(
            rate=rate,
            fail_rate=fail_rate,
            latency_ms=latency_ms,
            hang_rate=hang_rate,
            drop_rate=drop_rate,
            hang_seconds=hang_seconds,
            seed=seed,
        )
        self._recorder = Recorder()
        # Without a config file the command learns installations from the database, and
        # looks again (at most once a second) when a call names one it does not know.
        reload = DatabaseReload(self._store, enabled=reload_from_database)
        self._endpoints = SecretsEndpoints(self._store, reload)
        self.gone_deprecated = gone_deprecated
        # Playing Vercel towards the partner (Request Secrets Rotation, signed tokens).
        self.partner = PartnerCaller(
            self._store,
            base_url=lambda: self.url,
            portal_url=portal_url,
            client_id=client_id,
            issuer=issuer,
        )
        self._marketplace = self._endpoints.marketplace
        self._respond = Responder(
            store=self._store,
            faults=self._faults,
            recorder=self._recorder,
            endpoints=self._endpoints,
            stopping=self._stopping,
            caller=self.partner,
        )
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- installations and secrets ---------------------------------------------------------

    def add_installation(self, installation_id: str, token: str, resources: dict[str, str]) -> None:
        """Know an installation, its bearer token, and its resources (id -> product)."""
        self._store.add(installation_id, token, resources)

    def remove_installation(self, installation_id: str) -> None:
        """Forget an installation (as if uninstalled): its calls then answer 404."""
        self._store.remove(installation_id)

    def load_config(self, data: object) -> None:
        """Learn installations from the `import_installations` JSON format."""
        self._store.load_config(data)

    def load_from_database(self) -> int:
        """Learn installations from the project's database; returns how many it knows."""
        return installations_from_database(self._store)

    def set_secrets(self, installation_id: str, resource_id: str, secrets: list[Secret]) -> None:
        """Preload a resource's secrets (as if pushed earlier)."""
        self._store.set_secrets(installation_id, resource_id, secrets)

    def secrets_of(self, installation_id: str, resource_id: str) -> list[Secret]:
        """The secrets this resource holds now (copies, in the order they were set)."""
        return self._store.secrets_of(installation_id, resource_id)

    # -- playing Vercel towards the partner ------------------------------------------------

    @property
    def jwks_url(self) -> str:
        """Where the partner fetches the stand-in's signing keys (VERCEL_OIDC_JWKS_URL)."""
        return f"{self.url}/.well-known/jwks"

    def request_rotation(
        self, installation_id: str, resource_id: str, **options: Any
    ) -> SentRequest:
        """Ask the portal to rotate a resource, as Vercel does (see PartnerCaller)."""
        return self.partner.request_rotation(installation_id, resource_id, **options)

    # -- faults ------------------------------------------------------------------------------

    def respond_next(
        self,
        status: int,
        payload: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json; charset=utf-8",
        times: int = 1,
    ) -> None:
        """Answer the next `times` API requests with this, whatever they are (for tests)."""
        answer = Answer(status, payload, dict(headers or {}))
        answer.raw = raw
        answer.content_type = content_type
        self._faults.script(answer, times=times)

    @property
    def gone_deprecated(self) -> int | None:
        """410 or 404: the deprecated endpoint is removed and answers that; None: served."""
        return self._endpoints.deprecated_gone

    @gone_deprecated.setter
    def gone_deprecated(self, status: int | None) -> None:
        if status not in (None, 404, 410):
            raise ValueError("gone_deprecated must be 410, 404 or None")
        self._endpoints.deprecated_gone = status

    @property
    def rate(self) -> float | None:
        """Requests per second allowed per token and method (a token bucket holding one
        second's worth), or None."""
        return self._faults.rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        self._faults.rate = value

    @property
    def fail_rate(self) -> float:
        """Share of API requests answered with a 5xx."""
        return self._faults.fail_rate

    @fail_rate.setter
    def fail_rate(self, value: float) -> None:
        self._faults.fail_rate = value

    @property
    def latency_ms(self) -> float:
        """Milliseconds every API request waits before it is handled."""
        return self._faults.latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self._faults.latency_ms = value

    @property
    def hang_rate(self) -> float:
        """Share of API requests that wait `hang_seconds` first."""
        return self._faults.hang_rate

    @hang_rate.setter
    def hang_rate(self, value: float) -> None:
        self._faults.hang_rate = value

    @property
    def hang_seconds(self) -> float:
        """Seconds a hanging request waits (cut short by `stop()`)."""
        return self._faults.hang_seconds

    @hang_seconds.setter
    def hang_seconds(self, value: float) -> None:
        self._faults.hang_seconds = value

    @property
    def drop_rate(self) -> float:
        """Share of API requests whose connection is cut without an answer."""
        return self._faults.drop_rate

    @drop_rate.setter
    def drop_rate(self, value: float) -> None:
        self._faults.drop_rate = value

    # -- observation ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received on API paths, oldest first (the last 10,000)."""
        return self._recorder.requests

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: total API requests, answers per status, dropped, hung, rate_limited."""
        return self._recorder.stats

    def reset_stats(self) -> None:
        """Zero the counters and forget recorded requests."""
        self._recorder.reset()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        return self._server.url

    def start(self) -> FakeVercel:
        """Listen and serve in a background thread."""
        self._stopping.clear()
        self._server = Server((self.host, self.port), self._respond)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fake-vercel",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests still hanging are dropped."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_open_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def serve_until_interrupted(self) -> None:
        """Block the calling thread until Ctrl-C or SIGTERM (for the management command)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
        try:
            while not self._stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass

    def __enter__(self) -> FakeVercel:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
