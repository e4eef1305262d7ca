"""The web UI end to end in headless Chromium (Debian's chromium, driven by Playwright).

In CI (CI=true) missing browser pieces fail the test; elsewhere they skip it.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"


def _need(module: str):  # type: ignore[no-untyped-def]
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is required in CI")
        pytest.skip(f"{module} not installed")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is required in CI")
        pytest.skip("chromium not installed")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_upload_run_and_screenshot_in_chromium() -> None:
    _need("gradio")
    _need("mediapipe")
    sync_api = _need("playwright.sync_api")
    chromium = _chromium()
    from gdpw.app.web import build_app, checkpoint_choices

    app = build_app(checkpoint_choices([]))
    port = _free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            page.click("#use-demo")
            page.wait_for_selector("#driving video", timeout=60_000)
            page.wait_for_selector("#source img", timeout=60_000)
            page.click("#animate")
            try:
                page.wait_for_selector("#result video", timeout=180_000)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "app_e2e_failure.png"), full_page=True)
                raise
            src = page.get_attribute("#result video", "src")
            assert src and ".mp4" in src
            page.screenshot(path=str(ARTIFACTS / "app_e2e.png"), full_page=True)
            browser.close()
    finally:
        workdir = app.gdpw_state.workdir
        app.gdpw_state.close()
        app.close()
    assert (ARTIFACTS / "app_e2e.png").stat().st_size > 10_000
    assert not workdir.exists()  # the session's demo assets and results are removed
