"""Write docs/viewer-refinement.png: the viewer mid-refinement, at its first layer and at its last, every
layer decoded in the browser (the page's default).

    python -m tests.browser.make_screenshot --weights weights/codec.pt

Starts a server of its own on loopback (writes open, data in a temporary folder) and uploads the
centre of a Kodak picture (384x256, so that the panel shows it enlarged; by default the crop of kodim23
in tests/data, or `--image` any picture, e.g. a full Kodak image) through the page over a
simulated 256 kbit/s link. The page's request for layer 2 is held
back (Playwright routes the WebSocket) until the reconstruction panel has been photographed with
layer 1 alone; then the stream goes on, and the panel is photographed again with every layer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import WebSocketRoute, sync_playwright

from bench import chromium
from codec.api import default_weights_path
from tests.browser.composite import side_by_side
from tests.browser.viewer_page import DELIVERY_TIMEOUT_MS, ViewerPage
from tests.harness import REPO, ServerFactory

OUTPUT = REPO / "docs" / "viewer-refinement.png"
KODAK_PICTURE = REPO / "tests" / "data" / "kodim23-384x256.png"  # the centre of kodim23 (tests/data/README.md)
LINK = "256000"  # bit/s
CROP = (384, 256)
FIRST_LAYER_SHOWN = """() => document.getElementById('reconstruction').dataset.layer === '1'
  || document.body.dataset.state === 'error'"""


def centre_crop(source: Path, size: tuple[int, int], folder: Path) -> Path:
    """The middle `size` pixels of `source`, as a PNG in `folder`."""
    with Image.open(source) as image:
        left, top = (image.width - size[0]) // 2, (image.height - size[1]) // 2
        path = folder / f"{source.stem}-{size[0]}x{size[1]}.png"
        image.convert("RGB").crop((left, top, left + size[0], top + size[1])).save(path)
    return path


class LayerGate:
    """Forwards the page's WebSocket messages to the server, except requests beyond layer 1 until opened."""

    def __init__(self) -> None:
        self.server: WebSocketRoute | None = None
        self.held: list[str | bytes] = []
        self.open = False

    def route(self, page_side: WebSocketRoute) -> None:
        self.server = page_side.connect_to_server()
        page_side.on_message(self.forward)

    def forward(self, message: str | bytes) -> None:
        assert self.server is not None
        request = json.loads(message) if isinstance(message, str) else {}
        if not self.open and request.get("type") == "request" and request.get("layer", 1) > 1:
            self.held.append(message)
        else:
            self.server.send(message)

    def release(self) -> None:
        assert self.server is not None
        self.open = True
        for message in self.held:
            self.server.send(message)
        self.held.clear()


def photograph(server_url: str, picture: Path, folder: Path) -> tuple[Path, Path]:
    with sync_playwright() as playwright:
        browser = chromium.launch(playwright)
        try:
            page = chromium.new_page(browser, {"width": 1280, "height": 1000})
            gate = LayerGate()
            page.route_web_socket("**/ws/image/**", gate.route)
            viewer = ViewerPage(page, server_url)
            viewer.open()
            page.select_option("#throttle", LINK)
            viewer.upload(picture)
            page.wait_for_function(FIRST_LAYER_SHOWN, timeout=DELIVERY_TIMEOUT_MS)
            if viewer.state() == "error":
                raise RuntimeError(f"the viewer failed: {viewer.error_text()}")
            panel = page.locator("section.view")
            first = folder / "first.png"
            panel.screenshot(path=str(first))
            gate.release()
            if viewer.wait_until_finished() != "done":
                raise RuntimeError(f"the viewer failed: {viewer.error_text()}")
            if page.get_attribute("#reconstruction", "data-decoder") != "browser":
                raise RuntimeError(f"the page did not decode in the browser: {page.inner_text('#decoder-note')}")
            last = folder / "last.png"
            panel.screenshot(path=str(last))
            return first, last
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=default_weights_path())
    parser.add_argument("--image", type=Path, default=KODAK_PICTURE)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    problem = chromium.missing_browser() or (None if args.weights.is_file() else f"no weights at {args.weights}")
    if problem:
        print(problem, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as root:
        factory = ServerFactory(Path(root), args.weights)
        try:
            server = factory.start({"CODEC_SERVER_WORKERS": "1"})
            picture = centre_crop(args.image, CROP, Path(root))
            first, last = photograph(server.url, picture, Path(root))
        finally:
            factory.stop_all()
        print(side_by_side(first, last, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
