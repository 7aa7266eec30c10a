"""The console in a real browser: Debian's Chromium, driven by Playwright
(PyPI) with the system browser, against a running flowtally.

Usage: console.py BASE_URL EXPECT_JSON [SCREENSHOT_DIR]

EXPECT_JSON: {"from": T, "to": T, "at": T, "users": {"alice": BYTES, ...},
"ip": ADDRESS, "ip_user": USER, "exporter": ADDRESS}. Exits 0 when every
check holds, 1 naming the first that does not. Every request the page makes
is recorded; one to anywhere but BASE_URL's host fails the run.
"""

import json
import sys
import tempfile
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

# What works here for a headless, offline Chromium (no background traffic).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def check(condition, what):
    if not condition:
        print(f"console: FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"console: ok: {what}")


def main():
    base, expect = sys.argv[1], json.loads(sys.argv[2])
    shots = sys.argv[3] if len(sys.argv) > 3 else None
    host = urlsplit(base).netloc
    requests = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path="/usr/bin/chromium",
            headless=True,
            args=FLAGS,
        )
        context.on("request", lambda r: requests.append(r.url))
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base)
        check(page.title() == "flowtally", "the console loads at /")
        check(page.is_hidden("#login"), "no token asked for on loopback")

        # A user: summary figures, the chart, the sessions.
        page.fill("#from", str(expect["from"]))
        page.fill("#to", str(expect["to"]))
        user, want = next(iter(expect["users"].items()))
        page.fill("#q", user)
        page.click("button[type=submit]")
        page.wait_for_selector("#user-summary")
        got = page.get_attribute("#user-bytes", "data-bytes")
        check(got == str(want), f"{user}'s page shows {want} bytes (got {got})")
        check(page.locator("#user-bytes b").inner_text().endswith("MB"), "in people's units")
        bars = page.locator("#usage-chart rect.bar").count()
        check(bars > 0, f"the usage chart is drawn ({bars} bars)")
        drawn = sum(int(b) for b in page.locator("#usage-chart rect.bar").evaluate_all(
            "bars => bars.map(b => b.getAttribute('data-bytes'))"))
        check(drawn == want, f"the chart's bars add up to {want} (got {drawn})")
        names = page.locator("#class-chart text.class-name").evaluate_all(
            "texts => texts.map(t => t.textContent)")
        check(names == expect["classes"], f"the classes of {user}'s traffic are drawn (got {names})")
        by_class = sum(int(b) for b in page.locator("#class-chart rect.bar").evaluate_all(
            "bars => bars.map(b => b.getAttribute('data-bytes'))"))
        check(by_class == want, f"the class bars add up to {want} (got {by_class})")
        check(f"{user}-1" in page.inner_text("#sessions"), f"{user}'s session is listed")
        if shots:
            page.screenshot(path=f"{shots}/user.png", full_page=True)

        # An address: who held it at a moment, and its usage.
        page.fill("#from", str(expect["at"]))
        page.fill("#to", "")
        page.fill("#q", expect["ip"])
        page.click("button[type=submit]")
        page.wait_for_selector("#whois")
        owner = page.get_attribute("#whois", "data-user")
        check(owner == expect["ip_user"], f"{expect['ip']} was {expect['ip_user']}'s (got {owner})")
        page.wait_for_selector("#ip-usage")
        check(expect["ip_user"] in page.inner_text("#ip-usage"), "the address's usage names its user")
        if shots:
            page.screenshot(path=f"{shots}/ip.png", full_page=True)

        # Top users of the latest flushes.
        page.goto(base + "#/top")
        page.wait_for_selector("#top-now")
        top = page.inner_text("#top-now")
        for name in expect["users"]:
            check(name in top, f"{name} is among the top users")
        cells = page.locator("#top-now td[data-bytes]").evaluate_all(
            "cells => cells.map(c => c.getAttribute('data-bytes'))")
        for name, total in expect["users"].items():
            check(str(total) in cells, f"{name}'s {total} bytes are in the top table")
        if shots:
            page.screenshot(path=f"{shots}/top.png", full_page=True)

        # Exporter health.
        page.goto(base + "#/exporters")
        page.wait_for_selector("#exporters")
        check(expect["exporter"] in page.inner_text("#exporters"), "the exporter is listed")
        if shots:
            page.screenshot(path=f"{shots}/exporters.png", full_page=True)

        context.close()
    check(not errors, f"no script errors ({errors})")
    elsewhere = [u for u in requests if urlsplit(u).netloc != host]
    check(requests and not elsewhere, f"all {len(requests)} requests went to {host} ({elsewhere})")


if __name__ == "__main__":
    main()
