"""The installation the stand-in knows in these tests, and calling it as Vercel's API."""

INSTALLATION = "icfg_fake1"
TOKEN = "vci_fake_token_0123456789"
RESOURCE = "res_fake1"
PRODUCT = "neon"
VALUE = "postgres://user:very-secret-password-77@db/app"
SECRETS_PATH = f"/v1/installations/{INSTALLATION}/resources/{RESOURCE}/secrets"
BODY = {"secrets": [{"name": "DATABASE_URL", "value": VALUE}]}


def call(http, fake, path=SECRETS_PATH, body=BODY, *, method="PUT", token=TOKEN, **kwargs):
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None and "data" not in kwargs:
        kwargs["json"] = body
    return http.request(method, fake.url + path, headers=headers, timeout=(1, 2), **kwargs)


def error_of(response) -> dict:
    return response.json()["error"]
