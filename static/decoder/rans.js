// CompressAI's rANS decoder (RansDecoder in compressai/cpp_exts/rans/rans_interface.cpp, over ryg_rans'
// rans64.h), re-implemented so that a browser parses the same symbols from a string as the Python codec.
//
// The coder: a 64-bit state renormalised by 32-bit words read forwards (little-endian), 16-bit
// probabilities, and a bypass mode for values outside a CDF row: the row's last symbol is an escape,
// followed by 4-bit chunks that give first the number of chunks (15 meaning "and more"), then the raw
// value, zigzag-coded (odd: below the row, even: above it).
//
// JavaScript numbers are float64, so the state is kept as two 32-bit halves in plain numbers: every
// intermediate product stays below 2^53 and is exact. BigInt state was measured slower in Chromium
// (see static/decoder/README.md).

const PRECISION = 16;
const PROBABILITY_MASK = (1 << PRECISION) - 1;
const BYPASS_BITS = 4;
const MAX_BYPASS = (1 << BYPASS_BITS) - 1;
const LOWER_BOUND = 0x80000000; // RANS64_L: the state stays in [2^31, 2^63) between symbols
const TWO_POW_32 = 0x100000000;

export class RansError extends Error {
  constructor(message) {
    super(message);
    this.name = "RansError";
  }
}

/**
 * The three table arguments of `decode_with_indexes` (cdfs, their lengths, offsets), checked once and
 * flattened for speed. `json` is what codec/rans_tables.py writes: {precision, cdfs, lengths, offsets}.
 */
export class RansTables {
  constructor({ cdfs, lengths, offsets, precision = PRECISION }) {
    if (precision !== PRECISION) throw new RansError(`tables of precision ${precision}; the coder uses ${PRECISION}`);
    if (cdfs.length !== lengths.length || cdfs.length !== offsets.length) {
      throw new RansError(`${cdfs.length} cdf rows, ${lengths.length} lengths and ${offsets.length} offsets`);
    }
    const rows = cdfs.length;
    this.rows = rows;
    this.starts = new Int32Array(rows);
    this.lengths = Int32Array.from(lengths);
    this.offsets = Int32Array.from(offsets);
    let total = 0;
    for (let r = 0; r < rows; r++) total += lengths[r];
    this.cdf = new Int32Array(total);
    let at = 0;
    for (let r = 0; r < rows; r++) {
      const row = cdfs[r];
      const length = lengths[r];
      if (length < 2 || row.length < length) throw new RansError(`cdf row ${r} has length ${length} of ${row.length}`);
      // CompressAI's asserts: rows start at 0, end at 2^16 and rise strictly. Rising strictly is also what
      // lets a binary search find the symbol its linear search finds.
      if (row[0] !== 0 || row[length - 1] !== 1 << PRECISION) throw new RansError(`cdf row ${r} is not 0 .. 2^16`);
      for (let j = 1; j < length; j++) {
        if (!(row[j] > row[j - 1])) throw new RansError(`cdf row ${r} does not rise at ${j}`);
      }
      this.starts[r] = at;
      this.cdf.set(row.slice(0, length), at);
      at += length;
    }
  }
}

/** The bytes of a string as the 32-bit little-endian words the coder reads (a short tail padded with zeros). */
function words(string) {
  const out = new Uint32Array(Math.ceil(string.length / 4));
  const whole = string.length >> 2;
  const view = new DataView(string.buffer, string.byteOffset, string.byteLength);
  for (let i = 0; i < whole; i++) out[i] = view.getUint32(4 * i, true);
  for (let b = 4 * whole; b < string.length; b++) out[whole] |= string[b] << (8 * (b & 3));
  return out;
}

/**
 * One rANS stream: `setStream` then `decodeStream` as often as needed, each call continuing where the
 * last left off (CompressAI's `set_stream` / `decode_stream`).
 */
export class RansDecoder {
  constructor() {
    this.words = new Uint32Array(0);
    this.position = 0;
    this.high = 0; // state bits 32..62
    this.low = 0; // state bits 0..31
  }

  /** Start decoding `string` (a Uint8Array): the first two words are the encoder's final state. */
  setStream(string) {
    this.words = words(string);
    this.position = 0;
    this.low = this.next();
    this.high = this.next();
  }

  /** True when decoding has read past the end of the string: the string is corrupt or the indexes wrong. */
  get overran() {
    return this.position > this.words.length;
  }

  // A word past the end reads as 0 (the C++ reads whatever follows the string); `overran` tells.
  next() {
    const at = this.position++;
    return at < this.words.length ? this.words[at] : 0;
  }

  // Bypass mode's 4 bits, the rare path (Rans64DecGetBits), on the state as stored in the object.
  bits() {
    const value = this.low & MAX_BYPASS;
    this.low = ((this.low >>> BYPASS_BITS) | ((this.high & MAX_BYPASS) << (32 - BYPASS_BITS))) >>> 0;
    this.high >>>= BYPASS_BITS;
    if (this.high === 0 && this.low < LOWER_BOUND) {
      this.high = this.low;
      this.low = this.next();
    }
    return value;
  }

  // The value after an escape symbol (relative to the row's offset), as the encoder wrote it.
  bypassed(maxValue) {
    let chunk = this.bits();
    let count = chunk;
    while (chunk === MAX_BYPASS) {
      chunk = this.bits();
      count += chunk;
    }
    let raw = 0;
    for (let j = 0; j < count; j++) raw |= this.bits() << (j * BYPASS_BITS);
    const magnitude = raw >> 1;
    return raw & 1 ? -magnitude - 1 : magnitude + maxValue;
  }

  /** The next `indexes.length` symbols (Int32Array), symbol i coded with CDF row `indexes[i]` of `tables`. */
  decodeStream(indexes, tables) {
    const count = indexes.length;
    const out = new Int32Array(count);
    const { cdf, starts, lengths, offsets, rows } = tables;
    const stream = this.words;
    const end = stream.length;
    let high = this.high;
    let low = this.low;
    let position = this.position;
    for (let i = 0; i < count; i++) {
      const row = indexes[i];
      if (!(row >= 0 && row < rows)) throw new RansError(`index ${row} at ${i} outside the ${rows} cdf rows`);
      const base = starts[row];
      const maxValue = lengths[row] - 2;
      const cumulative = low & PROBABILITY_MASK;
      // the symbol s with cdf[s] <= cumulative < cdf[s + 1]
      let s = 0;
      let above = maxValue + 1;
      while (above - s > 1) {
        const middle = (s + above) >>> 1;
        if (cdf[base + middle] <= cumulative) s = middle;
        else above = middle;
      }
      const start = cdf[base + s];
      const frequency = cdf[base + s + 1] - start;
      // state = frequency * (state >> 16) + cumulative - start, on the halves: with p = frequency * high
      // (< 2^47), the state is p * 2^16 + frequency * (low >>> 16) + cumulative - start, the last terms < 2^32.
      const product = frequency * high;
      const productHigh = Math.floor(product / 65536);
      const sum = (product - productHigh * 65536) * 65536 + frequency * (low >>> 16) + (cumulative - start);
      if (sum >= TWO_POW_32) {
        high = productHigh + 1;
        low = sum - TWO_POW_32;
      } else {
        high = productHigh;
        low = sum;
      }
      if (high === 0 && low < LOWER_BOUND) {
        high = low;
        low = position < end ? stream[position] : 0;
        position++;
      }
      let value = s;
      if (s === maxValue) {
        this.high = high;
        this.low = low;
        this.position = position;
        value = this.bypassed(maxValue);
        high = this.high;
        low = this.low;
        position = this.position;
      }
      out[i] = value + offsets[row];
    }
    this.high = high;
    this.low = low;
    this.position = position;
    return out;
  }
}

/** CompressAI's `RansDecoder().decode_with_indexes(string, indexes, cdfs, lengths, offsets)`. */
export function decodeWithIndexes(string, indexes, tables) {
  const decoder = new RansDecoder();
  decoder.setStream(string);
  return decoder.decodeStream(indexes, tables);
}
