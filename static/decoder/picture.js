// A whole picture decoded in the browser, layer by layer, from the bytes received so far: what
// codec.api.Decoder does in Python, built from container.js (the file), entropy.js (the exact path and
// rANS: the symbols) and synthesis.js (the pixels). A layer is painted only once all of its tiles
// decoded, so a corrupt or truncated layer never reaches the canvas and the layers before it stay.

import { CodecError, FIXED_HEADER_BYTES, crc32, parseHeader, requiredHeaderBytes, verifyLayer } from "./container.js";
import { ModelMismatchError } from "./entropy.js";
import { tilePixels } from "./synthesis.js";

/** Bytes that grow as they arrive: a Uint8Array view of everything received so far. */
class ReceivedBytes {
  constructor() {
    this.buffer = new Uint8Array(1 << 16);
    this.length = 0;
  }

  append(more) {
    if (this.length + more.length > this.buffer.length) {
      const grown = new Uint8Array(Math.max(2 * this.buffer.length, this.length + more.length));
      grown.set(this.buffer.subarray(0, this.length));
      this.buffer = grown;
    }
    this.buffer.set(more, this.length);
    this.length += more.length;
  }

  get view() {
    return this.buffer.subarray(0, this.length);
  }
}

function littleEndian(values) {
  const bytes = new Uint8Array(4 * values.length);
  const view = new DataView(bytes.buffer);
  values.forEach((value, i) => view.setUint32(4 * i, value >>> 0, true));
  return bytes;
}

export class PictureDecoder {
  /**
   * `entropyPath` (entropy.js) and `synthesis` (synthesis.js) of the model that wrote the file; only the
   * tiles `ownsTile(index)` accepts are decoded (tiles are independent: workers share a picture so).
   */
  constructor(entropyPath, synthesis, ownsTile = () => true) {
    this.entropyPath = entropyPath;
    this.synthesis = synthesis;
    this.ownsTile = ownsTile;
    this.received = new ReceivedBytes();
    this.header = null;
    this.tiles = null; // per tile: {place, entropy, synthesis} states, made on the first layer
    this.layersDecoded = 0;
    this.failure = null;
  }

  /** Append bytes that follow those already received; returns `layersAvailable`. */
  feed(bytes) {
    this.received.append(bytes);
    const data = this.received.view;
    if (!this.header && data.length >= FIXED_HEADER_BYTES && data.length >= requiredHeaderBytes(data)) {
      const header = parseHeader(data);
      if (header.modelId !== this.entropyPath.modelId) {
        throw new ModelMismatchError(`file needs model ${header.modelId}, loaded model is ${this.entropyPath.modelId}`);
      }
      this.header = header;
    }
    return this.layersAvailable;
  }

  get layersAvailable() {
    return this.header ? this.header.layersWithin(this.received.length) : 0;
  }

  /**
   * Decode the next layer of the tiles this decoder owns: {layer, width, height (the picture's), tiles:
   * [{index, x, y, width, height, rgba (the tile's pixels), checksum (its symbols' CRC-32)}], entropyMs,
   * synthesisMs, totalMs}; `composeLayer` puts the tiles of every share together. With a post-filter
   * there are no `tiles` yet but `reconstructed`: [{index, x, y, width, height, paddedWidth,
   * paddedHeight, reconstruction, checksum}], each tile's padded reconstruction (a copy), for the page to
   * assemble the filter's windows from every share's (windows.js) and `showLayer` to filter. Throws a CodecError
   * (ChecksumError, CorruptLayerError, TruncatedLayerError) naming the layer; the CRCs are checked before
   * any state moves, and after an error the decoder decodes nothing more.
   */
  async decodeNextLayer() {
    const started = performance.now();
    const header = this.header;
    const layer = this.layersDecoded + 1;
    if (this.failure) throw this.failure;
    if (!header || layer > this.layersAvailable) throw new RangeError(`layer ${layer} has not arrived`);
    try {
      return await this.decodeLayer(header, layer, started);
    } catch (error) {
      this.failure = error instanceof CodecError ? error : new CodecError(`layer ${layer} does not decode: ${error.message}`);
      throw this.failure;
    }
  }

  async decodeLayer(header, layer, started) {
    const entry = header.layers[layer - 1];
    const data = this.received.view;
    verifyLayer(header, layer, data.subarray(entry.offset, entry.end)); // every CRC before any state moves
    this.tiles ??= header.tiles
      .filter((place) => this.ownsTile(place.index))
      .map((place) => {
        const stride = this.entropyPath.sideStride;
        const height = Math.ceil(place.height / stride) * stride;
        const width = Math.ceil(place.width / stride) * stride;
        return { place, entropy: this.entropyPath.newTile(height, width), synthesis: this.synthesis.newTile(height, width) };
      });
    const decoded = this.tiles.map((tile) => {
      const { checksum } = this.entropyPath.decodeTileSymbols(data, tile.place.index, layer, tile.entropy).layers[0];
      return { tile, latents: tile.entropy.previousLatents, checksum }; // the layer's symbols + means
    });
    const entropyMs = performance.now() - started;
    this.synthesis.synthesise(decoded.map(({ tile, latents }) => ({ state: tile.synthesis, latents })));
    this.layersDecoded = layer;
    const timing = { layer, width: header.width, height: header.height, entropyMs };
    if (this.synthesis.postFilter) {
      // the filter reads across tile borders: the page assembles each tile's window (windows.js) and
      // `showLayer` filters it
      const tiles = decoded.map(({ tile: { place, synthesis }, checksum }) => {
        const { index, x, y, width, height } = place;
        const { width: paddedWidth, height: paddedHeight } = synthesis;
        return { index, x, y, width, height, paddedWidth, paddedHeight, reconstruction: synthesis.reconstruction.slice(), checksum };
      });
      const totalMs = performance.now() - started;
      return { ...timing, reconstructed: tiles, synthesisMs: totalMs - entropyMs, totalMs };
    }
    const tiles = decoded.map(({ tile: { place, synthesis }, checksum }) => {
      const { index, x, y, width, height } = place;
      const rgba = tilePixels(synthesis.reconstruction, synthesis, place);
      return { index, x, y, width, height, rgba, checksum };
    });
    const totalMs = performance.now() - started;
    return { ...timing, tiles, synthesisMs: totalMs - entropyMs, totalMs };
  }

  /**
   * The pictures shown after `layer` of the tiles this decoder owns, from their windows of the assembled
   * picture (windows.js, each {index, x, y, width, height, data}) and the `reconstructed` tiles the layer
   * gave ([{index, x, y, width, height, checksum}]): [{index, x, y, width, height, rgba, checksum}].
   */
  showLayer(layer, windows, reconstructed) {
    const byIndex = new Map(windows.map((window) => [window.index, window]));
    return reconstructed.map(({ index, x, y, width, height, checksum }) => {
      const window = byIndex.get(index);
      const shown = this.synthesis.postFilter.shown(window.data, window.height, window.width, layer);
      const rgba = tilePixels(shown, window, { width, height }, x - window.x, y - window.y);
      return { index, x, y, width, height, rgba, checksum };
    });
  }
}

/**
 * The whole picture of one layer from the tiles of every share (each [{index, x, y, width, height, rgba,
 * checksum}]): {rgba, checksum}, `checksum` = codec.api.Decoder.symbol_checksum(layer), the CRC-32 of the
 * tiles' checksums in tile order.
 */
export function composeLayer(width, height, tiles) {
  const ordered = [...tiles].sort((a, b) => a.index - b.index);
  const rgba = new Uint8ClampedArray(4 * width * height);
  for (const tile of ordered) {
    for (let row = 0; row < tile.height; row++) {
      const source = tile.rgba.subarray(4 * row * tile.width, 4 * (row + 1) * tile.width);
      rgba.set(source, 4 * ((tile.y + row) * width + tile.x));
    }
  }
  return { rgba, checksum: crc32(littleEndian(ordered.map(({ checksum }) => checksum))) };
}
