// The layered container (docs/format.md) read in the browser: the same checks, limits and messages as
// codec/container.py, from a Uint8Array that may be any prefix of a file.

export const MAGIC = "SRIC";
export const FORMAT_VERSION = 3;
export const READABLE_VERSIONS = [1, 2, 3];
export const MODEL_ID_BYTES = 16;
export const MAX_DIMENSION = 1 << 20;
export const TILE_ALIGNMENT = 64; // tile sides are multiples of the side-information stride
export const MAX_TILES = 1 << 16;
// magic, version, flags, header size, model id, width, height, layer count: enough to learn the header's size
export const FIXED_HEADER_BYTES = 33;
const TILE_SIZE_BYTES = 4; // versions 2 and 3, right after the fixed part
const ENTRY_BYTES = 12; // layer table: offset, size, crc32
const TILE_ENTRY_BYTES = 8; // tile table: size, crc32
const CRC_BYTES = 4;

/** Base class: anything the container reader refuses (codec.errors.CodecError). */
export class CodecError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}
export class BadMagicError extends CodecError {}
export class UnsupportedVersionError extends CodecError {}
export class TruncatedHeaderError extends CodecError {}
export class CorruptHeaderError extends CodecError {}
export class TruncatedLayerError extends CodecError {}
export class ChecksumError extends CodecError {}
export class CorruptLayerError extends CodecError {}

const CRC_TABLE = (() => {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/** CRC-32 (ISO-HDLC, as zlib.crc32) of `bytes`, an unsigned number. */
export function crc32(bytes) {
  let c = -1;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** Bytes of a header with `layerCount` table entries, CRC included. */
export function headerSize(layerCount, version = FORMAT_VERSION) {
  const tileField = version >= 2 ? TILE_SIZE_BYTES : 0;
  return FIXED_HEADER_BYTES + tileField + layerCount * ENTRY_BYTES + CRC_BYTES;
}

/** Tiles of `tileSize` in raster order, {index, x, y, width, height}; 0: one tile covering the picture. */
export function tileGrid(width, height, tileSize) {
  if (tileSize <= 0) return [{ index: 0, x: 0, y: 0, width, height }];
  const tiles = [];
  for (let y = 0; y < height; y += tileSize) {
    for (let x = 0; x < width; x += tileSize) {
      tiles.push({ index: tiles.length, x, y, width: Math.min(tileSize, width - x), height: Math.min(tileSize, height - y) });
    }
  }
  return tiles;
}

export function tileCount(width, height, tileSize) {
  if (tileSize <= 0) return 1;
  return Math.ceil(width / tileSize) * Math.ceil(height / tileSize);
}

function view(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Check the fixed part (magic, version, declared size); its fields. */
function fixedFields(bytes) {
  for (let i = 0; i < Math.min(MAGIC.length, bytes.length); i++) {
    if (bytes[i] !== MAGIC.charCodeAt(i)) throw new BadMagicError("not a scalable RNN codec container (bad magic)");
  }
  if (bytes.length < FIXED_HEADER_BYTES) {
    throw new TruncatedHeaderError(`header needs ${FIXED_HEADER_BYTES} bytes, got ${bytes.length}`);
  }
  const data = view(bytes);
  const fields = {
    version: bytes[4],
    flags: bytes[5],
    headerSize: data.getUint16(6, true),
    modelId: hex(bytes.subarray(8, 8 + MODEL_ID_BYTES)),
    width: data.getUint32(24, true),
    height: data.getUint32(28, true),
    layerCount: bytes[32],
  };
  if (!READABLE_VERSIONS.includes(fields.version)) {
    throw new UnsupportedVersionError(
      `container format version ${fields.version}; this build reads (${READABLE_VERSIONS.join(", ")})`,
    );
  }
  if (fields.layerCount < 1 || fields.headerSize !== headerSize(fields.layerCount, fields.version)) {
    throw new CorruptHeaderError(`header size ${fields.headerSize} does not fit ${fields.layerCount} layers`);
  }
  return fields;
}

/** The full header size, read from the first `FIXED_HEADER_BYTES` of a file. */
export function requiredHeaderBytes(bytes) {
  return fixedFields(bytes).headerSize;
}

/** A parsed, checked header: the fields, the layer table and the arithmetic of prefixes. */
export class ContainerHeader {
  constructor(fields, tileSize, layers) {
    this.version = fields.version;
    this.flags = fields.flags;
    this.headerSize = fields.headerSize;
    this.modelId = fields.modelId;
    this.width = fields.width;
    this.height = fields.height;
    this.tileSize = tileSize; // 0: one tile covering the picture (version 1)
    this.layers = layers; // [{index (from 1), offset, size, end, crc32}]
  }

  get layerCount() {
    return this.layers.length;
  }

  get tiles() {
    return tileGrid(this.width, this.height, this.tileSize);
  }

  get tileCount() {
    return tileCount(this.width, this.height, this.tileSize);
  }

  /** Bytes at the start of each layer that list its tiles (0 in version 1). */
  get tileTableBytes() {
    return this.version < 2 ? 0 : this.tileCount * TILE_ENTRY_BYTES;
  }

  get totalBytes() {
    return this.layers.length ? this.layers[this.layers.length - 1].end : this.headerSize;
  }

  /** Bytes needed to decode the first `n` layers (n = 0: the header). */
  endOfLayer(n) {
    if (!(Number.isInteger(n) && n >= 0 && n <= this.layers.length)) {
      throw new RangeError(`layer count ${n} outside 0..${this.layers.length}`);
    }
    return n ? this.layers[n - 1].end : this.headerSize;
  }

  /** How many whole layers the first `byteLength` bytes hold. */
  layersWithin(byteLength) {
    return this.layers.filter((entry) => entry.end <= byteLength).length;
  }
}

/** Parse and check the header at the start of `bytes` (a Uint8Array); the layers may be absent. */
export function parseHeader(bytes) {
  const fields = fixedFields(bytes);
  const size = fields.headerSize;
  if (bytes.length < size) throw new TruncatedHeaderError(`header needs ${size} bytes, got ${bytes.length}`);
  const data = view(bytes);
  if (crc32(bytes.subarray(0, size - CRC_BYTES)) !== data.getUint32(size - CRC_BYTES, true)) {
    throw new CorruptHeaderError("header checksum mismatch");
  }
  if (fields.flags !== 0) throw new CorruptHeaderError(`unknown header flags 0x${fields.flags.toString(16)}`);
  const { width, height } = fields;
  if (!(width > 0 && width <= MAX_DIMENSION && height > 0 && height <= MAX_DIMENSION)) {
    throw new CorruptHeaderError(`image size ${width}x${height} out of range`);
  }
  let tableStart = FIXED_HEADER_BYTES;
  let tileSize = 0;
  if (fields.version >= 2) {
    tileSize = data.getUint32(FIXED_HEADER_BYTES, true);
    tableStart += TILE_SIZE_BYTES;
    if (tileSize <= 0 || tileSize % TILE_ALIGNMENT || tileSize > MAX_DIMENSION) {
      throw new CorruptHeaderError(`tile size ${tileSize} is not a positive multiple of ${TILE_ALIGNMENT}`);
    }
    const tiles = tileCount(width, height, tileSize);
    if (tiles > MAX_TILES) throw new CorruptHeaderError(`${tiles} tiles exceed ${MAX_TILES}`);
  }
  const tableBytes = fields.version < 2 ? 0 : tileCount(width, height, tileSize) * TILE_ENTRY_BYTES;
  const layers = [];
  let expectedOffset = size;
  for (let i = 0; i < fields.layerCount; i++) {
    const at = tableStart + i * ENTRY_BYTES;
    const offset = data.getUint32(at, true);
    const length = data.getUint32(at + 4, true);
    if (offset !== expectedOffset) {
      throw new CorruptHeaderError(`layer ${i + 1} starts at ${offset}, expected ${expectedOffset}`);
    }
    if (length < tableBytes) throw new CorruptHeaderError(`layer ${i + 1} is shorter than its tile table`);
    layers.push({ index: i + 1, offset, size: length, end: offset + length, crc32: data.getUint32(at + 8, true) });
    expectedOffset = offset + length;
  }
  return new ContainerHeader(fields, tileSize, layers);
}

function layerEntry(header, index) {
  if (!(Number.isInteger(index) && index >= 1 && index <= header.layers.length)) {
    throw new RangeError(`layer ${index} outside 1..${header.layers.length}`);
  }
  return header.layers[index - 1];
}

/** Bytes `offset(index) .. offset(index) + end` of `bytes`, or a TruncatedLayerError. */
function layerBytes(header, bytes, index, end) {
  const entry = layerEntry(header, index);
  if (bytes.length < entry.offset + end) {
    throw new TruncatedLayerError(`layer ${index} needs bytes up to ${entry.end}, only ${bytes.length} present`);
  }
  return bytes.subarray(entry.offset, entry.offset + end);
}

/** The verified {size, crc32} of every tile of layer `index`, from its tile table (version 2). */
function tileEntries(header, index, table) {
  const entry = layerEntry(header, index);
  if (crc32(table) !== entry.crc32) throw new ChecksumError(`layer ${index}'s tile table fails its CRC32 check`);
  const data = view(table);
  const entries = [];
  let sum = 0;
  for (let t = 0; t < table.length / TILE_ENTRY_BYTES; t++) {
    const size = data.getUint32(t * TILE_ENTRY_BYTES, true);
    entries.push({ size, crc32: data.getUint32(t * TILE_ENTRY_BYTES + 4, true) });
    sum += size;
  }
  if (header.tileTableBytes + sum !== entry.size) {
    throw new CorruptLayerError(`layer ${index}'s tile sizes do not add up to the layer's size`);
  }
  return entries;
}

/**
 * Layer `index`'s tiles, [{tile, offset, size, crc32}] with absolute offsets into the file, from its
 * verified tile table (version 1: the whole layer is tile 0). Only the table need be present.
 */
export function tileTable(header, bytes, index) {
  const entry = layerEntry(header, index);
  if (header.version < 2) return [{ tile: 0, offset: entry.offset, size: entry.size, crc32: entry.crc32 }];
  const entries = tileEntries(header, index, layerBytes(header, bytes, index, header.tileTableBytes));
  let offset = entry.offset + header.tileTableBytes;
  return entries.map(({ size, crc32: crc }, tile) => {
    const located = { tile, offset, size, crc32: crc };
    offset += size;
    return located;
  });
}

/** The verified bytes (a subarray, not a copy) of `tile` (from 0) in layer `index` (from 1) of `bytes`. */
export function tilePayload(header, bytes, index, tile) {
  const entry = layerEntry(header, index);
  if (header.version < 2) {
    const payload = layerBytes(header, bytes, index, entry.size);
    if (crc32(payload) !== entry.crc32) throw new ChecksumError(`layer ${index} fails its CRC32 check`);
    return payload;
  }
  const tiles = tileTable(header, bytes, index);
  if (!(Number.isInteger(tile) && tile >= 0 && tile < tiles.length)) {
    throw new RangeError(`tile ${tile} outside 0..${tiles.length - 1}`);
  }
  const { offset, size, crc32: crc } = tiles[tile];
  const payload = layerBytes(header, bytes, index, offset - entry.offset + size).subarray(offset - entry.offset);
  if (crc32(payload) !== crc) throw new ChecksumError(`tile ${tile} of layer ${index} fails its CRC32 check`);
  return payload;
}

/** Check every CRC of layer `index`, given its bytes alone (what a server sends as one message). */
export function verifyLayer(header, index, layer) {
  const entry = layerEntry(header, index);
  if (layer.length !== entry.size) {
    throw new TruncatedLayerError(`layer ${index} has ${layer.length} of its ${entry.size} bytes`);
  }
  if (header.version < 2) {
    if (crc32(layer) !== entry.crc32) throw new ChecksumError(`layer ${index} fails its CRC32 check`);
    return;
  }
  let start = header.tileTableBytes;
  tileEntries(header, index, layer.subarray(0, start)).forEach(({ size, crc32: crc }, tile) => {
    if (crc32(layer.subarray(start, start + size)) !== crc) {
      throw new ChecksumError(`tile ${tile} of layer ${index} fails its CRC32 check`);
    }
    start += size;
  });
}
