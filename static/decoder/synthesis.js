// The synthesis network in the browser: a layer's latents (symbols + means, from entropy.js) to the
// increment of each tile's reconstruction. It is codec.model.ResidualDecoder in float32, as the Python
// decoder runs it (codec.model.ScalableCodec.synthesise), on the weights of `synthesis-weights.bin`
// (codec/web_export.py): a recurrent refiner at 1/16 (a 1x1 reduction, a ConvLSTM cell, a 3x3 expansion)
// and the lapped synthesis (every latent position's 32x32 patch of basis images, overlapped by 16). The
// convolutions run in kernel.js's float32 SIMD product; the rest is plain JavaScript.
//
// This is float arithmetic, not the exact grid: its pixels agree with Python's within ±1 (the contract of
// docs/format.md, Determinism), while the symbols, which come from the exact path, are identical.

import { roundHalfEven } from "./exact.js";
import { convolutionSums, placedWeights, productKernel } from "./kernel.js";

const BLOCK = 16; // codec.transforms: the lapped synthesis' stride, its patches' size and their overlap
const PATCH = 32;
const PADDING = (PATCH - BLOCK) / 2;

/** An export whose synthesis part this decoder cannot use. */
export class SynthesisError extends Error {
  constructor(message) {
    super(message);
    this.name = "SynthesisError";
  }
}

/** One tile's float state: the running reconstruction (3, H, W) and the refiner's LSTM state at 1/16. */
export class TileSynthesisState {
  constructor(synthesis, height, width) {
    this.height = height;
    this.width = width;
    this.layer = 0;
    this.reconstruction = new Float32Array(3 * height * width).fill(synthesis.initialReconstruction);
    const plane = (height / synthesis.latentStride) * (width / synthesis.latentStride);
    this.hidden = new Float32Array(synthesis.rnnChannels * plane);
    this.cell = new Float32Array(synthesis.rnnChannels * plane);
  }
}

const sigmoid = (x) => 1 / (1 + Math.exp(-x));

export class Synthesis {
  /**
   * `json` is the entropy-path export of the model (its `synthesis` part: shapes and gains, and its
   * `config`), `weights` the bytes (ArrayBuffer) of its synthesis-weights.bin.
   */
  constructor(json, weights) {
    const part = json.synthesis;
    if (!part?.tensors) throw new SynthesisError("the export has no synthesis weights (an older codec/web_export.py)");
    const counts = part.tensors.map(({ shape }) => shape.reduce((a, b) => a * b, 1));
    const total = counts.reduce((a, b) => a + b, 0);
    if (weights.byteLength !== 4 * total) {
      throw new SynthesisError(`${weights.byteLength} bytes of synthesis weights for ${total} float32 values`);
    }
    const values = new Float32Array(weights); // little-endian float32, as every browser is
    const tensors = new Map(); // name -> {shape, data}, in the order the export lists them
    let at = 0;
    part.tensors.forEach(({ name, shape }, i) => {
      tensors.set(name, { shape, data: values.subarray(at, at + counts[i]) });
      at += counts[i];
    });
    const tensor = (name) => {
      if (!tensors.has(name)) throw new SynthesisError(`the synthesis weights have no ${name}`);
      return tensors.get(name);
    };
    this.layers = json.config.layers;
    this.latentChannels = json.config.latent_channels;
    this.latentStride = json.constants.latent_stride;
    this.rnnChannels = part.rnn_channels;
    this.initialReconstruction = Math.fround(part.initial_reconstruction);
    this.latentInverseGain = part.latent_inverse_gain.map((row) => Float32Array.from(row));
    this.incrementGain = Float32Array.from(part.increment_gain);
    if (this.latentInverseGain.length !== this.layers || this.incrementGain.length !== this.layers) {
      throw new SynthesisError(`synthesis gains for ${this.incrementGain.length} layers, the model has ${this.layers}`);
    }
    const [m, r] = [this.latentChannels, this.rnnChannels];
    const expect = (name, shape) => {
      if (tensor(name).shape.join() !== shape.join()) {
        throw new SynthesisError(`${name} has shape ${tensor(name).shape}, the network needs ${shape}`);
      }
    };
    expect("refiner.reduce.weight", [r, m, 1, 1]);
    expect("refiner.rnn.gates.weight", [4 * r, 2 * r, 3, 3]);
    expect("refiner.expand.weight", [m, r, 3, 3]);
    expect("synthesis.weight", [m, 3, PATCH, PATCH]);
    const kernel = productKernel("f32");
    this.kernel = kernel;
    const convolution = (name, inChannels, outChannels, size) => ({
      placed: placedWeights(kernel, tensor(`${name}.weight`).data, outChannels, inChannels, size),
      bias: tensor(`${name}.bias`).data,
    });
    this.reduce = convolution("refiner.reduce", m, r, 1);
    this.gates = convolution("refiner.rnn.gates", 2 * r, 4 * r, 3);
    this.expand = convolution("refiner.expand", r, m, 3);
    // the lapped synthesis as a 1x1 convolution from the m coefficients to every patch value
    // (c * 32 + ky) * 32 + kx: the transpose of synthesis.weight (m, 3 * 32 * 32)
    const basis = tensor("synthesis.weight").data;
    const patchValues = 3 * PATCH * PATCH;
    const transposed = new Float32Array(patchValues * m);
    for (let i = 0; i < m; i++) {
      for (let v = 0; v < patchValues; v++) transposed[v * m + i] = basis[i * patchValues + v];
    }
    this.patches = { placed: placedWeights(kernel, transposed, patchValues, m, 1), bias: null };
  }

  newTile(height, width) {
    return new TileSynthesisState(this, height, width);
  }

  /** One convolution with its bias, into a new Float32Array (channels, h, w). */
  convolve({ placed, bias }, input, channels, h, w) {
    const output = new Float32Array(placed.outChannels * h * w);
    convolutionSums(this.kernel, placed, input, channels, h, w, output);
    if (bias) {
      const plane = h * w;
      for (let o = 0; o < placed.outChannels; o++) {
        const b = bias[o];
        for (let p = o * plane; p < (o + 1) * plane; p++) output[p] += b;
      }
    }
    return output;
  }

  /**
   * Add the next layer's increment to every tile in `tiles` ([{state, latents}], all at the same layer),
   * `latents` the Float64Array (C, h/16, w/16) of symbols + means. Updates each state in place.
   */
  synthesise(tiles) {
    for (const { state, latents } of tiles) this.synthesiseTile(state, latents);
  }

  synthesiseTile(state, latents) {
    const k = state.layer;
    if (k >= this.layers) throw new RangeError(`the model has ${this.layers} layers`);
    const [m, r] = [this.latentChannels, this.rnnChannels];
    const lh = state.height / this.latentStride;
    const lw = state.width / this.latentStride;
    const plane = lh * lw;
    if (latents.length !== m * plane) throw new RangeError(`${latents.length} latents for ${m * plane}`);
    const inverseGain = this.latentInverseGain[k];
    const x = new Float32Array(m * plane);
    const live = [];
    for (let c = 0; c < m; c++) {
      const gain = inverseGain[c];
      let any = false;
      for (let i = c * plane, end = i + plane; i < end; i++) {
        x[i] = Math.fround(latents[i]) * gain;
        any ||= x[i] !== 0;
      }
      if (any) live.push(c);
    }
    // the refiner: reduce, the ConvLSTM cell on [reduced, hidden], expand, added to the coefficients
    const joined = new Float32Array(2 * r * plane);
    joined.set(this.convolve(this.reduce, x, live, lh, lw));
    joined.set(state.hidden, r * plane);
    // (before the first layer the hidden state is zeros throughout: its channels add nothing)
    const gates = this.convolve(this.gates, joined, allChannels(k === 0 ? r : 2 * r), lh, lw);
    const hidden = new Float32Array(r * plane);
    const cell = new Float32Array(r * plane);
    const size = r * plane;
    for (let i = 0; i < size; i++) {
      const c = sigmoid(gates[size + i]) * state.cell[i] + sigmoid(gates[i]) * Math.tanh(gates[3 * size + i]);
      cell[i] = c;
      hidden[i] = sigmoid(gates[2 * size + i]) * Math.tanh(cell[i]);
    }
    const coefficients = this.convolve(this.expand, hidden, allChannels(r), lh, lw);
    for (let i = 0; i < coefficients.length; i++) coefficients[i] += x[i];
    // the lapped synthesis: every position's patch values, overlapped into the increment, times the gain
    const patches = this.convolve(this.patches, coefficients, allChannels(m), lh, lw);
    const { height, width, reconstruction } = state;
    const increment = new Float32Array(3 * height * width);
    for (let c = 0; c < 3; c++) {
      for (let ky = 0; ky < PATCH; ky++) {
        for (let kx = 0; kx < PATCH; kx++) {
          const row = ((c * PATCH + ky) * PATCH + kx) * plane;
          for (let y = 0; y < lh; y++) {
            const py = y * BLOCK + ky - PADDING;
            if (py < 0 || py >= height) continue;
            for (let xx = 0; xx < lw; xx++) {
              const px = xx * BLOCK + kx - PADDING;
              if (px < 0 || px >= width) continue;
              increment[(c * height + py) * width + px] += patches[row + y * lw + xx];
            }
          }
        }
      }
    }
    const gain = this.incrementGain[k];
    for (let i = 0; i < reconstruction.length; i++) reconstruction[i] = reconstruction[i] + Math.fround(increment[i] * gain);
    state.hidden = hidden;
    state.cell = cell;
    state.layer = k + 1;
  }
}

const channelLists = new Map();

/** [0, 1, ..., count - 1], made once per count. */
function allChannels(count) {
  if (!channelLists.has(count)) channelLists.set(count, Array.from({ length: count }, (_, i) => i));
  return channelLists.get(count);
}

/**
 * codec.coding.to_pixels for one tile: round(clamp(r, 0, 1) * 255) of the top-left (tile.width x
 * tile.height) of its padded reconstruction, as RGBA (Uint8ClampedArray). Rounding is torch's: halves to even.
 */
export function tilePixels(state, tile) {
  const { reconstruction, height: paddedHeight, width: paddedWidth } = state;
  const plane = paddedHeight * paddedWidth;
  const rgba = new Uint8ClampedArray(4 * tile.width * tile.height);
  for (let row = 0, target = 0; row < tile.height; row++) {
    for (let column = 0, source = row * paddedWidth; column < tile.width; column++, source++, target += 4) {
      for (let channel = 0; channel < 3; channel++) {
        const value = reconstruction[channel * plane + source];
        rgba[target + channel] = roundHalfEven(Math.fround((value < 0 ? 0 : value > 1 ? 1 : value) * 255));
      }
      rgba[target + 3] = 255;
    }
  }
  return rgba;
}
