// The page's side of the decoder: a pool of Web Workers (worker.js) that share each picture's tiles. Feed
// it a file's bytes as they arrive; every layer comes back as one picture as soon as all its tiles are
// decoded. Each file opened replaces the one before.

import { composeLayer } from "./picture.js";
import { tileWindows } from "./windows.js";

// A WebAssembly module that uses a SIMD instruction: the decoder's kernel (kernel.js) is SIMD.
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11,
]);
const MAX_WORKERS = 4;
const MODEL_FILES = ["entropy-path.json", "synthesis-weights.bin"];

/** Why this browser cannot decode the bitstream itself, or null when it can. */
export function whyBrowserCannotDecode() {
  if (typeof Worker !== "function") return "this browser has no Web Workers";
  if (typeof WebAssembly !== "object") return "this browser has no WebAssembly";
  try {
    if (!WebAssembly.validate(SIMD_PROBE)) return "this browser's WebAssembly has no SIMD";
  } catch {
    return "this browser's WebAssembly has no SIMD";
  }
  return null;
}

/** What the decoder could not do (`kind` is its error class: ChecksumError, TruncatedLayerError, ...). */
export class BrowserDecodeError extends Error {
  constructor({ name, message, layer }) {
    super(layer && !message.includes(`layer ${layer}`) ? `layer ${layer}: ${message}` : message);
    this.name = "BrowserDecodeError";
    this.kind = name;
    this.layer = layer;
  }
}

export class WorkerDecoder {
  /**
   * `models`: the URL of the server's /decoder/models/ (the model files of each model id); `workers`:
   * how many share a picture (default: the cores, at most 4).
   */
  constructor(models, workers = Math.min(MAX_WORKERS, navigator.hardwareConcurrency || 1)) {
    this.models = String(models);
    this.workers = Array.from({ length: Math.max(1, workers) }, (_, share) => {
      const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
      worker.onmessage = ({ data }) => this.receive(share, data);
      worker.onerror = (event) => {
        event.preventDefault();
        const message = event.message || "the decoder did not start";
        this.fail({ id: this.file?.id, name: "WorkerError", message, layer: 0 });
      };
      return worker;
    });
    this.nextId = 0;
    this.file = null;
  }

  /**
   * Start loading the files of model `modelId` (hex) ahead of the file's bytes. The page fetches them once
   * (8 MB) and hands every worker a copy: fetched by each worker, they would cross the network once per
   * worker. If a fetch fails, the workers fetch for themselves and report what fails.
   */
  prepare(modelId) {
    if (this.prepared?.has(modelId)) return;
    this.prepared ??= new Set();
    this.prepared.add(modelId);
    const { models } = this;
    for (const worker of this.workers) worker.postMessage({ type: "prepare", models, modelId });
    const folder = new URL(`${modelId}/`, models);
    Promise.all(MODEL_FILES.map((name) => fetchedBytes(new URL(name, folder)))).then(
      ([json, weights]) => {
        handOut(this.workers, [json, weights], ([json, weights]) => ({ type: "files", modelId, files: { json, weights } }));
      },
      () => {
        this.prepared.delete(modelId);
        this.workers.forEach((worker) => worker.postMessage({ type: "files", modelId, files: null }));
      },
    );
  }

  /**
   * Start a new file; `onLayer(layer)` (may be async) gets {layer, width, height, rgba, checksum, totalMs,
   * entropyMs, synthesisMs, backend, workers} for every layer in order.
   */
  open(onLayer) {
    this.file?.pending.splice(0).forEach(({ reject }) => reject(new DOMException("replaced", "AbortError")));
    const count = this.workers.length;
    this.file = {
      id: ++this.nextId,
      onLayer,
      pending: [], // the feeds not yet through every worker: {resolve, reject}, oldest first
      fed: new Array(count).fill(0), // per worker: feeds it is through (each handles them in order)
      resolved: 0, // feeds resolved
      parts: new Map(), // layer -> the shares' messages so far
      reconstructed: new Map(), // layer -> the shares' reconstructed tiles so far (with a post-filter)
      failure: null,
      shown: Promise.resolve(),
    };
    this.workers.forEach((worker, share) => {
      worker.postMessage({ type: "open", id: this.file.id, models: this.models, share, count });
    });
  }

  /** Hand over the next bytes (an ArrayBuffer); resolves once every layer they complete has been shown. */
  feed(bytes) {
    const file = this.file;
    if (!file) throw new Error("open a file first");
    if (file.failure) return Promise.reject(file.failure);
    return new Promise((resolve, reject) => {
      file.pending.push({ resolve, reject });
      for (const worker of this.workers) {
        const copy = bytes.slice(0);
        worker.postMessage({ type: "bytes", id: file.id, bytes: copy }, [copy]);
      }
    });
  }

  receive(share, data) {
    const file = this.file;
    if (!file || data.id !== file.id) return; // a file replaced meanwhile
    if (data.type === "reconstructed") {
      const shares = file.reconstructed.get(data.layer) ?? [];
      shares.push({ share, tiles: data.reconstructed });
      file.reconstructed.set(data.layer, shares);
      if (shares.length === this.workers.length) {
        file.reconstructed.delete(data.layer);
        this.filter(file, data.layer, shares);
      }
    } else if (data.type === "layer") {
      const parts = file.parts.get(data.layer) ?? [];
      parts.push(data);
      file.parts.set(data.layer, parts);
      if (parts.length === this.workers.length) {
        file.parts.delete(data.layer);
        const layer = whole(parts);
        file.shown = file.shown.then(() => file.onLayer(layer));
      }
    } else if (data.type === "fed") {
      file.fed[share] += 1;
      while (file.resolved < Math.min(...file.fed)) {
        file.resolved += 1;
        file.shown.then(() => file.pending.shift()?.resolve(data.layersDecoded));
      }
    } else if (data.type === "error") {
      file.shown.then(() => this.fail(data));
    }
  }

  /** Hand each worker the filter's windows of its tiles, assembled from every share's reconstructions. */
  filter(file, layer, shares) {
    const windows = tileWindows(shares.flatMap(({ tiles }) => tiles));
    for (const { share, tiles } of shares) {
      const mine = tiles.map((tile) => windows.get(tile.index));
      this.workers[share].postMessage({ type: "filter", id: file.id, layer, windows: mine }, mine.map((w) => w.data.buffer));
    }
  }

  fail(data) {
    const file = this.file;
    if (!file || data.id !== file.id || file.failure) return;
    file.failure = new BrowserDecodeError(data);
    file.pending.splice(0).forEach(({ reject }) => reject(file.failure));
  }

  terminate() {
    for (const worker of this.workers) worker.terminate();
  }
}

/**
 * Post `build(buffers)` to every worker: copies of `buffers` (ArrayBuffers) to each but the last, which
 * gets them transferred (one copy fewer of what may be megabytes).
 */
function handOut(workers, buffers, build) {
  workers.forEach((worker, i) => {
    const mine = i === workers.length - 1 ? buffers : buffers.map((buffer) => buffer.slice(0));
    worker.postMessage(build(mine), mine);
  });
}

async function fetchedBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url.pathname}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

/** One layer from every share's part: the composed picture; its time is the slowest share's. */
function whole(parts) {
  const started = performance.now();
  const { layer, width, height, backend } = parts[0];
  const { rgba, checksum } = composeLayer(width, height, parts.flatMap((part) => part.tiles));
  const slowest = parts.reduce((a, b) => (b.totalMs > a.totalMs ? b : a));
  return {
    layer,
    width,
    height,
    rgba,
    checksum,
    backend,
    workers: parts.length,
    entropyMs: slowest.entropyMs,
    synthesisMs: slowest.synthesisMs,
    totalMs: slowest.totalMs + (performance.now() - started),
  };
}
