// The decoder's Web Worker: the page hands it the bytes of one file as they arrive and gets back every
// layer's picture as soon as it is decoded, so that decoding never blocks the page (client.js is the
// page's side). The model files (the entropy path and the synthesis graph) are fetched once per model id
// from the server that stores the images, and ONNX Runtime Web from static/vendor/onnxruntime-web.
//
// Several workers may share one picture: each decodes the tiles whose index % count is its share.
//
// Messages in:  {type: "runtime", wasm}                  first: ONNX Runtime's WebAssembly (an ArrayBuffer; null
//                                                          with WebGPU or when the page's fetch failed: the
//                                                          runtime fetches its own); the runtime starts at once
//               {type: "prepare", models, modelId}       the page is fetching that model's files for all its
//                                                          workers: start with them, do not fetch them again
//               {type: "files", modelId, files}           them: {json, graph}, the bytes of entropy-path.json and
//                                                          synthesis.onnx (null: the page's fetch failed, fetch
//                                                          them here)
//               {type: "open", id, models, share, count}  a new file; `models` is the URL of /decoder/models/
//               {type: "bytes", id, bytes}                 the next bytes of that file (an ArrayBuffer)
// Messages out: {type: "layer", id, layer, width, height, tiles, entropyMs, synthesisMs, totalMs, backend}
//                                                          one decoded layer of this share (tiles' rgba transferred)
//               {type: "fed", id, layersDecoded}           every complete layer of the bytes so far is out
//               {type: "error", id, name, message, layer}  nothing more is decoded for this file

import { parseHeader, requiredHeaderBytes, FIXED_HEADER_BYTES } from "./container.js";
import { EntropyPath } from "./entropy.js";
import { PictureDecoder } from "./picture.js";
import { Synthesis } from "./synthesis.js";

const RUNTIME = new URL("../vendor/onnxruntime-web/", import.meta.url);
const models = new Map(); // model id -> Promise<{entropyPath, synthesis, backend}>
let runtime = null; // Promise<{ort, backend, providers}>
let file = null; // {id, models, decoder, pending: Uint8Array[], failed}
let work = Promise.resolve(); // messages are handled one after another

// ONNX Runtime initialises its WebAssembly (instantiates and starts its 15 MB) with the first session it
// makes. This one-node graph (Identity of a float[1], ONNX opset 17) makes that happen as soon as the
// runtime's bytes arrive, while the model's files still travel, instead of after them.
const WARM_UP_GRAPH = new Uint8Array([
  8, 8, 58, 58, 10, 16, 10, 1, 120, 18, 1, 121, 34, 8, 73, 100, 101, 110, 116, 105, 116, 121, 18, 4, 119, 97, 114, 109,
  90, 15, 10, 1, 120, 18, 10, 10, 8, 8, 1, 18, 4, 10, 2, 8, 1, 98, 15, 10, 1, 121, 18, 10, 10, 8, 8, 1, 18, 4, 10, 2, 8,
  1, 66, 4, 10, 0, 16, 17,
]);
let receiveRuntime;
const runtimeBytes = new Promise((resolve) => (receiveRuntime = resolve)); // the page's "runtime" message

/**
 * ONNX Runtime Web, initialised: its WebGPU build when the browser has an adapter, else the WASM build, from
 * the WebAssembly's bytes the page sent (or, when it sent none, fetched by the runtime itself).
 */
function loadRuntime() {
  runtime ??= (async () => {
    const adapter = self.navigator.gpu ? await self.navigator.gpu.requestAdapter().catch(() => null) : null;
    const backend = adapter ? "webgpu" : "wasm";
    const [ort, wasm] = await Promise.all([
      import(new URL(adapter ? "ort.webgpu.min.mjs" : "ort.wasm.min.mjs", RUNTIME).href),
      runtimeBytes,
    ]);
    ort.env.wasm.wasmPaths = RUNTIME.href;
    if (wasm && !adapter) ort.env.wasm.wasmBinary = wasm;
    // threads need a cross-origin-isolated page (SharedArrayBuffer); one thread otherwise
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, self.navigator.hardwareConcurrency || 1) : 1;
    const providers = adapter ? ["webgpu", "wasm"] : ["wasm"];
    const warmUp = await ort.InferenceSession.create(WARM_UP_GRAPH, { executionProviders: providers });
    await warmUp.release();
    return { ort, backend, providers };
  })();
  return runtime;
}

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
      const [{ ort, backend, providers }, json, graph] = await Promise.all([
        loadRuntime(),
        files.json ? JSON.parse(new TextDecoder().decode(files.json)) : fetched(new URL("entropy-path.json", folder), "json"),
        files.graph ?? fetched(new URL("synthesis.onnx", folder)),
      ]);
      const synthesis = await Synthesis.load(ort, new Uint8Array(graph), json, providers);
      return { entropyPath: new EntropyPath(json), synthesis, backend };
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
    file.backend = model.backend;
    const { share, count } = file;
    file.decoder = new PictureDecoder(model.entropyPath, model.synthesis, (index) => index % count === share);
    file.pending = [];
    bytes = joined;
  }
  file.decoder.feed(bytes);
  while (file.decoder.layersDecoded < file.decoder.layersAvailable) {
    const layer = await file.decoder.decodeNextLayer();
    self.postMessage({ type: "layer", id, backend: file.backend, ...layer }, layer.tiles.map((tile) => tile.rgba.buffer));
  }
  self.postMessage({ type: "fed", id, layersDecoded: file.decoder.layersDecoded });
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
  if (data.type === "runtime") {
    receiveRuntime(data.wasm);
    loadRuntime().catch(() => {}); // a failure is met again, and reported, when a file needs the model
    return;
  }
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
  work = work.then(async () => {
    if (data.type === "open") {
      const { id, models: base, share, count } = data;
      file = { id, models: base, share, count, decoder: null, pending: [], failed: false, backend: null };
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
