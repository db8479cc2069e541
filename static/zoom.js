// The deep-zoom page: OpenSeadragon reads the image's IIIF info.json and asks for tiles of the codec's
// tile size at the scale it shows, each from /iiif/3/{id}/...; the server decodes only the codec tiles a
// request touches and those next to them (the post-filter reads across tile borders).
import { accessKey } from "./api.js";

const imageId = location.pathname.split("/").filter(Boolean).pop();
const status = document.getElementById("zoom-status");
const errorBox = document.getElementById("zoom-error");

function fail(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  document.body.dataset.state = "error";
}

const key = accessKey();
const headers = key ? { Authorization: `Bearer ${key}` } : {};
const infoUrl = new URL(`iiif/3/${encodeURIComponent(imageId)}/info.json`, document.baseURI).href;

const response = await fetch(infoUrl, { headers }).catch(() => null);
if (!response || !response.ok) {
  fail(response ? `No picture to zoom: the server answered ${response.status} for ${imageId}` : "The server cannot be reached");
} else {
  const info = await response.json();
  status.textContent = `${info.width} × ${info.height} pixels; tiles of ${info.tiles[0].width}²`;
  const viewer = OpenSeadragon({
    element: document.getElementById("zoom"),
    prefixUrl: new URL("static/vendor/openseadragon/images/", document.baseURI).href,
    tileSources: info,
    drawer: "canvas",
    loadTilesWithAjax: Boolean(key),
    ajaxHeaders: headers,
    showNavigator: true,
    maxZoomPixelRatio: 2,
  });
  viewer.addHandler("open-failed", (event) => fail(`The picture cannot be opened: ${event.message}`));
  viewer.addHandler("tile-load-failed", (event) => fail(`A tile failed to load: ${event.message}`));
  viewer.addHandler("open", () => { document.body.dataset.state = "open"; });
  window.zoomViewer = viewer; // for tests and the console
}
