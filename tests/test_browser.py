"""The operator's path in a real browser (Playwright driving Debian's Chromium) against real
gunicorn + qcluster processes: log in, filter to failed events, open one, replay it and see it
succeed, purge through the confirmation page, open the dashboard and see the chart.

Screenshots go to var/screenshots/ (the README shows copies from project/screenshots/).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connections

from tests.conftest import envelope, sign
from tests.processes import REPO, wait_until
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.process

CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO / "var" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium (apt-get install chromium)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
        # The test's ORM calls ran while Playwright's event loop was current, so Django kept
        # their connection in that context: close it here, or it outlives the test database.
        connections.close_all()


def test_operator_finds_replays_and_purges_a_failed_event(server, cluster, browser, monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls here are plain
    # synchronous test code, which Django would otherwise refuse.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    SHOTS.mkdir(parents=True, exist_ok=True)
    User.objects.create_superuser("ops", "ops@example.com", "ops-password")
    base = f"http://127.0.0.1:{server.port}"

    def deliver(workflow: str, webhook_id: str) -> None:
        body = envelope(workflow, webhook_id, note="from the browser test")
        headers = {"Content-Type": "application/json", "X-Webhook-Signature": sign(body)}
        assert server.request("POST", "/webhooks/generic/", body, headers)[0] == 202

    deliver("record", "ok-1")
    deliver("fail", "broken-1")
    wait_until(lambda: WebhookEvent.objects.filter(status=EventStatus.DEAD).exists(), timeout=30)
    wait_until(
        lambda: WebhookEvent.objects.get(webhook_id="ok-1").status == EventStatus.SUCCEEDED, 30
    )

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "ops-password")
    page.click("input[type=submit]")

    # Filter the list to dead events and open the one there.
    page.goto(f"{base}/admin/webhooks_app/webhookevent/")
    page.get_by_role("link", name="Dead", exact=True).click()
    page.wait_for_url("**status__exact=dead**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    page.screenshot(path=str(SHOTS / "event-list.png"), full_page=True)
    rows.first.locator("th a, td a").first.click()
    page.wait_for_selector("text=boom on attempt")
    page.screenshot(path=str(SHOTS / "event-detail.png"), full_page=True)

    # Make the workflow succeed this time (the "bug is fixed"), then replay it from the list.
    broken = WebhookEvent.objects.get(webhook_id="broken-1")
    WebhookEvent.objects.filter(pk=broken.pk).update(workflow_name="record")
    page.goto(f"{base}/admin/webhooks_app/webhookevent/?status__exact=dead")
    page.check(f"input[name=_selected_action][value='{broken.pk}']")
    page.select_option("select[name=action]", "replay")
    page.click("button[name=index]")
    page.wait_for_selector("text=Queued 1 event(s) to run again.")
    wait_until(lambda: WebhookEvent.objects.get(pk=broken.pk).status == EventStatus.SUCCEEDED, 30)
    page.goto(f"{base}/admin/webhooks_app/webhookevent/?status__exact=succeeded")
    assert page.locator("#result_list tbody tr").count() == 2

    # Purge the succeeded one through the confirmation page.
    page.check(f"input[name=_selected_action][value='{broken.pk}']")
    page.select_option("select[name=action]", "purge")
    page.click("button[name=index]")
    page.wait_for_selector("text=Are you sure you want to purge 1 webhook event?")
    page.click("input[value='Yes, purge']")
    page.wait_for_selector("text=Purged 1 event(s).")
    assert not WebhookEvent.objects.filter(pk=broken.pk).exists()

    # The dashboard, reached from the list, with its chart.
    page.goto(f"{base}/admin/webhooks_app/webhookevent/")
    page.get_by_role("link", name="Dashboard", exact=True).first.click()
    page.wait_for_url("**/dashboard/")
    assert page.locator("#chart-24h svg rect.bar").count() > 0
    assert page.locator("#status-counts").is_visible()
    page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)
