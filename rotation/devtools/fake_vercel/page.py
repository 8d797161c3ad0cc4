"""The stand-in's page at `/`: each resource's secrets now, masked but for the last 4."""

from __future__ import annotations

import html
from typing import Any

PAGE_RESOURCES = 300


def mask(value: Any) -> str:
    """All but the last 4 characters hidden; short values hidden whole."""
    if not isinstance(value, str) or len(value) < 12:
        return "••••••••"
    return "••••••••" + value[-4:]


def _row(*cells: str) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"


def render_page(
    *, resources: list[tuple[str, str, str, list[dict]]], stats: dict[str, Any], extra: str = ""
) -> bytes:
    """HTML for (installation, resource, product, secrets) rows, the first PAGE_RESOURCES."""
    rows = []
    for installation_id, resource_id, product, secrets in resources[:PAGE_RESOURCES]:
        ids = (installation_id, resource_id, product)
        if not secrets:
            rows.append(_row(*ids, "", "(no secrets pushed yet)", ""))
        for secret in secrets:
            full_name = f"{secret.get('prefix') or ''}{secret.get('name', '')}"
            overrides = ", ".join(
                f"{env}: {mask(value)}"
                for env, value in sorted((secret.get("environmentOverrides") or {}).items())
            )
            rows.append(_row(*ids, full_name, mask(secret.get("value")), overrides))
    hidden = len(resources) - PAGE_RESOURCES
    more = f"<p>{hidden} more resources not shown.</p>" if hidden > 0 else ""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'><title>Fake Vercel</title></head><body>"
        "<h1>Fake Vercel: resource secrets now</h1>"
        f"<p>{stats['total']} API requests; answers {html.escape(str(stats['by_status']))}; "
        f"{stats['dropped']} dropped, {stats['hung']} hung. Values are masked but for "
        "their last 4 characters.</p>"
        "<table border='1' cellpadding='4'><thead><tr><th>installation</th><th>resource</th>"
        "<th>product</th><th>secret</th><th>value</th><th>overrides</th></tr></thead><tbody>"
        + ("".join(rows) or "<tr><td colspan='6'>no resources known yet</td></tr>")
        + f"</tbody></table>{more}{extra}</body></html>"
    )
    return page.encode()
