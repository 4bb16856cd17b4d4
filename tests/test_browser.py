"""The operator's path in a real browser (Playwright driving Debian's Chromium) against real
gunicorn + qcluster processes: log in, filter to dead events, open one (its summary, its
attempts as a table, no *Delete*), replay it from its page and see it succeed, purge through the
confirmation page, open the dashboard and see its charts' axes; add a source with its secret
and rotate it.

Screenshots of the list, a dead and a succeeded event and the dashboard, at 1280 and 1920 px,
go to var/screenshots/ (the README shows copies from project/screenshots/).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connections

from tests.conftest import envelope, sign
from tests.processes import REPO, WITHIN, settled, wait_until
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.process

CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO / "var" / "screenshots"
WIDTHS = (1280, 1920)
#: Django's --delete-button-bg (#ba2121): the colour of its own destructive confirmations.
DELETE_RED = "rgb(186, 33, 33)"
OK_ID = "msg_2Yf1cQeVx0kq8hJmN4tPzR7sLwA"  # as long as a provider's (Svix) ids
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


def shoot(page: Any, name: str) -> None:
    """Full-page screenshots of the current page at each of ``WIDTHS``."""
    page.evaluate("window.scrollTo(0, 0)")  # the sticky sidebar is drawn where it scrolled to
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})


def logged_in(browser: Any, base: str) -> Any:
    """A new page, logged in to the admin as ``ops``."""
    page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900})
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "ops-password")
    page.click("input[type=submit]")
    return page


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

    deliver("record", OK_ID)
    deliver("fail", "broken-1")
    deliver("fail", "broken-2")
    wait_until(lambda: WebhookEvent.objects.filter(status=EventStatus.DEAD).count() == 2, 30)
    wait_until(
        lambda: WebhookEvent.objects.get(webhook_id=OK_ID).status == EventStatus.SUCCEEDED, 30
    )

    page = logged_in(browser, base)

    page.goto(f"{base}/admin/webhooks_app/webhookevent/")
    # Every column visible beside both sidebars, a long webhook id cut short.
    assert page.locator("#nav-sidebar").is_visible()
    results = "document.querySelector('#changelist .results')"
    for width in (1280, 1400):
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate(f"{results}.scrollWidth <= {results}.clientWidth"), width
        assert page.locator("#result_list th.column-last_duration").is_visible()
    shoot(page, "event-list")

    # Filter to dead events and open one.
    page.get_by_role("link", name="Dead", exact=True).click()
    page.wait_for_url("**status__exact=dead**")
    assert page.locator("#result_list tbody tr").count() == 2
    page.locator("#result_list tbody tr", has_text="broken-1").locator("th a").click()
    page.wait_for_selector("#event-summary")
    summary = page.locator("#event-summary")
    assert "ValueError: boom on attempt 3" in summary.inner_text()
    assert "no attempts left" in summary.inner_text()
    assert page.locator("a.deletelink").count() == 0  # a read-only audit log
    timeline = page.locator("#attempts-timeline tr.wh-attempt")
    assert timeline.count() == 3
    assert timeline.nth(0).locator("td").nth(3).inner_text() == "failed"
    traceback = page.locator("#attempts-timeline tr.wh-traceback details pre")
    assert not traceback.is_visible()
    page.get_by_text("Full error of attempt 3").click()  # the traceback, one click away
    assert "Traceback (most recent call last)" in traceback.inner_text()
    shoot(page, "event-detail-dead")

    # Make the workflow succeed this time (the "bug is fixed"), then replay it from its page.
    broken = WebhookEvent.objects.get(webhook_id="broken-1")
    WebhookEvent.objects.filter(pk=broken.pk).update(workflow_name="record")
    detail_url = page.url
    summary.get_by_role("button", name="Replay").click()
    page.wait_for_selector("text=Queued 1 event(s) to run again.")
    assert page.url == detail_url
    wait_until(lambda: WebhookEvent.objects.get(pk=broken.pk).status == EventStatus.SUCCEEDED, 30)
    page.reload()
    assert "Succeeded on attempt 4" in page.locator("#event-summary").inner_text()
    assert timeline.count() == 4
    assert timeline.nth(3).locator("td").nth(3).inner_text() == "succeeded"
    shoot(page, "event-detail-succeeded")

    # Purge the succeeded one through the confirmation page, red like Django's own.
    page.goto(f"{base}/admin/webhooks_app/webhookevent/?status__exact=succeeded")
    assert page.locator("#result_list tbody tr").count() == 2
    page.check(f"input[name=_selected_action][value='{broken.pk}']")
    page.select_option("select[name=action]", "purge")
    page.click("button[name=index]")
    page.wait_for_selector("text=Are you sure you want to purge 1 webhook event?")
    purge, cancel = page.locator("input[value='Yes, purge']"), page.locator("a.cancel-link")
    assert purge.evaluate("button => getComputedStyle(button).backgroundColor") == DELETE_RED
    assert purge.bounding_box()["height"] == cancel.bounding_box()["height"]
    purge.click()
    page.wait_for_selector("text=Purged 1 event(s).")
    assert not WebhookEvent.objects.filter(pk=broken.pk).exists()

    # The dashboard, reached from the list: charts with a count axis and time labels, and the
    # dead event among the failures by its exception.
    page.goto(f"{base}/admin/webhooks_app/webhookevent/")
    page.get_by_role("link", name="Dashboard", exact=True).first.click()
    page.wait_for_url("**/dashboard/")
    for chart in ("#chart-24h", "#chart-7d"):
        assert page.locator(f"{chart} svg rect.bar").count() > 0
        assert page.locator(f"{chart} .wh-axis-y text").count() >= 2
        assert page.locator(f"{chart} .wh-axis-x text").count() >= 7
    assert (
        page.locator("#chart-24h").bounding_box()["x"]
        == (page.locator("#status-counts").bounding_box()["x"])
    )  # not indented from the page
    assert page.locator("#recent-failures td.wh-error").inner_text() == (
        "ValueError: boom on attempt 3"
    )
    shoot(page, "dashboard")


def test_operator_replays_all_matching_events_through_the_confirmation_page(
    server, cluster, browser, monkeypatch
):
    """The incident's end: the bug is fixed, so every dead event of one source is replayed from
    the filtered list, after a confirmation page with the count, in the background."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    SHOTS.mkdir(parents=True, exist_ok=True)
    User.objects.create_superuser("ops", "ops@example.com", "ops-password")
    WebhookEvent.objects.bulk_create(
        WebhookEvent(source=source, webhook_id=f"{source}-{i}", workflow_name="record",
                     status=EventStatus.DEAD, attempts=3)
        for source, count in (("generic", 3), ("github", 1))
        for i in range(count)
    )  # fmt: skip
    page = logged_in(browser, f"http://127.0.0.1:{server.port}")
    page.goto(f"http://127.0.0.1:{server.port}/admin/webhooks_app/webhookevent/")
    assert page.locator("#replay-matching").count() == 0  # only a filtered list offers it

    page.get_by_role("link", name="Dead", exact=True).click()
    page.wait_for_url("**status__exact=dead**")
    page.locator("#changelist-filter").get_by_role("link", name="generic", exact=True).click()
    page.wait_for_url("**source=generic**")
    assert page.locator("#result_list tbody tr").count() == 3
    page.get_by_role("link", name="Replay all 3 matching").click()

    page.wait_for_selector("#replay-confirmation")
    assert page.locator("#replay-count").inner_text() == "3"
    assert "status dead; source generic" in page.locator("#replay-confirmation").inner_text()
    shoot(page, "replay-confirmation")
    page.get_by_role("button", name="Yes, replay 3 events").click()

    page.wait_for_url("**/webhookreplay/*/change/")
    assert "started: 3 event(s) to queue in the background." in page.content()
    # The page reloads itself while the replay runs.
    page.wait_for_selector("#replay-state:text('Finished')", timeout=30_000)
    assert page.locator("#replay-progress").inner_text() == "3 of 3 queued (100 %)"
    wait_until(lambda: WebhookEvent.objects.filter(status=EventStatus.SUCCEEDED).count() == 3, 30)
    assert set(
        WebhookEvent.objects.filter(status=EventStatus.SUCCEEDED).values_list("source", flat=True)
    ) == {"generic"}
    assert WebhookEvent.objects.get(source="github").status == EventStatus.DEAD


def test_operator_adds_a_source_and_rotates_its_secret(server, browser, monkeypatch):
    """A new sender, without a deploy: the source is created in the admin with the provider's
    secret, and both gunicorn workers verify its deliveries within 5 s; *Rotate secret* shows
    the new value once, and it verifies beside the old one."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    SHOTS.mkdir(parents=True, exist_ok=True)
    User.objects.create_superuser("ops", "ops@example.com", "ops-password")
    base = f"http://127.0.0.1:{server.port}"
    pasted = "whsec-from-the-provider-0123456789abcdef"
    counter = iter(range(10**6))

    def signed_with(secret: str) -> Callable[[], tuple[bytes, dict[str, str]]]:
        def delivery() -> tuple[bytes, dict[str, str]]:
            body = envelope("record", f"tenant-{next(counter)}")
            return body, {
                "Content-Type": "application/json",
                "X-Webhook-Signature": sign(body, secret),
            }

        return delivery

    accepted = lambda status, body: status == 202  # noqa: E731
    page = logged_in(browser, base)
    page.goto(f"{base}/admin/webhooks_app/webhooksource/")
    assert page.locator("#settings-sources").get_by_role("link", name="github").count() == 1
    page.get_by_role("link", name="Add webhook source").click()
    page.fill("#id_name", "tenant-7")
    page.select_option("#id_scheme", "generic")
    page.fill("#id_secret", pasted)
    page.fill("#id_secret_label", "from the provider")
    page.get_by_role("button", name="Save and continue editing").click()
    page.wait_for_selector("#source-provider")
    assert page.locator("#source-url").inner_text() == f"{base}/webhooks/tenant-7/"
    assert page.locator("#source-state").inner_text() == "served"
    assert pasted not in page.content()
    assert settled(server, accepted, signed_with(pasted), "tenant-7") < WITHIN
    shoot(page, "source-detail")

    page.get_by_role("link", name="Rotate secret").click()
    page.select_option("#id_grace", "1h")
    page.get_by_role("button", name="Rotate secret").click()
    rotated = page.locator("#new-secret").input_value()
    assert len(rotated) >= 40 and rotated != pasted
    assert settled(server, accepted, signed_with(rotated), "tenant-7") < WITHIN
    assert settled(server, accepted, signed_with(pasted), "tenant-7") < WITHIN  # the grace
    page.get_by_role("link", name="Back to tenant-7").click()
    page.wait_for_selector("#source-provider")
    assert rotated not in page.content() and page.locator("td.field-fingerprint").count() == 2
    from playwright.sync_api import Error as PlaywrightError

    with pytest.raises(PlaywrightError, match="ERR_CACHE_MISS"):
        page.go_back()  # no-store: Back finds no copy of the page that showed the value
    page.wait_for_url("chrome-error://**")  # the browser's "Confirm form resubmission"

    page.goto(f"{base}/admin/webhooks_app/webhooksource/")
    row = page.locator("#result_list tbody tr", has_text="tenant-7")
    assert "served" in row.inner_text() and "2" in row.locator("td.field-secrets").inner_text()
    shoot(page, "source-list")
