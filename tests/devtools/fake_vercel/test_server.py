"""`FakeVercel` as a running server: many clients at once, and stopping."""

import threading

import requests

from rotation import vercel
from rotation.devtools.fake_vercel import FakeVercel
from tests.devtools.fake_vercel.api_calls import BODY, INSTALLATION, PRODUCT, RESOURCE, TOKEN, call


def test_it_serves_many_clients_at_once(fake):
    errors = []

    def worker(index):
        with requests.Session() as session:
            for step in range(25):
                body = {"secrets": [{"name": f"W{index}_{step}", "value": "v"}], "partial": True}
                response = call(session, fake, body=body)
                if response.status_code != 201:
                    errors.append(response.status_code)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert fake.stats["by_status"] == {201: 200}
    assert len(fake.secrets_of(INSTALLATION, RESOURCE)) == 200


def test_it_cuts_kept_alive_connections_when_stopped(settings):
    def push():
        vercel.update_resource_secrets(
            installation_id=INSTALLATION, resource_id=RESOURCE, token=TOKEN, secrets=BODY["secrets"]
        )

    first = FakeVercel().start()
    first.add_installation(INSTALLATION, TOKEN, {RESOURCE: PRODUCT})
    settings.VERCEL_API_URL = first.url
    push()
    port = int(first.url.rsplit(":", 1)[1])
    first.stop()

    with FakeVercel(port=port) as second:
        second.add_installation(INSTALLATION, TOKEN, {RESOURCE: PRODUCT})
        push()

    assert len(first.requests) == 1
    assert len(second.requests) == 1
