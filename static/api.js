// The service's HTTP API as the viewer uses it. Every failure becomes an ApiError whose
// `message` a visitor can read; the server's own {"error": {"code", "message"}} is kept in it.

import { JOB_FINAL_STATES, jobPath } from "./protocol.js";

const KEY_STORAGE = "codec-viewer-key";

const TITLES = {
  400: "The file could not be read as an image",
  401: "This needs the access key",
  403: "Not allowed on this server",
  404: "Not found",
  409: "Written with other weights than the server's",
  413: "Too large",
  415: "Not an image type the server accepts",
  416: "Range not satisfiable",
  422: "Invalid request",
  429: "The server is busy",
  500: "Server error",
  503: "The server is not available",
  507: "The server has no space left",
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export function accessKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setAccessKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function authorization() {
  const key = accessKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** A URL of the service, from a path of a JSON answer or one relative to the page (the server's root). */
export function serviceUrl(path) {
  return new URL(path, document.baseURI);
}

/** The sentence shown for a failed answer: what went wrong, the server's words, the status and code. */
function readableError(status, body, retryAfter) {
  const code = body?.error?.code || "http_error";
  const detail = body?.error?.message || `the server answered ${status}`;
  let title = TITLES[status] || (status >= 500 ? "Server error" : "Request refused");
  if (code === "image_not_found") title = "No image with this id";
  if (status === 429 && retryAfter) title += `; try again in ${retryAfter} s`;
  return new ApiError(status, code, `${title}: ${detail} (HTTP ${status} ${code})`);
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null; // not JSON: the status alone tells the story
  }
  return readableError(response.status, body, response.headers.get("Retry-After"));
}

async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(serviceUrl(path), { ...options, headers: { ...authorization(), ...options.headers } });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", "The server cannot be reached (network error)");
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function imageInfo(imageId, signal) {
  return (await request(`image/${encodeURIComponent(imageId)}/info`, { signal })).json();
}

/** One page of stored images: {images, count, next}. `next` is the path of the following page or null. */
export async function storedImages(pagePath = "images?limit=50") {
  return (await request(pagePath)).json();
}

/** The reconstruction from the first `layers` layers, as a PNG Blob. */
export async function reconstruction(imageId, layers, signal) {
  const path = `image/${encodeURIComponent(imageId)}?layers=${layers}&format=png`;
  return (await request(path, { signal })).blob();
}

/**
 * The bytes start .. end-1 of a bitstream, fetched with a Range header; the answer must be 206 with exactly
 * them. `start` 0 asks for a prefix: a valid container of the layers it holds.
 */
export async function bitstreamRange(bitstreamPath, start, end, signal) {
  const response = await request(bitstreamPath, {
    headers: { Range: `bytes=${start}-${end - 1}` },
    cache: "no-store", // every range travels, so the network panel shows each one
    signal,
  });
  const bytes = await response.arrayBuffer();
  if (response.status !== 206 || bytes.byteLength !== end - start) {
    throw new ApiError(response.status, "bad_range", `Asked for bytes ${start}-${end - 1}, received ${bytes.byteLength} bytes (HTTP ${response.status})`);
  }
  return { bytes, contentRange: response.headers.get("Content-Range") };
}

/**
 * POST /encode with upload progress (fetch cannot report it, XMLHttpRequest can).
 * `onProgress(fraction)` while the file travels, `onUploaded()` once the server has it and encodes.
 * Resolves with the encode job the server accepted (202); `followJob` watches it to the end.
 */
export function uploadImage(file, { onProgress, onUploaded }) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", serviceUrl("encode"));
    for (const [name, value] of Object.entries(authorization())) xhr.setRequestHeader(name, value);
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.upload.addEventListener("load", () => onUploaded());
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status === 202 && body) resolve(body);
      else reject(readableError(xhr.status, body, xhr.getResponseHeader("Retry-After")));
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, "network_error",
        "The upload was cut off: the server closed the connection (the file may exceed its upload limit) or cannot be reached")));
    const form = new FormData();
    form.append("file", file, file.name || "image");
    xhr.send(form);
  });
}

/** Server-sent events of a response body: yields {event, data} for every complete event. */
async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

/**
 * Follow an encode job to its end through its server-sent events (fetch, so the key travels in a
 * header; EventSource cannot send one). `onChange(job)` at every change. Resolves with the info
 * document of the stored image; a failed job rejects with the error the upload would have had.
 */
export async function followJob(job, onChange) {
  let last = job;
  const response = await request(jobPath("events", job.id), { cache: "no-store" });
  for await (const { event, data } of serverSentEvents(response)) {
    if (event !== "job") continue;
    last = JSON.parse(data);
    onChange(last);
  }
  if (!JOB_FINAL_STATES.includes(last.state)) {
    last = await (await request(jobPath("job", job.id), { cache: "no-store" })).json(); // the stream broke off
  }
  if (last.state === "failed") {
    throw readableError(last.error.status, { error: last.error }, null);
  }
  if (!last.image) throw new ApiError(404, "image_not_found", "The encoded image was deleted before it could be shown");
  return last.image;
}
