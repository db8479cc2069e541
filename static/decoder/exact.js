// The fixed-point primitives of codec/exact.py in the browser, computing in float64 exactly what torch
// computes there in float64 (exact mode), so that the hyper-decoder gives the very numbers the Python
// decoder gives, bit for bit.
//
// Why this works in JavaScript at all: every value the exact path handles lies on a grid (weights are
// multiples of 2^-12 with |w| <= 8, activations multiples of 2^-10 with |a| <= 256) and a convolution
// has at most 2^11 terms per output, so every product and every partial sum is a multiple of 2^-22 below
// 2^22 in magnitude: at most 44 significant bits, exactly representable in a float64. Exact sums do not
// depend on their order. The convolution below therefore adds its terms in whatever order is fastest
// here, and still gets torch's result to the last bit. Keep it that way: any operation added to this
// path must keep every intermediate on such a grid (no division other than by powers of two, no
// transcendental functions, no float32), or the browser and Python will disagree.
//
// The one rounding that differs between the languages: torch.round rounds halves to even, Math.round
// rounds them up. `roundHalfEven` is torch's; ties are common here (a sum on the 2^-22 grid snapped to
// 2^-10, a scale index on the 2^-10 grid rounded to an integer).

import { convolutionSums, placedWeights, productKernel } from "./kernel.js";

export const WEIGHT_BITS = 12;
export const ACTIVATION_BITS = 10;
export const WEIGHT_LIMIT = 8.0; // |w| <= 2^3
export const ACTIVATION_LIMIT = 256.0; // |a| <= 2^8
export const MAX_TERMS = 2 ** 11;

const ACTIVATION_SCALE = 2 ** ACTIVATION_BITS;
// Inputs with at least this share of zeros take the convolution that visits only the non-zero values
// (measured in V8 on inputs like the hyper-decoder's: its last 1x1 convolution's input is about 80 %
// zeros; inputs of 20-45 % zeros run faster through the register-tiled product, which still skips the
// channels that are zero throughout).
const SPARSE_FROM = 0.7;

/** Round to the nearest integer, halves to even (torch.round, numpy.round); -0 stays -0 as in torch. */
export function roundHalfEven(x) {
  const r = Math.round(x); // halves up; r - x is exact for |x| < 2^52, and x is an integer beyond
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** torch.clamp(x, low, high). */
export function clamp(x, low, high) {
  return x < low ? low : x > high ? high : x;
}

/** codec.exact.to_grid(x, bits, limit, exact=True): multiples of 2^-bits within [-limit, limit]. */
export function toGrid(x, bits, limit) {
  const scale = 2 ** bits;
  return roundHalfEven(clamp(x, -limit, limit) * scale) / scale;
}

/** codec.exact.activation in exact mode: the 2^-10 grid within ±256. */
export function activation(x) {
  return roundHalfEven(clamp(x, -ACTIVATION_LIMIT, ACTIVATION_LIMIT) * ACTIVATION_SCALE) / ACTIVATION_SCALE;
}

/** codec.exact.hard_sigmoid in exact mode: activation(clamp(x/4 + 1/2, 0, 1)). */
export function hardSigmoid(x) {
  return activation(clamp(x * 0.25 + 0.5, 0.0, 1.0));
}

/** F.relu (max(x, 0); -0 and 0 compare equal, so the sign of a zero never matters downstream). */
export function relu(x) {
  return x > 0 ? x : 0;
}

/** `activation` applied to every element of `values` (a Float64Array), in place; returns it. */
export function activationInPlace(values) {
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    const c = x < -ACTIVATION_LIMIT ? -ACTIVATION_LIMIT : x > ACTIVATION_LIMIT ? ACTIVATION_LIMIT : x;
    values[i] = roundHalfEven(c * ACTIVATION_SCALE) / ACTIVATION_SCALE;
  }
  return values;
}

/** `relu` applied to every element of `values`, in place; returns it. */
export function reluInPlace(values) {
  for (let i = 0; i < values.length; i++) if (!(values[i] > 0)) values[i] = 0;
  return values;
}

/** `clamp(·, low, high)` applied to every element of `values`, in place; returns it. */
export function clampInPlace(values, low, high) {
  for (let i = 0; i < values.length; i++) values[i] = clamp(values[i], low, high);
  return values;
}

/**
 * One ExactConv2d's parameters, on the weight grid: `weight` (out, in, k, k) and `bias` (out) as
 * Float64Arrays, kernel 1 or 3, padding k // 2, stride 1. Every parameter is checked to be on the grid
 * unless `onGrid` says the caller built them so (entropy.js: from integer numerators).
 */
export class ExactConvolution {
  constructor({ inChannels, outChannels, kernelSize, weight, bias, onGrid = false }) {
    if (kernelSize !== 1 && kernelSize !== 3) throw new RangeError(`kernel size ${kernelSize}: only 1 and 3`);
    if (inChannels * kernelSize * kernelSize > MAX_TERMS) {
      throw new RangeError(`${inChannels * kernelSize * kernelSize} terms per output: too many for exact float64 sums`);
    }
    if (weight.length !== outChannels * inChannels * kernelSize * kernelSize || bias.length !== outChannels) {
      throw new RangeError(
        `weights of ${weight.length} and biases of ${bias.length} for ${outChannels}x${inChannels}x${kernelSize}²`,
      );
    }
    for (const values of onGrid ? [] : [weight, bias]) {
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (!(Math.abs(v) <= WEIGHT_LIMIT) || v * 2 ** WEIGHT_BITS !== Math.round(v * 2 ** WEIGHT_BITS)) {
          throw new RangeError(`parameter ${v} is not on the 2^-${WEIGHT_BITS} grid within ±${WEIGHT_LIMIT}`);
        }
      }
    }
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = kernelSize;
    this.weight = weight;
    this.bias = bias;
  }

  /**
   * ExactConv2d.forward(x, exact=True) for one picture: `input` (inChannels, height, width), NCHW with
   * batch 1, on the activation grid; the output (outChannels, height, width), snapped to it
   * (`activation`). The sums are exact (see the top of this file), so their order is free, and the two
   * ways of computing them below give the same bits: a register-tiled product for dense inputs (input
   * channels that are zero throughout left out), and for inputs that are mostly zeros (after a ReLU)
   * one that visits only the non-zero values.
   */
  forward(input, height, width) {
    const { inChannels, outChannels, bias } = this;
    const plane = height * width;
    if (input.length !== inChannels * plane) {
      throw new RangeError(`input of ${input.length} values for ${inChannels}x${height}x${width}`);
    }
    // the input channels that are not all zeros (a ReLU leaves whole channels at zero), and the zeros
    let zeros = 0;
    const live = [];
    for (let i = 0; i < inChannels; i++) {
      let channelZeros = 0;
      for (let p = i * plane; p < (i + 1) * plane; p++) if (input[p] === 0) channelZeros++;
      zeros += channelZeros;
      if (channelZeros < plane) live.push(i);
    }
    const output = new Float64Array(outChannels * plane);
    if (zeros >= SPARSE_FROM * input.length) this.forwardSparse(input, height, width, output);
    else this.forwardTiled(input, height, width, output, live);
    for (let o = 0; o < outChannels; o++) {
      const b = bias[o];
      for (let p = o * plane; p < (o + 1) * plane; p++) output[p] += b;
    }
    return activationInPlace(output);
  }

  // A register-tiled product (kernel.js, in WebAssembly SIMD, float64) of the input channels that are not
  // zeros throughout; the weights go into the kernel's memory on first use.
  forwardTiled(input, height, width, output, live = undefined) {
    const { inChannels, outChannels, kernelSize } = this;
    const kernel = productKernel("f64");
    this.placed ??= placedWeights(kernel, this.weight, outChannels, inChannels, kernelSize);
    const channels = live ?? Array.from({ length: inChannels }, (_, i) => i);
    return convolutionSums(kernel, this.placed, input, channels, height, width, output);
  }

  /** The weights as [(i * k² + tap) * outChannels + o]: one input tap's weights to every output, contiguous. */
  transposed() {
    if (this.transposedWeight) return this.transposedWeight;
    const { inChannels, outChannels, kernelSize, weight } = this;
    const taps = inChannels * kernelSize * kernelSize;
    const out = new Float64Array(taps * outChannels);
    for (let o = 0; o < outChannels; o++) {
      for (let t = 0; t < taps; t++) out[t * outChannels + o] = weight[o * taps + t];
    }
    this.transposedWeight = out;
    return out;
  }

  // Input by input, skipping zeros (a ReLU leaves many): each non-zero input value adds its weights to
  // every output it reaches, accumulated position-major (plane, outChannels), then transposed.
  forwardSparse(input, height, width, output) {
    const { inChannels, outChannels, kernelSize } = this;
    const weight = this.transposed();
    const plane = height * width;
    const acc = new Float64Array(plane * outChannels);
    const O = outChannels;
    if (kernelSize === 1) {
      for (let i = 0; i < inChannels; i++) {
        const w = i * O;
        for (let p = 0; p < plane; p++) {
          const v = input[i * plane + p];
          if (v === 0) continue;
          const a = p * O;
          for (let o = 0; o < O; o++) acc[a + o] += v * weight[w + o];
        }
      }
    } else {
      for (let i = 0; i < inChannels; i++) {
        for (let y = 0; y < height; y++) {
          for (let x = 0; x < width; x++) {
            const v = input[i * plane + y * width + x];
            if (v === 0) continue;
            // input (y, x) meets tap (ky, kx) of the output (y + 1 - ky, x + 1 - kx)
            for (let ky = 0; ky < 3; ky++) {
              const oy = y + 1 - ky;
              if (oy < 0 || oy >= height) continue;
              for (let kx = 0; kx < 3; kx++) {
                const ox = x + 1 - kx;
                if (ox < 0 || ox >= width) continue;
                const w = (i * 9 + ky * 3 + kx) * O;
                const a = (oy * width + ox) * O;
                for (let o = 0; o < O; o++) acc[a + o] += v * weight[w + o];
              }
            }
          }
        }
      }
    }
    for (let p = 0; p < plane; p++) {
      const a = p * O;
      for (let o = 0; o < O; o++) output[o * plane + p] = acc[a + o];
    }
  }
}

/** F.pixel_shuffle(x, 2) for one picture: (4C, H, W) to (C, 2H, 2W); out[c, 2y+i, 2x+j] = in[4c+2i+j, y, x]. */
export function pixelShuffle2(input, channels, height, width) {
  if (input.length !== 4 * channels * height * width) {
    throw new RangeError(`input of ${input.length} values for ${4 * channels}x${height}x${width}`);
  }
  const output = new Float64Array(input.length);
  const plane = height * width;
  const outWidth = 2 * width;
  for (let c = 0; c < channels; c++) {
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 2; j++) {
        const source = (4 * c + 2 * i + j) * plane;
        const target = c * 4 * plane + i * outWidth + j;
        for (let y = 0; y < height; y++) {
          for (let x = 0; x < width; x++) output[target + 2 * y * outWidth + 2 * x] = input[source + y * width + x];
        }
      }
    }
  }
  return output;
}

/** Channel-wise concatenation of (C_k, H, W) arrays (torch.cat(dim=1) with batch 1). */
export function concatenate(...parts) {
  let total = 0;
  for (const part of parts) total += part.length;
  const output = new Float64Array(total);
  let at = 0;
  for (const part of parts) {
    output.set(part, at);
    at += part.length;
  }
  return output;
}
