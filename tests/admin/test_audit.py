"""The audit admin: read-only for everybody, role matrix, rotation page, streaming exports."""

import csv
import io
import json

import pytest
from django.contrib.admin.sites import site
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from rotation.admin.audit import csv_cell
from rotation.audit import AuditAction, audit_record
from rotation.models import AuditEvent

CHANGELIST = reverse("admin:rotation_auditevent_changelist")
EXPORT_CSV = reverse("admin:rotation_auditevent_export_csv")
EXPORT_JSONL = reverse("admin:rotation_auditevent_export_jsonl")
DANGEROUS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]


@pytest.fixture
def event(db):
    return audit_record(
        action=AuditAction.INSTALLATION_CHANGED,
        installation="icfg_a",
        resource="res_a",
        rotation=41,
        ticket="SUP-7",
        reason="=cmd|' /C calc'!A0",
        details={"note": "+danger", "ok": "plain"},
    )


def read_urls(event):
    return [
        CHANGELIST,
        CHANGELIST + "?action=installation.changed&outcome=success&actor_type=system",
        CHANGELIST + "?q=SUP-7",
        CHANGELIST + "?rotation_ref=41",
        reverse("admin:rotation_auditevent_change", args=[event.pk]),
        reverse("admin:rotation_auditevent_history", args=[event.pk]),
        reverse("admin:rotation_auditevent_rotation", args=[41]),
    ]


def export_urls():
    return [EXPORT_CSV, EXPORT_JSONL, EXPORT_CSV + "?action=installation.changed"]


def refused_urls(event):
    return [
        ("get", reverse("admin:rotation_auditevent_add")),
        ("post", reverse("admin:rotation_auditevent_add")),
        ("get", reverse("admin:rotation_auditevent_delete", args=[event.pk])),
        ("post", reverse("admin:rotation_auditevent_delete", args=[event.pk])),
        ("post", reverse("admin:rotation_auditevent_change", args=[event.pk])),
    ]


def body(response):
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def test_it_sends_anonymous_visitors_to_the_login_page(client, event):
    for url in [*read_urls(event), *export_urls()]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url


@pytest.mark.parametrize("persona", ["dave", "alice"])
def test_it_refuses_staff_without_audit_permissions_and_audits_it(client, event, persona, request):
    user = request.getfixturevalue(persona)
    client.force_login(user)
    for url in [*read_urls(event), *export_urls()]:
        assert client.get(url).status_code == 403, url
    for method, url in refused_urls(event):
        assert getattr(client, method)(url).status_code == 403, url
    denied = AuditEvent.objects.filter(outcome="denied", actor_username=user.username)
    assert denied.filter(action=AuditAction.AUDIT_EXPORTED).count() == 3
    assert denied.filter(action=AuditAction.AUDIT_VIEWED).exists()


@pytest.mark.parametrize("persona", ["carol", "root"])
def test_it_lets_compliance_and_superusers_read_and_export_only(client, event, persona, request):
    user = request.getfixturevalue(persona)
    client.force_login(user)
    for url in [*read_urls(event), *export_urls()]:
        assert client.get(url).status_code == 200, url
    before = AuditEvent.objects.get(pk=event.pk)
    for method, url in refused_urls(event):
        assert getattr(client, method)(url, {"reason": "rewritten"}).status_code == 403, url
    after = AuditEvent.objects.get(pk=event.pk)
    assert (after.reason, after.hash) == (before.reason, before.hash)
    refused = AuditEvent.objects.filter(
        action=AuditAction.AUDIT_CHANGE_REFUSED, actor_username=user.username, outcome="denied"
    )
    assert refused.count() == len(refused_urls(event))


def test_it_audits_each_refusal_once_with_its_message(client, dave, carol, event):
    attempts = [
        (dave, "get", CHANGELIST, AuditAction.AUDIT_VIEWED, "no permission to view"),
        (dave, "get", EXPORT_CSV, AuditAction.AUDIT_EXPORTED, "no permission to export"),
        *[
            (carol, method, url, AuditAction.AUDIT_CHANGE_REFUSED, "audit events are read-only")
            for method, url in refused_urls(event)
        ],
    ]
    for user, method, url, action, message in attempts:
        client.force_login(user)
        seen = list(AuditEvent.objects.values_list("pk", flat=True))
        assert getattr(client, method)(url).status_code == 403, url
        refusal = AuditEvent.objects.exclude(pk__in=seen).get()
        assert (refusal.action, refusal.outcome) == (action, "denied"), url
        assert (refusal.actor_username, refusal.details["message"]) == (user.username, message)


def test_it_offers_no_bulk_actions_and_no_edit_buttons(client, root, event):
    client.force_login(root)
    response = client.get(CHANGELIST)
    html = body(response)
    assert 'name="action"' not in html
    assert "delete_selected" not in html
    assert "Export CSV" in html
    detail = body(client.get(reverse("admin:rotation_auditevent_change", args=[event.pk])))
    assert 'name="_save"' not in detail
    assert "deletelink" not in detail
    model_admin = site._registry[AuditEvent]
    request = response.wsgi_request
    assert model_admin.get_actions(request) == {}


def test_it_hides_export_links_without_the_export_permission(client, db, event):
    from django.contrib.auth.models import Permission

    from tests.conftest import make_user

    viewer = make_user("viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client.force_login(viewer)
    assert "Export CSV" not in body(client.get(CHANGELIST))
    assert client.get(EXPORT_CSV).status_code == 403


def test_it_shows_a_rotations_whole_story_on_one_page(client, carol, event):
    for step in ("rotation.requested", "rotation.prepared", "rotation.pushed"):
        if step in AuditAction.values:
            audit_record(action=step, rotation=41, ticket="SUP-7")
    audit_record(action=AuditAction.INSTALLATION_CHANGED, rotation=42, reason="other rotation")
    client.force_login(carol)
    html = body(client.get(reverse("admin:rotation_auditevent_rotation", args=[41])))
    expected = AuditEvent.objects.filter(rotation_ref=41).order_by("id")
    positions = [html.index(f">#{pk}<") for pk in expected.values_list("pk", flat=True)]
    assert positions == sorted(positions) and len(positions) >= 1
    assert "other rotation" not in html
    changelist = body(client.get(CHANGELIST))
    assert reverse("admin:rotation_auditevent_rotation", args=[41]) in changelist


def test_it_searches_by_resource_rotation_and_ticket(client, carol, event):
    other = audit_record(action=AuditAction.RESOURCE_CHANGED, resource="res_b", ticket="SUP-8")
    client.force_login(carol)
    for term in ("res_a", "41", "SUP-7"):
        html = body(client.get(CHANGELIST, {"q": term}))
        change = reverse("admin:rotation_auditevent_change", args=[event.pk])
        assert change in html, term
        assert reverse("admin:rotation_auditevent_change", args=[other.pk]) not in html, term


def test_it_exports_the_filtered_list_as_csv_with_dangerous_cells_neutralized(client, carol, event):
    for index, text in enumerate(DANGEROUS):
        audit_record(action=AuditAction.RESOURCE_CHANGED, reason=text, ticket=f"T-{index}")
    audit_record(action=AuditAction.SECRETS_REENCRYPTED, reason="not in this export")
    client.force_login(carol)
    response = client.get(EXPORT_CSV, {"action": "resource.changed"})
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body(response), newline="")))
    assert {row["action"] for row in rows} == {"resource.changed"}
    reasons = {row["reason"] for row in rows}
    assert reasons == {"'" + text for text in DANGEROUS}
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    exported = AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORTED).get()
    assert exported.actor_username == "carol"
    assert exported.details["format"] == "csv"
    assert "action=resource.changed" in exported.details["filters"]


def test_it_exports_json_lines_with_every_field(client, root, event):
    client.force_login(root)
    response = client.get(EXPORT_JSONL, {"q": "SUP-7"})
    lines = [json.loads(line) for line in body(response).splitlines()]
    assert [line["id"] for line in lines] == [event.pk]
    assert lines[0]["details"] == {"note": "+danger", "ok": "plain"}
    assert lines[0]["hash"] == event.hash and lines[0]["prev_hash"] == event.prev_hash


def test_csv_cell_neutralizes_formulas_only():
    assert csv_cell("=1+1") == "'=1+1"
    assert csv_cell("@x") == "'@x"
    assert csv_cell("plain = text") == "plain = text"
    assert csv_cell(None) == ""
    assert csv_cell({"a": "=b"}) == '{"a": "=b"}'


@pytest.mark.parametrize("persona", ["root", "carol"])
def test_it_renders_the_changelist_with_a_constant_number_of_queries(client, persona, request):
    root = request.getfixturevalue(persona)

    def render():
        with CaptureQueriesContext(connection) as queries:
            response = client.get(CHANGELIST)
        assert response.status_code == 200
        return len(queries)

    client.force_login(root)
    audit_record(action=AuditAction.INSTALLATION_CHANGED)
    small = render()
    for index in range(300):
        audit_record(action=AuditAction.RESOURCE_CHANGED, resource=f"res_{index}")
    large = render()
    assert small == large <= 10
    html = body(client.get(CHANGELIST))
    assert "More than" not in html  # 300 rows plus logins: under the count cap


def test_it_caps_the_count_on_a_large_list(client, root, db, settings):
    from rotation.admin.audit import CappedCountPaginator

    client.force_login(root)
    for _ in range(12):
        audit_record(action=AuditAction.INSTALLATION_CHANGED)
    original = CappedCountPaginator.cap
    CappedCountPaginator.cap = 10
    try:
        html = body(client.get(CHANGELIST))
    finally:
        CappedCountPaginator.cap = original
    assert "More than 10 audit events" in html


def test_it_drills_down_by_date_without_scanning(client, carol, event):
    client.force_login(carol)
    now = event.created_at
    for params in (
        {"created_at__year": now.year},
        {"created_at__year": now.year, "created_at__month": now.month},
        {"created_at__year": now.year, "created_at__month": now.month, "created_at__day": now.day},
    ):
        html = body(client.get(CHANGELIST, params))
        assert reverse("admin:rotation_auditevent_change", args=[event.pk]) in html, params
    html = body(client.get(CHANGELIST, {"created_at__year": now.year - 1}))
    assert reverse("admin:rotation_auditevent_change", args=[event.pk]) not in html


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_it_exports_csv_without_formulas_after_any_delimiter(client, carol, delimiter):
    """Finding 4: `x;=1+1;y` was written unquoted, a formula for a `;` spreadsheet."""
    reasons = ["x;=1+1;y", "a,+2", "b\t-3", "c; @SUM(A1)", "d,\t=1", "e;\r=2", "plain"]
    for text in reasons:
        audit_record(action=AuditAction.RESOURCE_CHANGED, reason=text)
    client.force_login(carol)
    text = body(client.get(EXPORT_CSV, {"action": "resource.changed"}))
    assert text.startswith('"id","created_at",')  # every cell quoted
    assert '"x;\'=1+1;y"' in text
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    assert len(rows) > len(reasons)
    for row in rows:
        for cell in row:
            assert not cell.strip(' "').startswith(("=", "+", "-", "@")), (delimiter, cell)
            assert not cell.startswith(("\t", "\r")), (delimiter, cell)
