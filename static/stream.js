// Delivery over the WebSocket, protocol version 1 (docs/server.md): the viewer asks for one
// layer at a time and receives its bytes, then, with server previews, the server's picture of
// layers 1..i. When the browser decodes, the bytes are all it asks for.

import { accessKey, serviceUrl } from "./api.js";
import { CLOSE, KEY_PROTOCOL, SUBPROTOCOL, closeMessage, imagePath } from "./protocol.js";


export class StreamClosed extends Error {
  constructor(code, reason) {
    const title = closeMessage(code);
    super(`${title}${reason ? `: ${reason}` : ""} (WebSocket close ${code})`);
    this.name = "StreamClosed";
    this.code = code;
  }
}

/** The socket's messages in order, awaited one by one; a close rejects what is still awaited. */
class Inbox {
  constructor(socket, signal) {
    this.messages = [];
    this.waiters = [];
    this.failure = null;
    socket.addEventListener("message", (event) => this.push(event.data));
    socket.addEventListener("close", (event) => this.fail(new StreamClosed(event.code, event.reason)));
    signal.addEventListener("abort", () => this.fail(signal.reason), { once: true });
  }

  push(message) {
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve(message);
    else this.messages.push(message);
  }

  fail(error) {
    this.failure ??= error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(this.failure);
  }

  next() {
    if (this.messages.length) return Promise.resolve(this.messages.shift());
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  async text(type) {
    const message = await this.next();
    const parsed = typeof message === "string" ? JSON.parse(message) : null;
    if (parsed?.type !== type) throw new Error(`Protocol error: expected a "${type}" message`);
    return parsed;
  }

  async binary(what) {
    const message = await this.next();
    if (!(message instanceof ArrayBuffer)) throw new Error(`Protocol error: expected ${what} as a binary message`);
    return message;
  }
}

function streamUrl(imageId, previews) {
  const url = serviceUrl(imagePath("websocket", imageId));
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (previews) url.searchParams.set("previews", "png");
  return url;
}

/** base64url of the key's UTF-8 bytes, unpadded: every character is allowed in a subprotocol token. */
function base64url(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * Browsers cannot set Authorization on a WebSocket, and a key in the URL would reach access logs: the key
 * travels as the subprotocol `key.<base64url>`, beside `codec.v1`, which the server selects (docs/server.md).
 */
function streamProtocols() {
  const key = accessKey();
  return key ? [SUBPROTOCOL, `${KEY_PROTOCOL}${base64url(key)}`] : [SUBPROTOCOL];
}

/**
 * Stream every layer of `imageId`: `onHeader({bytes})` with the container header, then for each layer
 * `onLayer({layer, layerBytes, receivedBytes, bytes, picture})`, where `layer` is the info document's
 * entry, `bytes` the layer's bytes and `picture` a Blob of layers 1..i (with `previews` only; else null).
 * Bytes are charged to `link` (the simulated slow link) before they are handed over and the next layer
 * requested.
 */
export async function streamLayers(imageId, { link, signal, previews = true, onHeader, onLayer }) {
  const socket = new WebSocket(streamUrl(imageId, previews), streamProtocols());
  socket.binaryType = "arraybuffer";
  const inbox = new Inbox(socket, signal);
  try {
    const info = await inbox.text("info");
    const header = await inbox.binary("the container header");
    let receivedBytes = header.byteLength;
    await link.deliver(header.byteLength, signal);
    await onHeader?.({ bytes: header });
    for (const layer of info.layers) {
      socket.send(JSON.stringify({ type: "request", layer: layer.index }));
      const layerBytes = await inbox.binary(`layer ${layer.index}`);
      if (layerBytes.byteLength !== layer.bytes) {
        throw new Error(`Layer ${layer.index} has ${layerBytes.byteLength} bytes, the layer table says ${layer.bytes}`);
      }
      receivedBytes += layerBytes.byteLength;
      let picture = null;
      if (previews) {
        const preview = await inbox.text("preview");
        picture = new Blob([await inbox.binary(`the picture of layer ${layer.index}`)], { type: preview.mime });
      }
      await link.deliver(layerBytes.byteLength, signal);
      await onLayer({ layer, layerBytes: layerBytes.byteLength, receivedBytes, bytes: layerBytes, picture });
    }
    const done = await inbox.text("done");
    if (done.bytes !== receivedBytes) {
      throw new Error(`Received ${receivedBytes} bytes of a ${done.bytes}-byte bitstream`);
    }
  } finally {
    if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) socket.close(CLOSE.NORMAL);
  }
}
