// The exact path's hot loop in WebAssembly SIMD: the register-tiled product of exact.js's convolution,
// 4 output channels by 4 neighbouring positions, as 8 f64x2 sums. In V8's JavaScript the same loop ran
// on scalar float64 and spilled its 16 sums out of the registers; here two products share an instruction
// and the sums stay in registers.
//
// The module is assembled here from its opcodes (about 300 bytes, compiled synchronously: no build step,
// no binary in the repository, nothing fetched). Its arithmetic is IEEE float64 mul and add, as in
// JavaScript: the sums are exact for the reason exact.js gives, so they are the same bits.
//
// tiledProduct(frame, offsets, weights, terms, span, out, stride, blocks), all addresses in bytes:
//   for block b < blocks, position q < span (in steps of 4), output channel j < 4, d < 4:
//     out[(4b + j) * stride + 8 (q + d)] = sum over n < terms of
//       weights[b * terms * 32 + n * 32 + 8 j] * frame[8 (offsets[n] + q + d)]
//   (offsets: int32 frame indexes; weights, frame and out: float64; the frame has 4 values of slack
//   past its last term, `stride` >= 8 * span rounded up to 4 positions).

const I32 = 0x7f;
const V128 = 0x7b;

const op = {
  block: 0x02,
  loop: 0x03,
  br: 0x0c,
  brIf: 0x0d,
  end: 0x0b,
  get: 0x20,
  set: 0x21,
  tee: 0x22,
  i32Load: 0x28,
  i32Const: 0x41,
  i32GeS: 0x4e,
  i32Add: 0x6a,
  i32Mul: 0x6c,
  i32Shl: 0x74,
};
const simd = (code) => [0xfd, ...uleb(code)];
const V128_LOAD = 0x00;
const V128_LOAD64_SPLAT = 0x0a;
const V128_STORE = 0x0b;
const V128_CONST = 0x0c;
const F64X2_ADD = 0xf0;
const F64X2_MUL = 0xf2;

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

const vector = (items) => [...uleb(items.length), ...items.flat()];
const section = (id, body) => [id, ...uleb(body.length), ...body];
const memarg = (align, offset) => [...uleb(align), ...uleb(offset)];

// parameters 0-7, then the i32 locals, then the v128 locals
const [FRAME, OFFSETS, WEIGHTS, TERMS, SPAN, OUT, STRIDE, BLOCKS] = [0, 1, 2, 3, 4, 5, 6, 7];
const [B, Q, N, O, W, ROW] = [8, 9, 10, 11, 12, 13];
const ACC = [14, 15, 16, 17, 18, 19, 20, 21]; // channel j's positions (q, q+1) at 2j, (q+2, q+3) at 2j+1
const [X01, X23, WJ] = [22, 23, 24];

const get = (local) => [op.get, ...uleb(local)];
const set = (local) => [op.set, ...uleb(local)];
const i32 = (value) => [op.i32Const, ...sleb(value)];
const add = (local, value) => [...get(local), ...i32(value), op.i32Add, ...set(local)];
/** `body` while local < limit: block { loop { br_if out (local >= limit); body; br loop } } */
const whileBelow = (local, limit, body) => [
  op.block, 0x40, op.loop, 0x40, ...get(local), ...get(limit), op.i32GeS, op.brIf, 1, ...body, op.br, 0, op.end, op.end,
];

function body() {
  const frameAt = [...get(FRAME), ...get(O), op.i32Load, ...memarg(2, 0), ...get(Q), op.i32Add, ...i32(3), op.i32Shl, op.i32Add];
  const perTerm = [
    ...frameAt, ...simd(V128_LOAD), ...memarg(3, 0), ...set(X01),
    ...frameAt, ...simd(V128_LOAD), ...memarg(3, 16), ...set(X23),
    ...[0, 1, 2, 3].flatMap((j) => [
      ...get(W), ...simd(V128_LOAD64_SPLAT), ...memarg(3, 8 * j), ...set(WJ),
      ...get(ACC[2 * j]), ...get(WJ), ...get(X01), ...simd(F64X2_MUL), ...simd(F64X2_ADD), ...set(ACC[2 * j]),
      ...get(ACC[2 * j + 1]), ...get(WJ), ...get(X23), ...simd(F64X2_MUL), ...simd(F64X2_ADD), ...set(ACC[2 * j + 1]),
    ]),
    ...add(N, 1), ...add(O, 4), ...add(W, 32),
  ];
  const zero = [...simd(V128_CONST), ...new Array(16).fill(0)];
  const position = [
    ...ACC.flatMap((acc) => [...zero, ...set(acc)]),
    ...i32(0), ...set(N), ...get(OFFSETS), ...set(O),
    // w = weights + b * terms * 32
    ...get(WEIGHTS), ...get(B), ...get(TERMS), op.i32Mul, ...i32(5), op.i32Shl, op.i32Add, ...set(W),
    ...whileBelow(N, TERMS, perTerm),
    // row = out + 4 b * stride + 8 q, then one output channel per stride
    ...get(OUT), ...get(B), ...i32(2), op.i32Shl, ...get(STRIDE), op.i32Mul, op.i32Add,
    ...get(Q), ...i32(3), op.i32Shl, op.i32Add, ...set(ROW),
    ...[0, 1, 2, 3].flatMap((j) => [
      ...get(ROW), ...get(ACC[2 * j]), ...simd(V128_STORE), ...memarg(3, 0),
      ...get(ROW), ...get(ACC[2 * j + 1]), ...simd(V128_STORE), ...memarg(3, 16),
      ...(j < 3 ? [...get(ROW), ...get(STRIDE), op.i32Add, ...set(ROW)] : []),
    ]),
    ...add(Q, 4),
  ];
  const perBlock = [...i32(0), ...set(Q), ...whileBelow(Q, SPAN, position), ...add(B, 1)];
  const code = [...i32(0), ...set(B), ...whileBelow(B, BLOCKS, perBlock), op.end];
  const locals = vector([[...uleb(6), I32], [...uleb(11), V128]]);
  return [...locals, ...code];
}

function moduleBytes() {
  const code = body();
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // \0asm, version 1
    ...section(1, vector([[0x60, ...vector(new Array(8).fill(I32)), ...vector([])]])), // type: (i32 x 8) -> ()
    ...section(3, vector([uleb(0)])), // function 0 has type 0
    ...section(5, vector([[0x00, ...uleb(1)]])), // memory 0: at least one page
    ...section(7, vector([
      [...vector([..."memory"].map((c) => c.charCodeAt(0))), 0x02, 0],
      [...vector([..."tiledProduct"].map((c) => c.charCodeAt(0))), 0x00, 0],
    ])),
    ...section(10, vector([[...uleb(code.length), ...code]])),
  ]);
}

const PAGE = 1 << 16;

/** The compiled kernel and its memory; `reserve(bytes)` makes room, `f64`/`i32` are views of it. */
class Kernel {
  constructor() {
    const instance = new WebAssembly.Instance(new WebAssembly.Module(moduleBytes()));
    this.memory = instance.exports.memory;
    this.tiledProduct = instance.exports.tiledProduct;
    this.views();
  }

  views() {
    this.f64 = new Float64Array(this.memory.buffer);
    this.i32 = new Int32Array(this.memory.buffer);
  }

  reserve(bytes) {
    const missing = bytes - this.memory.buffer.byteLength;
    if (missing > 0) {
      this.memory.grow(Math.ceil(missing / PAGE));
      this.views();
    }
  }
}

let kernel = null;

/** The kernel, compiled on first use (once per worker or page). */
export function simdKernel() {
  kernel ??= new Kernel();
  return kernel;
}
