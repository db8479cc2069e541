// The synthesis network in the browser: a layer's latents (symbols + means, from entropy.js) to the
// increment of each tile's reconstruction. It is codec.model.ResidualDecoder in float32, as the Python
// decoder runs it (codec.model.ScalableCodec.synthesise), on the weights of `synthesis-weights.bin`
// (codec/web_export.py): a recurrent refiner at 1/16 (a 1x1 reduction, a ConvLSTM cell, a 3x3 expansion)
// and the transform's synthesis: the lapped one (every latent position's 32x32 patch of basis images,
// overlapped by 16) or the wavelet (wavelet.js). The convolutions run in kernel.js's float32 SIMD product;
// the rest is plain JavaScript.
// When the weights have a post-filter (postfilter.js), the picture shown is filtered in windows across the
// tile borders (windows.js, picture.js).
//
// This is float arithmetic, not the exact grid: its pixels agree with Python's within ±1 (the contract of
// docs/format.md, Determinism), while the symbols, which come from the exact path, are identical.

import { allChannels, biasedConvolution, liveChannels, placedWeights, productKernel, productSums } from "./kernel.js";
import { PostFilter } from "./postfilter.js";
import { WaveletSynthesis } from "./wavelet.js";

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
    const transform = part.transform;
    if (transform === "lapped") expect("synthesis.weight", [m, 3, PATCH, PATCH]);
    else if (transform !== "wavelet") throw new SynthesisError(`this decoder has no ${transform} synthesis`);
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
    // (c * 32 + ky) * 32 + kx: synthesis.weight (m, 3, 32, 32) is its weights, input-major
    if (transform === "lapped") {
      const patchValues = 3 * PATCH * PATCH;
      this.patches = placedWeights(kernel, tensor("synthesis.weight").data, patchValues, m, 1, { inputMajor: true });
    } else {
      this.wavelet = new WaveletSynthesis(part.wavelet, json.config.luma_coefficients, json.config.chroma_coefficients);
    }
    this.postFilter = part.post_filter ? new PostFilter(part.post_filter, tensor, kernel, this.layers) : null;
  }

  newTile(height, width) {
    return new TileSynthesisState(this, height, width);
  }

  /** One convolution with its bias, into a new Float32Array (channels, h, w). */
  convolve(convolution, input, channels, h, w) {
    return biasedConvolution(this.kernel, convolution, input, channels, h, w);
  }

  /**
   * Add the next layer's increment to every tile in `tiles` ([{state, latents}], all at the same layer),
   * `latents` the Float64Array (C, h/16, w/16) of symbols + means. Updates each state in place.
   */
  synthesise(tiles) {
    for (const { state, latents } of tiles) this.synthesiseTile(state, latents);
  }

  // (each loop is a function of its own: V8 optimises a function once it has seen all of it run, and one
  // function of many loops went back and forth between its compilers on a first picture)
  synthesiseTile(state, latents) {
    const k = state.layer;
    if (k >= this.layers) throw new RangeError(`the model has ${this.layers} layers`);
    const [m, r] = [this.latentChannels, this.rnnChannels];
    const lh = state.height / this.latentStride;
    const lw = state.width / this.latentStride;
    const plane = lh * lw;
    if (latents.length !== m * plane) throw new RangeError(`${latents.length} latents for ${m * plane}`);
    const x = scaledLatents(latents, this.latentInverseGain[k], plane);
    // the refiner: reduce, the ConvLSTM cell on [reduced, hidden], expand, added to the coefficients
    const joined = new Float32Array(2 * r * plane);
    joined.set(this.convolve(this.reduce, x, liveChannels(x, m, plane), lh, lw));
    joined.set(state.hidden, r * plane);
    // (before the first layer the hidden state is zeros throughout: its channels add nothing)
    const gates = this.convolve(this.gates, joined, allChannels(k === 0 ? r : 2 * r), lh, lw);
    const hidden = new Float32Array(r * plane);
    const cell = new Float32Array(r * plane);
    lstmCell(gates, state.cell, hidden, cell);
    const coefficients = addInPlace(this.convolve(this.expand, hidden, allChannels(r), lh, lw), x);
    // the transform's synthesis (the lapped one: every position's patch values, overlapped), times the gain
    const increment = this.wavelet
      ? this.wavelet.synthesise(coefficients, lh, lw)
      : this.overlapAdd(state, productSums(this.kernel, this.patches, coefficients, allChannels(m), lh, lw));
    addScaled(state.reconstruction, increment, this.incrementGain[k]);
    state.hidden = hidden;
    state.cell = cell;
    state.layer = k + 1;
  }

  /**
   * The lapped synthesis' overlap: patch value (c, ky, kx) of latent position (y, x), output channel
   * (c * 32 + ky) * 32 + kx of `patches` (productSums of the 1x1 convolution), lands on pixel
   * (c, 16 y + ky - 8, 16 x + kx - 8) of the tile's increment; those outside the tile fall away.
   */
  overlapAdd(state, { sums, stride }) {
    const { height, width } = state;
    const lh = height / BLOCK;
    const lw = width / BLOCK;
    const increment = new Float32Array(3 * height * width);
    for (let c = 0; c < 3; c++) {
      for (let ky = 0; ky < PATCH; ky++) {
        for (let y = 0; y < lh; y++) {
          const py = y * BLOCK + ky - PADDING;
          if (py < 0 || py >= height) continue;
          const pixels = (c * height + py) * width - PADDING;
          for (let kx = 0; kx < PATCH; kx++) {
            const values = ((c * PATCH + ky) * PATCH + kx) * stride + y * lw;
            // only the first column's patches reach past the left edge, the last column's past the right
            const first = kx < PADDING ? 1 : 0;
            const end = kx >= PATCH - PADDING ? lw - 1 : lw;
            for (let x = first, at = pixels + kx + first * BLOCK; x < end; x++, at += BLOCK) {
              increment[at] += sums[values + x];
            }
          }
        }
      }
    }
    return increment;
  }
}

/** The latents (float64 symbols + means) in float32, times their channel's inverse gain. */
function scaledLatents(latents, inverseGain, plane) {
  const x = new Float32Array(latents.length);
  for (let i = 0; i < x.length; i++) x[i] = Math.fround(latents[i]) * inverseGain[(i / plane) | 0];
  return x;
}

/** The ConvLSTM cell's step from its gates (input, forget, output, candidate) and the previous cell. */
function lstmCell(gates, previousCell, hidden, cell) {
  const size = previousCell.length;
  for (let i = 0; i < size; i++) {
    const c = sigmoid(gates[size + i]) * previousCell[i] + sigmoid(gates[i]) * Math.tanh(gates[3 * size + i]);
    cell[i] = c;
    hidden[i] = sigmoid(gates[2 * size + i]) * Math.tanh(cell[i]);
  }
}

function addInPlace(values, more) {
  for (let i = 0; i < values.length; i++) values[i] += more[i];
  return values;
}

/** reconstruction += float32(increment * gain), in place. */
function addScaled(reconstruction, increment, gain) {
  for (let i = 0; i < reconstruction.length; i++) reconstruction[i] += Math.fround(increment[i] * gain);
}

/**
 * codec.coding.to_pixels for one tile: round(clamp(r, 0, 1) * 255) of the (tile.width x tile.height)
 * part at (`left`, `top`) of a picture `picture` of size {height, width} (3 planes: a tile's padded
 * reconstruction, or a filter window's shown picture), as RGBA (Uint8ClampedArray). A Uint8ClampedArray
 * stores a number clamped to 0..255 and rounded halves to even, as torch rounds; r * 255 is rounded to
 * float32 first, as torch computes it (clamping before or after the product gives the same bytes).
 */
export function tilePixels(picture, size, tile, left = 0, top = 0) {
  const { height: pictureHeight, width: pictureWidth } = size;
  const plane = pictureHeight * pictureWidth;
  const rgba = new Uint8ClampedArray(4 * tile.width * tile.height).fill(255); // alpha
  for (let channel = 0; channel < 3; channel++) {
    for (let row = 0; row < tile.height; row++) {
      const source = channel * plane + (top + row) * pictureWidth + left;
      const target = 4 * row * tile.width + channel;
      for (let column = 0; column < tile.width; column++) {
        rgba[target + 4 * column] = Math.fround(picture[source + column] * 255);
      }
    }
  }
  return rgba;
}
