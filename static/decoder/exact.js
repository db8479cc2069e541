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

import { convolutionSums, liveChannels, placedWeights, productKernel } from "./kernel.js";

export const WEIGHT_BITS = 12;
export const ACTIVATION_BITS = 10;
export const WEIGHT_LIMIT = 8.0; // |w| <= 2^3
export const ACTIVATION_LIMIT = 256.0; // |a| <= 2^8
export const MAX_TERMS = 2 ** 11;

const ACTIVATION_SCALE = 2 ** ACTIVATION_BITS;

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

/** `values` (channels, plane) + bias[channel], in place; returns it. */
function addBias(values, bias, plane) {
  for (let p = 0; p < values.length; p++) values[p] += bias[(p / plane) | 0];
  return values;
}

/** `hardSigmoid` applied to every element of `values`, in place; returns it. */
export function hardSigmoidInPlace(values) {
  for (let i = 0; i < values.length; i++) values[i] = hardSigmoid(values[i]);
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
    this.placed = placedWeights(productKernel("f64"), weight, outChannels, inChannels, kernelSize);
  }

  /**
   * ExactConv2d.forward(x, exact=True) for one picture: `input` (inChannels, height, width), NCHW with
   * batch 1, on the activation grid; the output (outChannels, height, width), snapped to it
   * (`activation`). The sums are exact (see the top of this file), so their order is free: kernel.js's
   * register-tiled product, which leaves out the input channels that are zeros throughout (a ReLU leaves
   * many), gives torch's sums to the last bit.
   */
  forward(input, height, width) {
    const output = this.sums(input, height, width);
    return activationInPlace(addBias(output, this.bias, height * width));
  }

  /** The convolution's sums (no bias, not snapped) of `input`, as `forward` takes it, into a new Float64Array. */
  sums(input, height, width) {
    const { inChannels, outChannels, kernelSize } = this;
    const plane = height * width;
    if (input.length !== inChannels * plane) {
      throw new RangeError(`input of ${input.length} values for ${inChannels}x${height}x${width}`);
    }
    const live = liveChannels(input, inChannels, plane);
    const output = new Float64Array(outChannels * plane);
    return convolutionSums(productKernel("f64"), this.placed, input, live, height, width, output);
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
