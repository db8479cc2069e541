// The page: choose an image (upload or stored), deliver its layers (WebSocket or byte ranges,
// through a simulated link), show each layer as it arrives, and let the visitor move between
// layers and compare one with the original.
//
// By default the page decodes the bitstream itself (static/decoder/: a pool of Web Workers running the
// exact entropy path and the synthesis network in WebAssembly SIMD); the "Decode" switch shows the server's
// previews instead, and the page falls back to them when this browser cannot decode.
//
// For tests and tools the page reports progress in the DOM: <body data-state> is one of idle,
// uploading, encoding, loading, delivering, done, error; the canvas #reconstruction carries
// data-layer (shown), data-received, data-layers, data-decoder (browser or server) and, when the
// browser decodes, data-checksums (each layer's symbol checksum, space-separated) and data-decode-ms;
// it fires `layershown` after every paint.

import {
  accessKey,
  followJob,
  imageInfo,
  reconstruction,
  serviceUrl,
  setAccessKey,
  storedImages,
  uploadImage,
} from "./api.js";
import { drawChart } from "./chart.js";
import { LayerFrames, decodePicture, paint } from "./frames.js";
import { SimulatedLink } from "./link.js";
import { fetchLayerRanges } from "./ranges.js";
import { streamLayers } from "./stream.js";
import { WorkerDecoder, whyBrowserCannotDecode } from "./decoder/client.js";

const FLICKER_MS = 700;

const $ = (id) => document.getElementById(id);
const view = {
  file: $("file"),
  dropzone: $("dropzone"),
  progress: $("upload-progress"),
  key: $("key"),
  stored: $("stored"),
  showStored: $("show-stored"),
  refreshStored: $("refresh-stored"),
  moreStored: $("more-stored"),
  throttle: $("throttle"),
  compare: $("compare"),
  play: $("play"),
  pictures: $("pictures"),
  canvas: $("reconstruction"),
  caption: $("layer-caption"),
  originalFigure: $("original-figure"),
  originalCanvas: $("original"),
  originalCaption: $("original-caption"),
  slider: $("layer-slider"),
  previous: $("previous-layer"),
  next: $("next-layer"),
  status: $("status"),
  error: $("error"),
  chart: $("chart"),
  rows: $("layer-rows"),
  facts: $("image-facts"),
  zoomLink: $("zoom-link"),
  decoderNote: $("decoder-note"),
};

const frames = new LayerFrames(view.canvas);
const state = {
  info: null,
  original: null, // the uploaded file's picture, when this browser uploaded it
  reference: null, // what the comparison shows: the original, else the full reconstruction
  arrivals: new Map(), // layer -> {receivedBytes, seconds, contentRange}
  shown: 0,
  delivery: null, // AbortController of the running delivery
  nextPage: null,
  flicker: null,
  decoder: null, // the WorkerDecoder, made when the browser first decodes
  cannotDecode: whyBrowserCannotDecode(), // why this browser cannot decode, or null
};

const number = new Intl.NumberFormat("en");

function setState(name) {
  document.body.dataset.state = name;
}

function setStatus(text) {
  view.status.textContent = text;
}

function showError(context, error) {
  view.error.textContent = `${context}: ${error.message}`;
  view.error.hidden = false;
  setState("error");
}

function clearError() {
  view.error.hidden = true;
  view.error.textContent = "";
}

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

/** "browser" or "server": who turns the bytes into pictures. */
function decoderChoice() {
  return document.querySelector('input[name="decoder"]:checked').value;
}

/** Show the server's previews from now on, and say why the browser does not decode. */
function fallBackToServer(reason) {
  document.querySelector('input[name="decoder"][value="server"]').checked = true;
  view.decoderNote.textContent = `Server previews: ${reason}.`;
  view.decoderNote.hidden = false;
}

if (state.cannotDecode) {
  document.querySelector('input[name="decoder"][value="browser"]').disabled = true;
  fallBackToServer(state.cannotDecode);
}

// ---- the layer table, chart and caption

function describeLayer(layer) {
  const info = state.info;
  const arrival = state.arrivals.get(layer);
  const entry = info.layers[layer - 1];
  const parts = [
    `Layer ${layer} of ${info.layers.length}`,
    `${number.format(arrival.receivedBytes)} bytes`,
    `${entry.bpp.toFixed(3)} bpp`,
    `PSNR ${entry.psnr.toFixed(2)} dB`,
    `at ${arrival.seconds.toFixed(2)} s`,
  ];
  if (arrival.decodeMs !== undefined) {
    parts.push(`decoded here in ${Math.round(arrival.decodeMs)} ms (${arrival.backend}, ${arrival.workers} workers)`);
  }
  if (arrival.contentRange) parts.push(arrival.contentRange);
  return parts.join(" · ");
}

function renderRows() {
  const info = state.info;
  view.rows.replaceChildren(
    ...info.layers.map((entry) => {
      const arrival = state.arrivals.get(entry.index);
      const row = document.createElement("tr");
      if (!arrival) row.className = "pending";
      if (entry.index === state.shown) row.setAttribute("aria-current", "true");
      const cells = [
        entry.index,
        number.format(entry.bytes),
        number.format(entry.cumulative_bytes),
        entry.bpp.toFixed(3),
        entry.psnr.toFixed(2),
        arrival ? arrival.seconds.toFixed(2) : "…",
        arrival ? (arrival.decodeMs === undefined ? "server" : String(Math.round(arrival.decodeMs))) : "…",
      ];
      row.replaceChildren(...cells.map((text, column) => {
        const cell = document.createElement(column === 0 ? "th" : "td");
        if (column === 0) cell.scope = "row";
        cell.textContent = text;
        return cell;
      }));
      return row;
    }),
  );
  drawChart(view.chart, info, new Set(state.arrivals.keys()), state.shown);
}

// ---- showing a layer and moving between layers

function show(layer, cause) {
  if (!frames.has(layer)) return;
  state.shown = layer;
  frames.show(layer, cause);
  const text = describeLayer(layer);
  view.caption.textContent = text;
  view.canvas.setAttribute("aria-label", `Reconstruction from ${layer} of ${state.info.layers.length} layers`);
  view.slider.value = String(layer);
  view.slider.setAttribute("aria-valuetext", `Layer ${layer} of ${state.info.layers.length}`);
  view.previous.disabled = layer <= 1;
  view.next.disabled = layer >= frames.received;
  renderRows();
}

function step(delta) {
  const target = Math.min(Math.max(state.shown + delta, 1), frames.received);
  if (target !== state.shown) show(target, "navigation");
}

function enableNavigation() {
  const received = frames.received;
  view.slider.max = String(Math.max(received, 1));
  view.slider.disabled = received < 1;
  view.next.disabled = state.shown >= received;
}

document.addEventListener("keydown", (event) => {
  if (!state.info || event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.target.closest("input, select, textarea")) return; // they use the arrows themselves
  const moves = { ArrowLeft: -1, ArrowRight: 1, Home: -Infinity, End: Infinity };
  if (!(event.key in moves)) return;
  event.preventDefault();
  step(moves[event.key]);
});
view.slider.addEventListener("input", () => show(Number(view.slider.value), "navigation"));
view.previous.addEventListener("click", () => step(-1));
view.next.addEventListener("click", () => step(1));

// ---- comparison with the original

async function updateComparison() {
  const choice = view.compare.value;
  view.pictures.dataset.compare = choice;
  view.originalFigure.hidden = choice === "off" || !state.info;
  clearInterval(state.flicker);
  state.flicker = null;
  view.pictures.dataset.flicker = "layer";
  if (choice === "off" || !state.info) return;
  const { info } = state;
  if (!state.reference) {
    let reference;
    try {
      reference = await decodePicture(await reconstruction(info.id, info.layers.length));
    } catch (error) {
      showError("Comparison", error);
      return;
    }
    if (state.info !== info) return; // another image was chosen meanwhile
    state.reference = reference;
  }
  paint(view.originalCanvas, state.reference, info.width, info.height);
  const what = state.original
    ? "Original upload"
    : `Full reconstruction (${info.layers.length} layers; the original stays in the browser that uploaded it)`;
  view.originalCaption.textContent = what;
  view.originalCanvas.setAttribute("aria-label", what);
  if (choice === "flicker") {
    state.flicker = setInterval(() => {
      view.pictures.dataset.flicker = view.pictures.dataset.flicker === "layer" ? "original" : "layer";
    }, FLICKER_MS);
  }
}

view.compare.addEventListener("change", updateComparison);

// ---- delivering the layers

function stopDelivery() {
  state.delivery?.abort(new DOMException("stopped", "AbortError"));
  state.delivery = null;
  view.play.textContent = "Play";
}

// Data errors of the file itself: shown, with the layers before them kept. Anything else the browser's
// decoder meets (no runtime, no model files, a worker that does not start) makes it fall back to previews.
const FILE_ERRORS = new Set([
  "BadMagicError",
  "UnsupportedVersionError",
  "TruncatedHeaderError",
  "CorruptHeaderError",
  "TruncatedLayerError",
  "ChecksumError",
  "CorruptLayerError",
]);

/**
 * The layer handlers of a delivery whose pictures the browser decodes: they feed the worker pool and do
 * not wait for it, so the next layer travels while this one decodes; `finished()` waits for the last.
 */
/** The pool of decoding workers, started once: their modules load while the page fetches the image's info. */
function browserDecoder() {
  state.decoder ??= new WorkerDecoder(serviceUrl("decoder/models/"));
  return state.decoder;
}

function decodingHere(controller, link, info) {
  browserDecoder().prepare(info.model); // the runtime and the model's files load while the first bytes travel
  const arrivals = new Map(); // layer -> what the delivery knows of its bytes
  const checksums = [];
  const feeds = [];
  let failure = null;
  const feed = (bytes) => {
    if (failure) throw failure; // stops the delivery: nothing more would be decoded
    const fed = state.decoder.feed(bytes);
    fed.catch((error) => {
      failure ??= error;
    });
    feeds.push(fed);
  };
  state.decoder.open(async (decoded) => {
    const bitmap = await createImageBitmap(new ImageData(decoded.rgba, decoded.width, decoded.height));
    if (controller.signal.aborted) {
      bitmap.close();
      return;
    }
    checksums[decoded.layer - 1] = decoded.checksum;
    Object.assign(view.canvas.dataset, { checksums: checksums.join(" "), decodeMs: String(decoded.totalMs) });
    const { backend, workers, totalMs: decodeMs } = decoded;
    shown(info.layers[decoded.layer - 1], bitmap, { ...arrivals.get(decoded.layer), decodeMs, backend, workers });
  });
  return {
    onHeader: ({ bytes }) => feed(bytes),
    onLayer: ({ layer, receivedBytes, contentRange, bytes }) => {
      arrivals.set(layer.index, { receivedBytes, seconds: link.elapsed() / 1000, contentRange });
      feed(bytes);
    },
    finished: () => Promise.all(feeds),
  };
}

/** The layer handlers of a delivery that shows the server's previews. */
function previewsFromServer(controller, link) {
  return {
    onLayer: async ({ layer, receivedBytes, contentRange, picture }) => {
      const bitmap = await decodePicture(picture);
      if (controller.signal.aborted) {
        bitmap.close(); // a newer delivery owns the canvas now
        return;
      }
      shown(layer, bitmap, { receivedBytes, seconds: link.elapsed() / 1000, contentRange });
    },
  };
}

/** Keep a layer's picture and show it if the visitor is at the newest layer. */
function shown(layer, bitmap, arrival) {
  frames.add(layer.index, bitmap);
  const following = state.shown === layer.index - 1;
  state.arrivals.set(layer.index, arrival);
  enableNavigation();
  if (following) show(layer.index, "arrival");
  else renderRows();
  setStatus(`Received ${describeLayer(layer.index)}`);
}

async function deliver() {
  stopDelivery();
  const { info } = state;
  const controller = new AbortController();
  state.delivery = controller;
  const link = new SimulatedLink(Number(view.throttle.value));
  const chosen = mode();
  const here = decoderChoice() === "browser";
  frames.reset(info.width, info.height, info.layers.length);
  view.canvas.dataset.decoder = here ? "browser" : "server";
  delete view.canvas.dataset.checksums;
  delete view.canvas.dataset.decodeMs;
  state.arrivals.clear();
  state.shown = 0;
  enableNavigation();
  renderRows();
  clearError();
  setState("delivering");
  view.play.textContent = "Stop";
  const how = here ? "decoding them in this browser" : "with the server's previews";
  setStatus(chosen === "stream" ? `Streaming layers over the WebSocket, ${how}…` : `Fetching byte ranges of the bitstream, ${how}…`);

  const handlers = here ? decodingHere(controller, link, info) : previewsFromServer(controller, link);
  const options = { link, signal: controller.signal, previews: !here, ...handlers };
  try {
    if (chosen === "stream") await streamLayers(info.id, options);
    else await fetchLayerRanges(info, options);
    await handlers.finished?.();
  } catch (error) {
    if (controller.signal.aborted) return;
    state.delivery = null;
    view.play.textContent = "Play";
    if (here && !FILE_ERRORS.has(error.kind) && error.name === "BrowserDecodeError") {
      fallBackToServer(`this browser could not decode (${error.message})`);
      deliver();
      return;
    }
    setStatus(`Stopped after ${frames.received} of ${info.layers.length} layers`);
    const what = error.name === "BrowserDecodeError" ? "Decoding in the browser failed" : null;
    showError(what ?? (chosen === "stream" ? "Streaming failed" : "Fetching ranges failed"), error);
    return;
  }
  if (controller.signal.aborted) return;
  state.delivery = null;
  view.play.textContent = "Play";
  setState("done");
  const last = info.layers.at(-1);
  setStatus(`All ${info.layers.length} layers: ${number.format(last.cumulative_bytes)} bytes, ` +
    `${last.bpp.toFixed(3)} bpp, in ${(link.elapsed() / 1000).toFixed(2)} s`);
}

view.play.addEventListener("click", () => {
  if (state.delivery) {
    stopDelivery();
    setState("done");
    setStatus(`Stopped after ${frames.received} of ${state.info.layers.length} layers`);
  } else {
    deliver();
  }
});
for (const radio of document.querySelectorAll('input[name="mode"], input[name="decoder"]')) {
  radio.addEventListener("change", () => {
    if (radio.name === "decoder") view.decoderNote.hidden = true;
    if (!state.info) return;
    updateAddress();
    deliver();
  });
}
view.throttle.addEventListener("change", () => state.info && deliver());

// ---- choosing an image

/** The address bar links to this view: the image, and the server's previews when they are chosen. */
function updateAddress() {
  const query = new URLSearchParams({ id: state.info.id });
  if (decoderChoice() === "server") query.set("decoder", "server");
  history.replaceState(null, "", `?${query}`);
}

function showImage(info, original) {
  stopDelivery();
  if (state.reference && state.reference !== original) state.reference.close();
  state.info = info;
  state.original = original;
  state.reference = original;
  view.play.disabled = false;
  view.facts.textContent = `${info.width}×${info.height} px · ${info.layers.length} layers · ` +
    `${number.format(info.bytes)} bytes (header ${info.header_bytes}) · ${info.source_format} · id ${info.id}`;
  updateAddress();
  view.zoomLink.href = `zoom/${encodeURIComponent(info.id)}`;
  view.zoomLink.hidden = false;
  updateComparison();
  deliver();
}

async function openImage(imageId) {
  stopDelivery();
  clearError();
  setState("loading");
  setStatus(`Loading image ${imageId}…`);
  try {
    showImage(await imageInfo(imageId), null);
  } catch (error) {
    showError("Cannot show this image", error);
  }
}

async function uploadFile(file) {
  stopDelivery();
  clearError();
  setState("uploading");
  setStatus(`Uploading ${file.name} (${number.format(file.size)} bytes)…`);
  view.progress.hidden = false;
  view.progress.removeAttribute("value"); // indeterminate until the first progress event
  let info;
  try {
    const job = await uploadImage(file, {
      onProgress: (fraction) => {
        view.progress.value = fraction;
      },
      onUploaded: () => {
        view.progress.value = 1;
        setState("encoding");
        setStatus(`Uploaded ${file.name}; the server encodes it…`);
      },
    });
    setState("encoding");
    view.progress.setAttribute("aria-label", "Encode progress");
    view.progress.value = 0;
    info = await followJob(job, (update) => {
      const { done, total } = update.progress;
      view.progress.value = total ? done / total : 0;
      const percent = total ? Math.round((100 * done) / total) : 0;
      const stage = update.state === "verifying" ? "verifies every layer" : `encodes: ${percent} % of tiles × layers`;
      setStatus(`Uploaded ${file.name}; the server ${update.state === "queued" ? "queued it" : stage}…`);
    });
  } catch (error) {
    showError("Upload failed", error);
    return;
  } finally {
    view.progress.hidden = true;
    view.progress.setAttribute("aria-label", "Upload progress");
  }
  const original = await createImageBitmap(file).catch(() => null);
  showImage(info, original);
  refreshStored();
}

view.file.addEventListener("change", () => {
  if (view.file.files.length) uploadFile(view.file.files[0]);
  view.file.value = ""; // choosing the same file again uploads again
});
for (const name of ["dragenter", "dragover"]) {
  view.dropzone.addEventListener(name, (event) => {
    event.preventDefault();
    view.dropzone.classList.add("dragging");
  });
}
view.dropzone.addEventListener("dragleave", () => view.dropzone.classList.remove("dragging"));
view.dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  view.dropzone.classList.remove("dragging");
  const file = event.dataTransfer?.files[0];
  if (file) uploadFile(file);
});
// a file dropped beside the drop zone must not replace the page
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

// ---- stored images

function storedOption(image) {
  const option = document.createElement("option");
  option.value = image.id;
  option.textContent = `${image.created.replace("T", " ").replace("Z", "")} · ${image.width}×${image.height} · ` +
    `${image.layer_count} layers · ${image.id.slice(0, 8)}`;
  return option;
}

async function refreshStored(append = false) {
  try {
    const page = await storedImages(append && state.nextPage ? state.nextPage : undefined);
    const options = page.images.map(storedOption);
    if (append) view.stored.append(...options);
    else view.stored.replaceChildren(...options);
    if (!view.stored.options.length) view.stored.replaceChildren(new Option("(no images stored yet)", ""));
    state.nextPage = page.next;
    view.moreStored.hidden = !page.next;
  } catch (error) {
    view.stored.replaceChildren(new Option(`(${error.code === "listing_disabled" ? "listing is turned off" : "not available"})`, ""));
    view.moreStored.hidden = true;
    if (append || error.code !== "listing_disabled") showError("Stored images", error);
  }
}

view.showStored.addEventListener("click", () => view.stored.value && openImage(view.stored.value));
view.refreshStored.addEventListener("click", () => refreshStored());
view.moreStored.addEventListener("click", () => refreshStored(true));

// ---- start

view.key.value = accessKey();
view.key.addEventListener("input", () => setAccessKey(view.key.value.trim()));
$("key-form").addEventListener("submit", (event) => event.preventDefault()); // Enter keeps the page
refreshStored();
const query = new URLSearchParams(location.search);
if (query.get("decoder") === "server") document.querySelector('input[name="decoder"][value="server"]').checked = true;
const requested = query.get("id");
if (requested && !state.cannotDecode && decoderChoice() === "browser") {
  // the server names the model whose files its answer preloads: the workers get them before the picture's
  // info has arrived (a picture of another model has its own files fetched then)
  const model = document.querySelector('meta[name="decoder-model"]')?.content;
  if (model) browserDecoder().prepare(model);
  else browserDecoder();
}
if (requested) openImage(requested);
else setStatus("Drop or choose an image, or pick a stored one.");
