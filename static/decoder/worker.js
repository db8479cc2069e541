// The decoder's Web Worker: the page hands it the bytes of one file as they arrive and gets back every
// layer's picture as soon as it is decoded, so that decoding never blocks the page (client.js is the
// page's side). The model files (the entropy path and the synthesis weights) come once per model id from
// the server that stores the images, fetched by the page for all its workers.
//
// Several workers may share one picture: each decodes the tiles whose index % count is its share.
//
// Messages in:  {type: "prepare", models, modelId}       the page is fetching that model's files for all its
//                                                          workers: start with them, do not fetch them again
//               {type: "files", modelId, files}           them: {json, weights}, the bytes of entropy-path.json
//                                                          and synthesis-weights.bin (null: the page's fetch
//                                                          failed, fetch them here)
//               {type: "open", id, models, share, count}  a new file; `models` is the URL of /decoder/models/
//               {type: "bytes", id, bytes}                 the next bytes of that file (an ArrayBuffer)
//               {type: "filter", id, layer, windows}       with a post-filter: the windows of this share's tiles
//                                                          (windows.js), assembled by the page from every share's
//                                                          "reconstructed" tiles of that layer
// Messages out: {type: "layer", id, layer, width, height, tiles, entropyMs, synthesisMs, totalMs, backend}
//                                                          one decoded layer of this share (tiles' rgba transferred)
//               {type: "reconstructed", id, layer, width, height, reconstructed, entropyMs, synthesisMs, totalMs}
//                                                          with a post-filter, first: the tiles' padded
//                                                          reconstructions (transferred); "layer" follows "filter"
//               {type: "fed", id, layersDecoded}           every complete layer of the bytes so far is out
//               {type: "error", id, name, message, layer}  nothing more is decoded for this file

import { parseHeader, requiredHeaderBytes, FIXED_HEADER_BYTES } from "./container.js";
import { EntropyPath } from "./entropy.js";
import { productKernel } from "./kernel.js";
import { PictureDecoder } from "./picture.js";
import { Synthesis } from "./synthesis.js";

// what computes the pictures: kernel.js's WebAssembly SIMD (the exact path in float64, the synthesis in float32)
const BACKEND = "wasm";
const models = new Map(); // model id -> Promise<{entropyPath, synthesis}>
// both kernels compiled and warmed (kernel.js) while the model's files travel
productKernel("f64");
productKernel("f32");
let file = null; // {id, models, decoder, pending: Uint8Array[], failed, replaced, filtering: Map layer -> {layer, resolve}}
let work = Promise.resolve(); // messages are handled one after another

async function fetched(url, as) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url.pathname}: HTTP ${response.status}`);
  return as === "json" ? response.json() : response.arrayBuffer();
}

const promisedFiles = new Map(); // model id -> resolves with the files the page is fetching (or null)

/** The model's decoder parts, once per model id; from the page's files when it fetches them. */
function loadModel(base, modelId) {
  if (!models.has(modelId)) {
    const folder = new URL(`${modelId}/`, base);
    const loading = (async () => {
      const files = (await promisedFiles.get(modelId)?.promise) ?? {};
      const [json, weights] = await Promise.all([
        files.json ? JSON.parse(new TextDecoder().decode(files.json)) : fetched(new URL("entropy-path.json", folder), "json"),
        files.weights ?? fetched(new URL("synthesis-weights.bin", folder)),
      ]);
      return { entropyPath: new EntropyPath(json), synthesis: new Synthesis(json, weights) };
    })();
    loading.catch(() => models.delete(modelId)); // a failed load may be tried again
    models.set(modelId, loading);
  }
  return models.get(modelId);
}

async function feed(id, bytes) {
  if (!file || file.id !== id || file.failed) return;
  if (!file.decoder) {
    file.pending.push(bytes);
    const joined = concatenated(file.pending);
    if (joined.length < FIXED_HEADER_BYTES || joined.length < requiredHeaderBytes(joined)) return;
    const model = await loadModel(file.models, parseHeader(joined).modelId);
    const { share, count } = file;
    file.decoder = new PictureDecoder(model.entropyPath, model.synthesis, (index) => index % count === share);
    file.pending = [];
    bytes = joined;
  }
  file.decoder.feed(bytes);
  const filtered = [];
  while (!file.failed && !file.replaced && file.decoder.layersDecoded < file.decoder.layersAvailable) {
    const layer = await file.decoder.decodeNextLayer();
    if (layer.reconstructed) {
      filtered.push(new Promise((resolve) => file.filtering.set(layer.layer, { layer, resolve })));
      const buffers = layer.reconstructed.map((tile) => tile.reconstruction.buffer);
      self.postMessage({ type: "reconstructed", id, ...layer }, buffers);
      await new Promise((resolve) => setTimeout(resolve, 0)); // let the page's "filter" in between layers
    } else {
      self.postMessage({ type: "layer", id, backend: BACKEND, ...layer }, layer.tiles.map((tile) => tile.rgba.buffer));
    }
  }
  await Promise.all(filtered);
  self.postMessage({ type: "fed", id, layersDecoded: file.decoder.layersDecoded });
}

/** Filter this share's tiles of a layer in the windows the page assembled, and hand the layer out. */
function filter({ id, layer: number, windows }) {
  const waiting = file?.id === id ? file.filtering.get(number) : undefined;
  if (!waiting) return;
  file.filtering.delete(number);
  const started = performance.now();
  const { layer } = waiting;
  try {
    const tiles = file.decoder.showLayer(number, windows, layer.reconstructed);
    const filterMs = performance.now() - started;
    const { width, height, entropyMs } = layer;
    const shown = { layer: number, width, height, tiles, entropyMs, synthesisMs: layer.synthesisMs + filterMs, totalMs: layer.totalMs + filterMs };
    self.postMessage({ type: "layer", id, backend: BACKEND, ...shown }, tiles.map((tile) => tile.rgba.buffer));
  } catch (error) {
    file.failed = true;
    self.postMessage({ type: "error", id, name: error.name, message: error.message, layer: number });
  }
  waiting.resolve();
}

function concatenated(parts) {
  const joined = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    joined.set(part, at);
    at += part.length;
  }
  return joined;
}

self.onmessage = ({ data }) => {
  if (data.type === "prepare") {
    // outside the message queue; a failure is met again, and reported, when the file's bytes need the model
    let resolve;
    const promise = new Promise((done) => (resolve = done));
    promisedFiles.set(data.modelId, { promise, resolve });
    loadModel(data.models, data.modelId).catch(() => {});
    return;
  }
  if (data.type === "files") {
    promisedFiles.get(data.modelId)?.resolve(data.files);
    promisedFiles.delete(data.modelId);
    return;
  }
  if (data.type === "filter") {
    filter(data); // outside the queue: the feed that decoded the layer waits for it
    return;
  }
  if (data.type === "open" && file) {
    // a feed of the file replaced may wait for windows that will not come: it stops
    file.replaced = true;
    for (const { resolve } of file.filtering.values()) resolve();
    file.filtering.clear();
  }
  work = work.then(async () => {
    if (data.type === "open") {
      const { id, models: base, share, count } = data;
      file = { id, models: base, share, count, decoder: null, pending: [], failed: false, filtering: new Map() };
      return;
    }
    try {
      await feed(data.id, new Uint8Array(data.bytes));
    } catch (error) {
      if (file?.id === data.id) file.failed = true;
      const layer = file?.decoder ? file.decoder.layersDecoded + 1 : 0;
      self.postMessage({ type: "error", id: data.id, name: error.name, message: error.message, layer });
    }
  });
};
