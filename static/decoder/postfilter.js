// The post-filter in the browser: codec/postfilter.py's PostFilter in float32, on the post-filter part of
// `synthesis-weights.bin`. It changes only the picture shown, never the running reconstruction the next
// layer refines, so the symbols do not depend on it and its pixels follow the ±1 contract of the synthesis.
//
// The network runs on a window of the assembled picture (windows.js) at half resolution (2x2 pixels
// folded into 12 channels): a 3x3 head over the folded pixels and a one-hot of each position's row and
// column inside the 16x16 block grid, with a per-layer bias, ReLU; 3x3 convolutions with ReLU; a 3x3 tail
// back to the 12 folded channels, unfolded and added to the reconstruction. The block-grid part of the
// head depends only on the window's size (windows start on the block grid), so it is computed once per
// size (with the head's bias) and added, not convolved.

import { allChannels, biasedConvolution, placedWeights } from "./kernel.js";

/** A post-filter part of an export this decoder cannot run. */
export class PostFilterError extends Error {
  constructor(message) {
    super(message);
    this.name = "PostFilterError";
  }
}

const GROUP = 2; // pixels per side folded into channels (codec.postfilter.GROUP)
const FOLDED = 3 * GROUP * GROUP;

export class PostFilter {
  /**
   * `part` the export's `synthesis.post_filter` ({channels, depth, group, phases}), `tensor(name)` the
   * synthesis weights' tensors by name ({shape, data}), `kernel` kernel.js's float32 product, `layers` the
   * model's layer count.
   */
  constructor(part, tensor, kernel, layers) {
    const { channels, depth, group, phases } = part;
    if (group !== GROUP) {
      throw new PostFilterError(`a post-filter on ${group}x${group} groups; this decoder folds ${GROUP}x${GROUP}`);
    }
    const expect = (name, shape) => {
      if (tensor(name).shape.join() !== shape.join()) {
        throw new PostFilterError(`${name} has shape ${tensor(name).shape}, the post-filter needs ${shape}`);
      }
      return tensor(name).data;
    };
    this.kernel = kernel;
    this.channels = channels;
    this.phases = phases;
    const head = expect("post_filter.head.weight", [channels, FOLDED + 2 * phases, 3, 3]);
    // the head's weights split by input: the folded pixels, then the block-grid one-hot
    const taps = 9;
    const pixelWeights = new Float32Array(channels * FOLDED * taps);
    const phaseWeights = new Float32Array(channels * 2 * phases * taps);
    for (let o = 0; o < channels; o++) {
      const row = head.subarray(o * (FOLDED + 2 * phases) * taps, (o + 1) * (FOLDED + 2 * phases) * taps);
      pixelWeights.set(row.subarray(0, FOLDED * taps), o * FOLDED * taps);
      phaseWeights.set(row.subarray(FOLDED * taps), o * 2 * phases * taps);
    }
    this.headPixels = {
      placed: placedWeights(kernel, pixelWeights, channels, FOLDED, 3),
      bias: new Float32Array(channels), // the head's bias is in the block-grid part
    };
    this.headPhase = {
      placed: placedWeights(kernel, phaseWeights, channels, 2 * phases, 3),
      bias: expect("post_filter.head.bias", [channels]),
    };
    const layerBias = expect("post_filter.layer_bias", [layers, channels]);
    this.layerBias = Array.from({ length: layers }, (_, k) => layerBias.subarray(k * channels, (k + 1) * channels));
    const convolution = (name, inChannels, outChannels) => ({
      placed: placedWeights(kernel, expect(`${name}.weight`, [outChannels, inChannels, 3, 3]), outChannels, inChannels, 3),
      bias: expect(`${name}.bias`, [outChannels]),
    });
    this.body = Array.from({ length: depth - 1 }, (_, i) => convolution(`post_filter.body.${i}`, channels, channels));
    this.tail = convolution("post_filter.tail", channels, FOLDED);
    this.blockGrid = new Map(); // "h x w" -> the head's block-grid part and bias (channels, h, w)
  }

  /**
   * The picture shown after layer `layer` (from 1) of a window of the assembled picture (3, height,
   * width; both even; on the block grid) that is `reconstruction`: a new Float32Array of the same shape.
   */
  shown(reconstruction, height, width, layer) {
    const h = height / GROUP;
    const w = width / GROUP;
    const c = this.channels;
    const folded = fold(reconstruction, height, width);
    let features = biasedConvolution(this.kernel, this.headPixels, folded, allChannels(FOLDED), h, w);
    addHeadBiases(features, this.blockGridPart(h, w), this.layerBias[layer - 1], h * w);
    for (const convolution of this.body) {
      features = relu(biasedConvolution(this.kernel, convolution, features, allChannels(c), h, w));
    }
    const correction = biasedConvolution(this.kernel, this.tail, features, allChannels(c), h, w);
    return unfoldAdded(reconstruction, correction, height, width);
  }

  /** The head's block-grid part with its bias for a (h, w) half-resolution window, made once per size. */
  blockGridPart(h, w) {
    const key = `${h}x${w}`;
    if (!this.blockGrid.has(key)) {
      const p = this.phases;
      const phase = new Float32Array(2 * p * h * w); // codec.postfilter.block_phase: rows' one-hot, then columns'
      for (let y = 0; y < h; y++) phase.fill(1, (y % p) * h * w + y * w, (y % p) * h * w + (y + 1) * w);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) phase[(p + (x % p)) * h * w + y * w + x] = 1;
      }
      this.blockGrid.set(key, biasedConvolution(this.kernel, this.headPhase, phase, allChannels(2 * p), h, w));
    }
    return this.blockGrid.get(key);
  }
}

/** torch's pixel_unshuffle by 2: (3, H, W) to (12, H/2, W/2), channel (c * 2 + i) * 2 + j from pixel (2y + i, 2x + j). */
function fold(reconstruction, height, width) {
  const h = height / GROUP;
  const w = width / GROUP;
  const folded = new Float32Array(reconstruction.length);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < GROUP; i++) {
      for (let j = 0; j < GROUP; j++) {
        const plane = ((c * GROUP + i) * GROUP + j) * h * w;
        for (let y = 0; y < h; y++) {
          const source = (c * height + GROUP * y + i) * width + j;
          for (let x = 0; x < w; x++) folded[plane + y * w + x] = reconstruction[source + GROUP * x];
        }
      }
    }
  }
  return folded;
}

/** The head's sums + its block-grid part + the layer's bias, then ReLU, in place. */
function addHeadBiases(features, blockGrid, layerBias, plane) {
  for (let p = 0; p < features.length; p++) {
    features[p] = Math.max(0, features[p] + blockGrid[p] + layerBias[(p / plane) | 0]);
  }
}

function relu(values) {
  for (let i = 0; i < values.length; i++) values[i] = Math.max(0, values[i]);
  return values;
}

/** reconstruction + pixel_shuffle(correction): a new (3, H, W) Float32Array. */
function unfoldAdded(reconstruction, correction, height, width) {
  const h = height / GROUP;
  const w = width / GROUP;
  const shown = Float32Array.from(reconstruction);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < GROUP; i++) {
      for (let j = 0; j < GROUP; j++) {
        const plane = ((c * GROUP + i) * GROUP + j) * h * w;
        for (let y = 0; y < h; y++) {
          const target = (c * height + GROUP * y + i) * width + j;
          for (let x = 0; x < w; x++) shown[target + GROUP * x] += correction[plane + y * w + x];
        }
      }
    }
  }
  return shown;
}
