"""Debian's Chromium under Playwright: the browser is the system package, never a download."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGUMENTS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when Chromium is installed."""
    if CHROMIUM.is_file():
        return None
    return f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)"


def launch(playwright: Playwright) -> Browser:
    """Headless Chromium; Playwright gives it a fresh temporary profile (user-data dir) of its own."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGUMENTS)


def profile_page(playwright: Playwright, profile: Path, viewport: dict | None = None) -> Page:
    """A tab of a browser with its own profile in `profile`: its HTTP cache is on disk, as a returning
    visitor's is (a context of `new_page` caches in memory only, and not files of several MB)."""
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGUMENTS,
        viewport=viewport or DESKTOP, device_scale_factor=1,
    )  # fmt: skip
    return context.pages[0] if context.pages else context.new_page()


def new_page(browser: Browser, viewport: dict | None = None) -> Page:
    """A tab in a context of its own: no storage (access key, cache) carries over from another."""
    context = browser.new_context(viewport=viewport or DESKTOP, device_scale_factor=1)
    return context.new_page()
