"""The panel as a person sees it, in the frontends people use: a notebook served by Voilà,
the same notebook run in JupyterLab, and a marimo app, each driven in headless Chromium.

Debian's Chromium (``/usr/bin/chromium``) is driven by Playwright for Python; Playwright's own
browser download is never used, and the pages may reach nothing but this machine. Screenshots
of the panel are kept in ``artifacts/``.
"""

from __future__ import annotations

import contextlib
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
    await asyncio.sleep(0.2)
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


def _write_notebook(folder: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(PANEL_NOTEBOOK)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, folder / "panel.ipynb")


@contextlib.contextmanager
def _server(command: list[str], folder: Path, port: int) -> Iterator[None]:
    """Run a notebook server until the block ends."""
    server = subprocess.Popen(command, cwd=folder, env=process_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_port(port, server)
        yield
    finally:
        server.terminate()
        try:
            server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


@pytest.fixture
def voila(tmp_path: Path) -> Iterator[str]:
    need_chromium()
    _write_notebook(tmp_path)
    port = spare_port()
    command = [sys.executable, "-m", "voila", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
               "--Voila.tornado_settings={'disable_check_xsrf': True}", str(tmp_path / "panel.ipynb")]
    with _server(command, tmp_path, port):
        yield f"http://127.0.0.1:{port}/"


def _wait_for_port(port: int, server: subprocess.Popen[str], timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"{server.args[2]} exited: {server.communicate()[1][-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"{server.args[2]} did not start listening")


def _browser(tmp_path: Path, playwright: Any, **options: Any) -> Any:
    return playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        **options)


def _completed(page: Any) -> int:
    found = re.search(r"completed (\d+)", page.locator(".khadem-panel").inner_text())
    return int(found.group(1)) if found else -1


def drive_the_panel(page: Any, shot: str) -> None:
    """What a person does with the panel of PANEL_NOTEBOOK: watch jobs complete, pause this
    kernel's workers and see progress stop, resume, and read the end (59 done, the one failure
    and its error, a full bar). Locators reach into a widget's shadow root where a frontend
    (marimo) draws it in one."""
    panel = page.locator(".khadem-panel")
    panel.wait_for(timeout=120_000)
    deadline = time.monotonic() + 120
    while _completed(page) < 6:
        assert time.monotonic() < deadline, panel.inner_text()
        time.sleep(0.1)
    page.get_by_role("button", name="Pause here").click()
    _wait_for_text(page, "paused")
    time.sleep(1.0)  # running jobs (at most 2) finish; nothing new starts
    paused_at = _completed(page)
    time.sleep(1.5)
    assert _completed(page) == paused_at, "progress continued while paused"
    assert paused_at < 59
    page.get_by_role("button", name="Resume here").click()
    _wait_for_text(page, "60 / 60 (100%)", timeout=60)
    text = panel.inner_text()
    assert re.search(r"completed 59\b", text) and re.search(r"failed 1\b", text), text
    assert "ValueError: point 3 diverged" in text
    assert page.locator(".khadem-panel .progress-bar").evaluate("e => e.style.width") == "100%"
    assert page.get_by_role("button", name="Resume here").is_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    panel.screenshot(path=str(ARTIFACTS / shot))


def _wait_for_text(page: Any, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in (shown := page.locator(".khadem-panel").inner_text()):
        assert time.monotonic() < deadline, f"{text!r} never showed; the panel says: {shown}"
        time.sleep(0.1)


def _only_this_machine(context: Any) -> None:
    """Pages may load from loopback only (a frontend that asks the network for news or
    fonts gets nothing)."""
    def route(r: Any) -> None:
        host = r.request.url.split("/")[2].split(":")[0] if "://" in r.request.url else ""
        if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)


def test_panel_in_a_real_browser(voila: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = _browser(tmp_path, p, viewport={"width": 1000, "height": 800})
        _only_this_machine(context)
        page = context.new_page()
        page.goto(voila, timeout=120_000)
        drive_the_panel(page, "panel.png")
        context.close()


def test_panel_in_jupyterlab(tmp_path: Path) -> None:
    """The same notebook opened in JupyterLab and run from its Run menu."""
    from playwright.sync_api import sync_playwright

    need_chromium()
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _write_notebook(notebooks)
    port = spare_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
               "--ServerApp.disable_check_xsrf=True", "--allow-root",
               f"--ServerApp.root_dir={notebooks}", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with _server(command, tmp_path, port), sync_playwright() as p:
        context = _browser(tmp_path, p, viewport={"width": 1280, "height": 900})
        _only_this_machine(context)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/lab/tree/panel.ipynb", timeout=120_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)  # the status bar
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        drive_the_panel(page, "panel-jupyterlab.png")
        context.close()


MARIMO_APP = """
import marimo

app = marimo.App()


@app.cell
def _():
    import marimo as mo

    return (mo,)


@app.cell
def _(mo):
{body}
    mo.ui.anywidget(panel)
    return


if __name__ == "__main__":
    app.run()
"""


def test_panel_in_marimo(tmp_path: Path) -> None:
    """The same cell as a marimo app (``marimo run``), the panel wrapped by
    ``mo.ui.anywidget`` as marimo asks of every anywidget widget."""
    from playwright.sync_api import sync_playwright

    need_chromium()
    body = "\n".join(f"    {line}" if line else "" for line in PANEL_NOTEBOOK.strip().splitlines()[:-1])
    (tmp_path / "panel_app.py").write_text(MARIMO_APP.format(body=body))
    port = spare_port()
    command = [sys.executable, "-m", "marimo", "run", "--headless", "--no-token", "--no-sandbox",
               f"--port={port}", "--host=127.0.0.1", str(tmp_path / "panel_app.py")]
    with _server(command, tmp_path, port), sync_playwright() as p:
        context = _browser(tmp_path, p, viewport={"width": 1280, "height": 900})
        _only_this_machine(context)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        drive_the_panel(page, "panel-marimo.png")
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
