// The decoder's hot loop in WebAssembly SIMD: a register-tiled convolution product, 4 output channels by
// 2 vectors of neighbouring positions in 8 vector sums. Two element types, one loop:
//   float64 (f64x2, 4 positions a step) for the exact path (exact.js): IEEE multiplies and adds, as in
//     JavaScript, and the sums are exact there for the reason exact.js gives, so their order is free;
//   float32 (f32x4, 8 positions a step) for the synthesis network (synthesis.js), which is float arithmetic
//     within the ±1 pixel contract.
// In V8's JavaScript the same loop ran on scalar float64 and spilled its 16 sums out of the registers.
//
// The module is assembled here from its opcodes (a few hundred bytes, compiled synchronously: no build
// step, no binary in the repository, nothing fetched).
//
// product(frame, terms, termCount, weights, channelBytes, span, out, stride, blocks), addresses in bytes:
//   for block b < blocks, position q < span (a step at a time), output channel j < 4, position d:
//     out[(4b + j) * stride + E (q + d)] = sum over n < termCount of
//       weights[(4b + j) * channelBytes + terms[2n + 1]] * frame[E (terms[2n] + q + d)]
//   E the element's bytes; `terms` holds int32 pairs (the term's frame index, its weight's byte offset from
//   its output channel's); the weights stay in their own layout, read with the stride channelBytes between
//   output channels; the frame has a step of slack past its last term; stride >= E * span rounded up to a step.

const I32 = 0x7f;
const V128 = 0x7b;
const op = {
  block: 0x02, loop: 0x03, br: 0x0c, brIf: 0x0d, end: 0x0b, get: 0x20, set: 0x21, tee: 0x22,
  i32Load: 0x28, i32Const: 0x41, i32GeS: 0x4e, i32Add: 0x6a, i32Mul: 0x6c, i32Shl: 0x74,
}; // prettier-ignore
const V128_LOAD = 0x00;
const V128_STORE = 0x0b;
const V128_CONST = 0x0c;

/** What differs between the two element types. */
const TYPES = {
  f64: { bytes: 8, shift: 3, lanes: 2, splat: 0x0a, mul: 0xf2, add: 0xf0 }, // v128.load64_splat, f64x2.*
  f32: { bytes: 4, shift: 2, lanes: 4, splat: 0x09, mul: 0xe6, add: 0xe4 }, // v128.load32_splat, f32x4.*
};

function uleb(value) {
  const bytes = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value) byte |= 0x80;
    bytes.push(byte);
  } while (value);
  return bytes;
}

function sleb(value) {
  const bytes = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    if ((value === 0 && !(byte & 0x40)) || (value === -1 && byte & 0x40)) return [...bytes, byte];
    bytes.push(byte | 0x80);
  }
}

const simd = (code) => [0xfd, ...uleb(code)];
const vector = (items) => [...uleb(items.length), ...items.flat()];
const section = (id, body) => [id, ...uleb(body.length), ...body];
const memarg = (align, offset) => [...uleb(align), ...uleb(offset)];
const name = (text) => vector([...text].map((c) => c.charCodeAt(0)));

// parameters, then the i32 locals, then the v128 locals
const [FRAME, TERMS, TERM_COUNT, WEIGHTS, CHANNEL_BYTES, SPAN, OUT, STRIDE, BLOCKS] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
const [B, Q, N, T, WB, F, ROW] = [9, 10, 11, 12, 13, 14, 15];
const ACC = [16, 17, 18, 19, 20, 21, 22, 23]; // output channel j: first vector of positions at 2j, second at 2j+1
const [X0, X1, WJ] = [24, 25, 26];

const get = (local) => [op.get, ...uleb(local)];
const set = (local) => [op.set, ...uleb(local)];
const i32 = (value) => [op.i32Const, ...sleb(value)];
const add = (local, value) => [...get(local), ...i32(value), op.i32Add, ...set(local)];
/** `body` while local < limit: block { loop { br_if out (local >= limit); body; br loop } } */
const whileBelow = (local, limit, body) => [
  op.block, 0x40, op.loop, 0x40, ...get(local), ...get(limit), op.i32GeS, op.brIf, 1, ...body, op.br, 0, op.end, op.end,
]; // prettier-ignore

function productBody({ bytes, shift, lanes, splat, mul, add: vectorAdd }) {
  const perTerm = [
    // F = frame + (terms[2n] + q) * E; the two vectors of positions there
    ...get(FRAME), ...get(T), op.i32Load, ...memarg(2, 0), ...get(Q), op.i32Add, ...i32(shift), op.i32Shl, op.i32Add,
    op.tee, ...uleb(F), ...simd(V128_LOAD), ...memarg(4, 0), ...set(X0),
    ...get(F), ...simd(V128_LOAD), ...memarg(4, 16), ...set(X1),
    // the term's weight of each of the 4 output channels: block base + terms[2n + 1], a channel apart
    ...get(WB), ...get(T), op.i32Load, ...memarg(2, 4), op.i32Add, ...set(F),
    ...[0, 1, 2, 3].flatMap((j) => [
      ...(j > 0 ? [...get(F), ...get(CHANNEL_BYTES), op.i32Add, ...set(F)] : []),
      ...get(F), ...simd(splat), ...memarg(shift, 0), ...set(WJ),
      ...get(ACC[2 * j]), ...get(WJ), ...get(X0), ...simd(mul), ...simd(vectorAdd), ...set(ACC[2 * j]),
      ...get(ACC[2 * j + 1]), ...get(WJ), ...get(X1), ...simd(mul), ...simd(vectorAdd), ...set(ACC[2 * j + 1]),
    ]),
    ...add(N, 1), ...add(T, 8),
  ]; // prettier-ignore
  const zero = [...simd(V128_CONST), ...new Array(16).fill(0)];
  const position = [
    ...ACC.flatMap((acc) => [...zero, ...set(acc)]),
    ...i32(0), ...set(N), ...get(TERMS), ...set(T),
    ...whileBelow(N, TERM_COUNT, perTerm),
    // ROW = out + 4b * stride + q * E, then one output channel per stride
    ...get(OUT), ...get(B), ...i32(2), op.i32Shl, ...get(STRIDE), op.i32Mul, op.i32Add,
    ...get(Q), ...i32(shift), op.i32Shl, op.i32Add, ...set(ROW),
    ...[0, 1, 2, 3].flatMap((j) => [
      ...get(ROW), ...get(ACC[2 * j]), ...simd(V128_STORE), ...memarg(4, 0),
      ...get(ROW), ...get(ACC[2 * j + 1]), ...simd(V128_STORE), ...memarg(4, 16),
      ...(j < 3 ? [...get(ROW), ...get(STRIDE), op.i32Add, ...set(ROW)] : []),
    ]),
    ...add(Q, 2 * lanes),
  ]; // prettier-ignore
  const perBlock = [
    ...get(WEIGHTS), ...get(B), ...i32(2), op.i32Shl, ...get(CHANNEL_BYTES), op.i32Mul, op.i32Add, ...set(WB),
    ...i32(0), ...set(Q), ...whileBelow(Q, SPAN, position), ...add(B, 1),
  ]; // prettier-ignore
  const code = [...i32(0), ...set(B), ...whileBelow(B, BLOCKS, perBlock), op.end];
  return [...vector([[...uleb(7), I32], [...uleb(11), V128]]), ...code];
}

function moduleBytes(type) {
  const code = productBody(type);
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // \0asm, version 1
    ...section(1, vector([[0x60, ...vector(new Array(9).fill(I32)), ...vector([])]])), // type 0: (i32 x 9) -> ()
    ...section(3, vector([uleb(0)])), // function 0 has type 0
    ...section(5, vector([[0x00, ...uleb(1)]])), // memory 0: one page to start with
    ...section(7, vector([[...name("memory"), 0x02, 0], [...name("product"), 0x00, 0]])),
    ...section(10, vector([[...uleb(code.length), ...code]])),
  ]); // prettier-ignore
}

const PAGE = 1 << 16;
const CACHE_LINE = 64; // bytes

/**
 * One element type's compiled product and its memory: weights placed once (`place`) stay at their address;
 * each `run` puts its frame and terms after them.
 */
class ProductKernel {
  constructor(typeName) {
    this.type = TYPES[typeName];
    this.Array = typeName === "f64" ? Float64Array : Float32Array;
    const instance = new WebAssembly.Instance(new WebAssembly.Module(moduleBytes(this.type)));
    this.memory = instance.exports.memory;
    this.product = instance.exports.product;
    this.placed = 0; // bytes of weights placed so far
    this.views();
    this.warmUp();
  }

  /**
   * A few small products over the fresh memory's zeros (under a millisecond): V8 first compiles the
   * product with its baseline compiler, about 2.5 times slower, and only tiers up once it has run a
   * while; warmed now, the first picture's convolutions run on the optimised code.
   */
  warmUp() {
    const span = 2048;
    const out = 8 * span * this.type.bytes;
    this.reserve(out + 4 * span * this.type.bytes);
    for (let run = 0; run < 3; run++) this.product(0, 0, 64, 0, 0, span, out, span * this.type.bytes, 1);
    this.values.fill(0, 0, out / this.type.bytes + 4 * span);
  }

  views() {
    this.values = new this.Array(this.memory.buffer);
    this.int32 = new Int32Array(this.memory.buffer);
  }

  reserve(bytes) {
    const missing = bytes - this.memory.buffer.byteLength;
    if (missing > 0) {
      this.memory.grow(Math.ceil(missing / PAGE));
      this.views();
    }
  }

  /**
   * Copy `weights` (this kernel's element type), `rows` rows of equal length, into the kernel's memory for
   * good, `rowStride` values apart, with `slackBytes` of zeros after them (what the product reads past the
   * last output channel of a block); returns the address.
   */
  place(weights, rows, rowStride, slackBytes) {
    const { bytes } = this.type;
    const at = this.placed;
    const rowLength = weights.length / rows;
    this.placed = 16 * Math.ceil((at + bytes * rows * rowStride + slackBytes) / 16);
    this.reserve(this.placed);
    if (rowStride === rowLength) this.values.set(weights, at / bytes);
    else {
      for (let row = 0; row < rows; row++) {
        this.values.set(weights.subarray(row * rowLength, (row + 1) * rowLength), at / bytes + row * rowStride);
      }
    }
    return at;
  }

  /** A frame of `length` zeros in the kernel's memory, after the weights: fill it, then `run`. */
  frame(length) {
    this.frameLength = length;
    this.reserve(this.placed + this.type.bytes * length);
    const view = this.values.subarray(this.placed / this.type.bytes, this.placed / this.type.bytes + length);
    return view.fill(0);
  }

  /**
   * The product of the last `frame` with the weights placed at `weightsAt`, output channels
   * `channelBytes` apart, in `blocks` blocks of 4, over the first `termCount` pairs of `terms`
   * (Int32Array) and positions q < span. Returns {sums, stride}: sums (a view of the kernel's memory,
   * valid until its next use) of output channel o at position q at sums[o * stride + q].
   */
  run(terms, termCount, weightsAt, channelBytes, span, blocks) {
    const { bytes, lanes } = this.type;
    const step = 2 * lanes;
    const strideValues = step * Math.ceil(span / step);
    const frameAt = this.placed;
    const termsAt = 16 * Math.ceil((frameAt + bytes * this.frameLength) / 16);
    const outAt = 16 * Math.ceil((termsAt + 8 * termCount) / 16);
    this.reserve(outAt + 4 * blocks * strideValues * bytes);
    this.int32.set(terms.subarray(0, 2 * termCount), termsAt / 4);
    this.product(frameAt, termsAt, termCount, weightsAt, channelBytes, span, outAt, strideValues * bytes, blocks);
    return { sums: this.values.subarray(outAt / bytes), stride: strideValues };
  }
}

const kernels = new Map();

/** The kernel of element type "f64" or "f32", compiled on first use (once per worker or page). */
export function productKernel(typeName) {
  if (!kernels.has(typeName)) kernels.set(typeName, new ProductKernel(typeName));
  return kernels.get(typeName);
}

/** The channels of `values` (channels, plane) that are not zeros throughout: what `productSums` may skip. */
export function liveChannels(values, channels, plane) {
  const live = [];
  for (let c = 0; c < channels; c++) {
    for (let p = c * plane; p < (c + 1) * plane; p++) {
      if (values[p] !== 0) {
        live.push(c);
        break;
      }
    }
  }
  return live;
}

/**
 * A convolution's sums (no bias) for one picture: `input` (inChannels, height, width), kernel 1 or 3 with
 * padding k // 2, with the weights `placed` (`placedWeights`). Only the input channels in `channels`
 * (ascending; the rest must be zeros throughout) are read. Returns {sums, stride, rowWidth}: output
 * channel o at (y, x) is sums[o * stride + y * rowWidth + x], a view of the kernel's memory valid until
 * its next use.
 *
 * The input goes into a frame (for 3x3: one pixel of zeros around every channel, rows of width + 2);
 * output (y, x) is accumulated at q = y * rowWidth + x and reads the frame at a term's index + q, so that
 * neighbouring q read neighbouring values (the columns past each row's end collect sums never read).
 */
export function productSums(kernel, placed, input, channels, height, width) {
  const { at, outChannels, inChannels, kernelSize, channelBytes, tapBytes } = placed;
  const plane = height * width;
  const k2 = kernelSize * kernelSize;
  const slack = 2 * kernel.type.lanes;
  let rowWidth;
  let span;
  const terms = new Int32Array(2 * channels.length * k2);
  if (kernelSize === 1) {
    rowWidth = width;
    span = plane;
    kernel.frame(inChannels * plane + slack).set(input);
    channels.forEach((i, n) => {
      terms[2 * n] = i * plane;
      terms[2 * n + 1] = i * tapBytes;
    });
  } else {
    rowWidth = width + 2;
    const framePlane = (height + 2) * rowWidth;
    const frame = kernel.frame(inChannels * framePlane + slack);
    channels.forEach((i, n) => {
      for (let y = 0; y < height; y++) {
        const from = i * plane + y * width;
        frame.set(input.subarray(from, from + width), i * framePlane + (y + 1) * rowWidth + 1);
      }
      for (let t = 0; t < 9; t++) {
        terms[2 * (n * 9 + t)] = i * framePlane + ((t / 3) | 0) * rowWidth + (t % 3);
        terms[2 * (n * 9 + t) + 1] = (i * 9 + t) * tapBytes;
      }
    });
    span = (height - 1) * rowWidth + width;
  }
  const blocks = Math.ceil(outChannels / 4);
  const { sums, stride } = kernel.run(terms, channels.length * k2, at, channelBytes, span, blocks);
  return { sums, stride, rowWidth };
}

/** `productSums` copied into `output` (outChannels, height, width); returns it. */
export function convolutionSums(kernel, placed, input, channels, height, width, output) {
  const { sums, stride, rowWidth } = productSums(kernel, placed, input, channels, height, width);
  const plane = height * width;
  for (let o = 0; o < placed.outChannels; o++) {
    if (rowWidth === width) {
      output.set(sums.subarray(o * stride, o * stride + plane), o * plane);
      continue;
    }
    for (let y = 0; y < height; y++) {
      const from = o * stride + y * rowWidth;
      output.set(sums.subarray(from, from + width), o * plane + y * width);
    }
  }
  return output;
}

/** A convolution `{placed, bias}` of `input` (as `productSums`) with its bias: a new Float32Array (out, height, width). */
export function biasedConvolution(kernel, { placed, bias }, input, channels, height, width) {
  const plane = height * width;
  const output = convolutionSums(kernel, placed, input, channels, height, width, new Float32Array(placed.outChannels * plane));
  for (let p = 0; p < output.length; p++) output[p] += bias[(p / plane) | 0];
  return output;
}

const channelLists = new Map();

/** [0, 1, ..., count - 1], made once per count: every channel of an input, for `productSums`. */
export function allChannels(count) {
  if (!channelLists.has(count)) channelLists.set(count, Array.from({ length: count }, (_, i) => i));
  return channelLists.get(count);
}

/**
 * A convolution's weights placed in `kernel` in their own layout: `weight` (out, in, k, k), or with
 * `inputMajor` a 1x1 convolution's (in, out). The product reads the 4 output channels of a block a channel
 * apart, and a block's terms one after another. Input-major rows are placed a cache line further apart
 * than their length: a row of a multiple of 4 KiB would put every term of a block in the same cache set.
 */
export function placedWeights(kernel, weight, outChannels, inChannels, kernelSize, { inputMajor = false } = {}) {
  const { bytes } = kernel.type;
  const taps = inChannels * kernelSize * kernelSize;
  if (inputMajor && kernelSize !== 1) throw new RangeError("input-major weights are a 1x1 convolution's");
  if (weight.length !== outChannels * taps) throw new RangeError(`${weight.length} weights for ${outChannels}x${taps}`);
  if (!inputMajor) {
    const channelBytes = taps * bytes;
    const at = kernel.place(weight, 1, weight.length, 3 * channelBytes); // a block of < 4 channels reads zeros
    return { at, outChannels, inChannels, kernelSize, channelBytes, tapBytes: bytes };
  }
  const rowStride = outChannels + CACHE_LINE / bytes;
  const at = kernel.place(weight, inChannels, rowStride, 0);
  return { at, outChannels, inChannels, kernelSize, channelBytes: bytes, tapBytes: rowStride * bytes };
}
