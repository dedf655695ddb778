"""`python -m benchmarks.screenshots`: start Triptych (the shipped `toy` models by default), use its browser
page in Debian's Chromium the way a person would, and save one screenshot per panel under docs/:
page-chat.png (a toy image, two questions, status strips), page-paint.png (a painted image, its progress
bar and status), page-search.png (only when the server serves the `image_search` workflow) and
page-narrow.png (the chat at 360 px wide)."""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from benchmarks.browser import NARROW, ask, chromium, open_page, paint
from launcher.demo import DEMO_IMAGE
from triptych.config import TriptychConfig
from triptych.ports import free_port

QUESTIONS = ("what colour is the square?", "what shape is at the top-left?")
PAINT_PROMPT = "a red circle"
SEARCH_QUERY = "a blue square"
SEARCH_OBJECTS = (("circle", "red"), ("square", "blue"), ("triangle", "green"), ("square", "yellow"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="toy", help="model profile (toy: the shipped trained models)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs")
    args = parser.parse_args()
    from deployments.server import serving

    args.out.mkdir(parents=True, exist_ok=True)
    config = TriptychConfig(profile=args.profile, http_port=free_port(), grpc_port=free_port())
    with serving(config, quiet=True) as server, chromium() as context:
        url = f"{server.http_url}/"
        page = open_page(context, url)
        ask(page, QUESTIONS[0], DEMO_IMAGE)
        ask(page, QUESTIONS[1])
        _save(page, args.out / "page-chat.png")
        paint(page, PAINT_PROMPT, seed=0)
        _save(page, args.out / "page-paint.png")
        if page.is_visible("#tab-search"):
            _search(page)
            _save(page, args.out / "page-search.png")
        else:
            print("no page-search.png: this server does not list the image_search workflow")
        narrow = open_page(context, url)
        narrow.set_viewport_size(NARROW)
        ask(narrow, QUESTIONS[0], DEMO_IMAGE)
        _save(narrow, args.out / "page-narrow.png")
    return 0


def _search(page) -> None:
    from toy.world import render, single_object_scene

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, (shape, colour) in enumerate(SEARCH_OBJECTS):
            paths.append(Path(folder) / f"{colour}-{shape}.png")
            render(single_object_scene(random.Random(index), shape, colour)).save(paths[-1])
        page.click("#tab-search")
        page.fill("#search-query", SEARCH_QUERY)
        page.set_input_files("#search-images", [str(path) for path in paths])
        page.click("#search-go")
        page.wait_for_function(f"document.querySelectorAll('#search-results li').length === {len(paths)}")


def _save(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
