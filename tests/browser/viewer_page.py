"""The viewer page as tests and the screenshot script drive it, through what a visitor sees and
the progress the page publishes in the DOM (<body data-state>, the canvas's data-layer, data-received
and its `layershown` events)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from playwright.sync_api import Page

DELIVERY_TIMEOUT_MS = 240_000  # an upload encodes and verifies every layer on a shared, busy machine
FINISHED = "() => ['done', 'error'].includes(document.body.dataset.state)"

# A canvas's size and RGBA pixels, base64-encoded so that they travel cheaply to Python.
CANVAS_PIXELS = """(canvas) => {
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let text = "";
  for (let start = 0; start < rgba.length; start += 0x8000) {
    text += String.fromCharCode(...rgba.subarray(start, start + 0x8000));
  }
  return { width: canvas.width, height: canvas.height, rgba: btoa(text) };
}"""

# Keeps the pixels of every layer as it arrives, read inside the event so that none is missed; called
# again, it starts a new record. It listens on the document, so it may run before the page has its canvas.
RECORD_ARRIVALS = f"""() => {{
  window.arrivals = [];
  if (window.recordingArrivals) return;
  window.recordingArrivals = true;
  const pixels = {CANVAS_PIXELS};
  document.addEventListener("layershown", (event) => {{
    if (event.target.id !== "reconstruction" || event.detail.cause !== "arrival") return;
    window.arrivals.push({{ layer: event.detail.layer, ...pixels(event.target) }});
  }}, true);
}}"""

READ_CANVAS = f"""(id) => ({CANVAS_PIXELS})(document.getElementById(id))"""


def _rgba(record: dict) -> np.ndarray:
    pixels = np.frombuffer(base64.b64decode(record["rgba"]), dtype=np.uint8)
    return pixels.reshape(record["height"], record["width"], 4)


class ViewerPage:
    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url

    def open(self, query: str = "", record_arrivals: bool = False) -> None:
        """Load the viewer at `query`; with `record_arrivals`, layers are recorded from before its scripts run
        (a picture opened by the address may have layers painted before `open` returns)."""
        if record_arrivals:
            self.page.add_init_script(f"({RECORD_ARRIVALS})()")
        self.page.goto(f"{self.base_url}/{query}")
        self.page.wait_for_function("() => document.getElementById('status').textContent !== ''")

    def set_key(self, key: str) -> None:
        self.page.locator("summary", has_text="Access key").click()
        self.page.get_by_label("Bearer key").fill(key)

    def record_arrivals(self) -> None:
        self.page.evaluate(RECORD_ARRIVALS)

    def arrivals(self) -> list[tuple[int, np.ndarray]]:
        """(layer, RGBA pixels of the canvas) for every layer painted on arrival, in order."""
        return [(record["layer"], _rgba(record)) for record in self.page.evaluate("window.arrivals")]

    def upload(self, path: Path) -> None:
        self.page.set_input_files("#file", str(path))

    def choose_mode(self, label: str) -> None:
        self.page.get_by_label(label).check()

    def wait_until_finished(self) -> str:
        """The final state, 'done' or 'error'."""
        self.page.wait_for_function(FINISHED, timeout=DELIVERY_TIMEOUT_MS)
        return self.state()

    def state(self) -> str:
        return self.page.evaluate("document.body.dataset.state")

    def wait_for_error(self) -> str:
        alert = self.page.get_by_role("alert")
        alert.wait_for(state="visible", timeout=DELIVERY_TIMEOUT_MS)
        return alert.inner_text()

    def error_text(self) -> str:
        alert = self.page.get_by_role("alert")
        return alert.inner_text() if alert.is_visible() else ""

    def canvas(self, element_id: str = "reconstruction") -> np.ndarray:
        return _rgba(self.page.evaluate(READ_CANVAS, element_id))

    def shown_layer(self) -> int:
        return int(self.page.get_attribute("#reconstruction", "data-layer"))

    def caption(self) -> str:
        return self.page.inner_text("#layer-caption")

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))
