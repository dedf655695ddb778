"""Debian's Chromium driven by Playwright: how the browser tests and `benchmarks.screenshots` start a
browser and use Triptych's page (deployments/web/).

The browser is the system's `/usr/bin/chromium` (`apt-get install -y chromium`), never one Playwright
downloads; it runs headless with a fresh profile directory that is deleted afterwards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run")  # fmt: skip
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 360, "height": 740}
TIMEOUT_MS = 120_000  # a generous bound per wait: a shared 2-core box under load


@contextmanager
def chromium(viewport: dict = WIDE) -> Iterator:
    """A Playwright `BrowserContext` on Debian's Chromium (`launch_persistent_context` on a temp
    `--user-data-dir`). Raises FileNotFoundError when /usr/bin/chromium is missing."""
    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it as root)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="triptych-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS), viewport=viewport,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


def open_page(context, url: str):
    """A new tab on Triptych's page, once it has asked the server which workflows exist."""
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-workflows=checked]", state="attached")
    return page


def ask(page, question: str, *images: Path) -> None:
    """Attach `images` with the picker, type `question` and press Enter; returns once the answer ended
    (done, stopped or refused: `#chat-panel`'s `data-finished` counter catches up with `data-sent`)."""
    finished = int(page.get_attribute("#chat-panel", "data-finished") or 0)
    if images:
        page.set_input_files("#chat-images", [str(path) for path in images])
        page.wait_for_function("n => document.querySelectorAll('#attachments li').length === n", arg=len(images))
    page.fill("#chat-input", question)
    page.press("#chat-input", "Enter")
    page.wait_for_function("n => Number(document.getElementById('chat-panel').dataset.finished) > n", arg=finished)


def last_answer(page):
    return page.locator(".turn.assistant").last


def fill_paint_form(page, prompt: str, **fields) -> None:
    """Show the paint panel and fill it; `fields`: steps, sampler, seed, cache_interval, size."""
    page.click("#tab-paint")
    page.fill("#paint-prompt", prompt)
    for name, value in fields.items():
        selector = f"#paint-{name.replace('_', '-')}"
        if name in ("sampler", "size"):
            page.select_option(selector, str(value))
        else:
            page.fill(selector, str(value))


def paint(page, prompt: str, **fields) -> None:
    """Fill the paint form, press Paint and wait for the image (or an error)."""
    fill_paint_form(page, prompt, **fields)
    page.click("#paint-go")
    page.wait_for_function("['done', 'error', 'stopped'].includes(document.getElementById('paint-panel').dataset.state)")
