"""The panel as a person sees it: a notebook served by Voilà, driven in headless Chromium.

Debian's Chromium (``/usr/bin/chromium``) is driven by Playwright for Python; Playwright's own
browser download is never used. A screenshot of the panel is kept in ``artifacts/``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import missing
from procs import env as process_env
from redis_servers import spare_port

ROOT = Path(__file__).parent.parent
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow

PANEL_NOTEBOOK = """
import asyncio
import khadem_nb as kn

q = kn.Queue()

@q.job
async def step(i: int) -> int:
    await asyncio.sleep(0.1)
    kn.progress(1.0, note=f"step {i}")
    if i == 3:
        raise ValueError("point 3 diverged")
    return i

g = step.map([{"i": i} for i in range(60)])
panel = q.panel(refresh=0.2)
q.start(concurrency=2)
panel
"""


def need_chromium() -> None:
    """Skip (or fail, with KHADEM_REQUIRE_BROWSER=1) where Debian's Chromium is missing."""
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)",
                "KHADEM_REQUIRE_BROWSER")


@pytest.fixture
def voila(tmp_path: Path) -> Iterator[str]:
    need_chromium()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(PANEL_NOTEBOOK)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "panel.ipynb")
    port = spare_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "voila", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
         "--Voila.tornado_settings={'disable_check_xsrf': True}", str(tmp_path / "panel.ipynb")],
        cwd=tmp_path, env=process_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_port(port, server)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        try:
            server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def _wait_for_port(port: int, server: subprocess.Popen[str], timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"voila exited: {server.communicate()[1][-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError("voila did not start listening")


def _browser(tmp_path: Path, playwright: Any, **options: Any) -> Any:
    return playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        **options)


def _completed(page: Any) -> int:
    found = re.search(r"completed (\d+)", page.inner_text(".khadem-panel"))
    return int(found.group(1)) if found else -1


def test_panel_in_a_real_browser(voila: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = _browser(tmp_path, p, viewport={"width": 1000, "height": 800})
        page = context.new_page()
        page.goto(voila, timeout=120_000)
        page.wait_for_selector(".khadem-panel", timeout=120_000)
        page.wait_for_function("document.querySelector('.khadem-panel').innerText.includes('completed')")
        deadline = time.monotonic() + 60
        while _completed(page) < 6:
            assert time.monotonic() < deadline, page.inner_text(".khadem-panel")
            time.sleep(0.1)
        page.get_by_role("button", name="Pause here").click()
        page.wait_for_function("document.querySelector('.khadem-panel').innerText.includes('paused')")
        time.sleep(1.0)  # running jobs (at most 2) finish; nothing new starts
        paused_at = _completed(page)
        time.sleep(1.5)
        assert _completed(page) == paused_at, "progress continued while paused"
        assert paused_at < 59
        page.get_by_role("button", name="Resume here").click()
        page.wait_for_function(
            "document.querySelector('.khadem-panel').innerText.includes('60 / 60 (100%)')", timeout=60_000)
        text = page.inner_text(".khadem-panel")
        assert re.search(r"completed 59\b", text) and re.search(r"failed 1\b", text), text
        assert "ValueError: point 3 diverged" in text
        bar = page.eval_on_selector(".khadem-panel .progress-bar", "e => e.style.width")
        assert bar == "100%"
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator(".khadem-panel").screenshot(path=str(ARTIFACTS / "panel.png"))
        context.close()


# the innermost element wider than the panel, to say what overflows
WIDEST_CHILD = """e => { let found = 'nothing';
  for (const c of e.querySelectorAll('*')) {
    if (c.scrollWidth > e.clientWidth) {
      found = `<${c.tagName.toLowerCase()} class="${c.className}"> ${c.scrollWidth}px: `
        + c.innerText.slice(0, 80);
    }
  }
  return `${found} (panel ${e.clientWidth}px)`; }"""


def test_panel_reads_in_dark_theme_and_narrow_width(voila: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        colours = {}
        for theme in ("light", "dark"):
            context = _browser(tmp_path / theme, p, viewport={"width": 360, "height": 900})
            page = context.new_page()
            page.goto(f"{voila}?voila-theme={theme}&theme={theme}", timeout=120_000)
            page.wait_for_selector(".khadem-panel", timeout=120_000)
            page.wait_for_function("document.querySelector('.khadem-panel').innerText.includes('completed')")
            fits = page.eval_on_selector(".khadem-panel", "e => e.scrollWidth <= e.clientWidth + 1")
            widest = page.eval_on_selector(".khadem-panel", WIDEST_CHILD)
            assert fits, f"the panel overflows a 360 px wide page ({theme}): {widest}"
            colours[theme] = page.eval_on_selector(".khadem-panel", "e => getComputedStyle(e).color")
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator(".khadem-panel").screenshot(path=str(ARTIFACTS / f"panel-{theme}-narrow.png"))
            context.close()
        assert colours["light"] != colours["dark"], colours
