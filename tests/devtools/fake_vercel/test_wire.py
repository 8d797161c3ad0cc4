"""The stand-in's HTTP plumbing: reading bodies, and handing requests to its callable."""

import json
import threading

from rotation.devtools.fake_vercel.wire import Answer, Server, send
from tests.devtools.fake_vercel.api_calls import BODY, INSTALLATION, RESOURCE, call


def test_it_answers_400_for_a_body_that_is_not_json(fake, http):
    response = call(
        http, fake, body=None, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400

    response = call(http, fake, body=None, data=b"secrets=x")
    assert response.status_code == 400


def test_it_reads_a_chunked_body(fake, http):
    chunks = (part.encode() for part in json.dumps(BODY).partition("secrets"))

    response = call(
        http, fake, body=None, data=chunks, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.text
    assert fake.requests[0].headers["Transfer-Encoding"] == "chunked"
    assert fake.secrets_of(INSTALLATION, RESOURCE) == BODY["secrets"]


def test_it_answers_413_for_a_huge_body(fake, http):
    huge = {"secrets": [{"name": "A", "value": "x" * (2 << 20)}]}

    assert call(http, fake, body=huge).status_code == 413


def test_its_wire_server_hands_each_request_to_the_callable_it_is_given(http):
    seen = []

    def respond(handler, method):
        seen.append((method, handler.path))
        send(handler, Answer(204))

    server = Server(("127.0.0.1", 0), respond)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        response = http.patch(server.url + "/anything?x=1", timeout=(1, 2))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    assert response.status_code == 204
    assert seen == [("PATCH", "/anything?x=1")]
