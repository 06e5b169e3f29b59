"""/api/docs renders in a real browser (Debian's Chromium via Playwright) without any external request."""

from __future__ import annotations

from typing import Any

from batcomputer.settings import Settings
from tests.conftest import Services

Stack = tuple[str, Settings, Services]


def test_docs_page_renders_every_operation_from_local_assets(stack: Stack, browser: Any) -> None:
    base, _, _ = stack
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{base}/api/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/models/crime/jobs" in p for p in paths)
    assert any("/api/predict" in p for p in paths)
    assert page.locator(".title").first.inner_text().startswith("Batcomputer")
    external = [url for url in requested if not url.startswith(base) and not url.startswith("data:")]
    assert external == []
    page.close()
