"""report.html in a real headless browser (Debian's Chromium, driven by Playwright): it renders with
no console error and no request beyond the file itself, the numbers on the page are report.json's,
and a screenshot is taken.

Chromium is installed by the fixture when the tests run as root (as .ci/run does for sshd); where
it cannot be, these tests skip and say why. Playwright cannot download its own browsers on these
machines, so it is pointed at Debian's binary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekd.report.fields import raw_timings
from edgekd.report.html import render_html

# Debian's /usr/bin/chromium is a shell wrapper; the binary is beside its libraries.
_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")


def _find_chromium() -> str | None:
    return next((path for path in _CANDIDATES if Path(path).is_file() and os.access(path, os.X_OK)), None)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    executable = _find_chromium()
    if executable is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "install", "-y", "-qq", "chromium"], ["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "chromium"]):  # stale package lists: update once
            if subprocess.run(command, capture_output=True, timeout=900, check=False, env=env).returncode == 0 \
                    and command[1] == "install":
                break
        executable = _find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed and could not be (needs root and apt-get: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to start as root, which is how CI runs.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser, path: Path):
    """The page at `path`, with every console message, page error and request it made."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    seen = {"console": [], "errors": [], "requests": []}
    page.on("console", lambda message: seen["console"].append((message.type, message.text)))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.goto(path.as_uri(), wait_until="load")
    return page, seen


def write_run(folder: Path, report: dict, timings: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "report.html").write_text(render_html(report, timings_ms=timings), encoding="utf-8")
    return folder / "report.html"


def json_value(report: dict, dotted: str):
    value = report
    for part in dotted.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize("which", ["measured", "predicted"])
def test_report_renders_offline_with_report_jsons_numbers(browser, which, request, tmp_path,
                                                          measured_bench):
    report = request.getfixturevalue(f"{which}_report")
    path = write_run(tmp_path / which, report, raw_timings(measured_bench) if which == "measured" else None)
    page, seen = open_page(browser, path)
    assert [m for m in seen["console"] if m[0] in ("error", "warning")] == [] and seen["errors"] == []
    assert seen["requests"] == [path.as_uri()]  # the document itself, nothing else

    on_disk = json.loads((path.parent / "report.json").read_text())
    checked = set()
    for element in page.locator("[data-key]").all():
        key, scale = element.get_attribute("data-key"), float(element.get_attribute("data-scale"))
        text = element.inner_text()
        decimals = len(text.split(".")[1]) if "." in text else 0
        shown = float(re.sub(r"[^\d.\-]", "", text))
        assert shown == pytest.approx(json_value(on_disk, key) * scale, abs=0.51 * 10**-decimals), key
        checked.add(key)
    assert {"budget_ms", "speedup_p50", "models.student_int8.accuracy", "models.student_int8.latency_ms.p50",
            "models.teacher.latency_ms.p50", "models.student_int8.size_mb"} <= checked
    if which == "measured":
        assert {"models.student_int8.latency_ms.p99", "models.student_int8.load_ms",
                "models.student_int8.peak_memory_mb"} <= checked
    if which == "predicted":  # every latency cell of the models table says PREDICTED
        rows = page.locator("table").first.locator("tbody tr")
        assert rows.count() == 3
        assert all("PREDICTED" in rows.nth(i).inner_text() for i in range(3))
    shot = tmp_path / f"{which}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    page.close()


def test_the_checks_see_a_request_and_a_console_error(browser, tmp_path):
    # The harness itself: a page that loads something from outside is caught.
    path = tmp_path / "bad.html"
    path.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png">'
                    "<script>console.error('boom')</script></body></html>")
    page, seen = open_page(browser, path)
    page.wait_for_timeout(200)
    assert "http://127.0.0.1:9/x.png" in seen["requests"]
    assert ("error", "boom") in seen["console"]
    page.close()
