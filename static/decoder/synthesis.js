// The synthesis network in the browser: a layer's latents (symbols + means, from entropy.js) to the
// increment of each tile's reconstruction, through the model's ONNX graph (`synthesis.onnx`, written by
// `python -m codec export-onnx` and served under the model id) and ONNX Runtime Web. The arithmetic
// around the graph is codec.model.ScalableCodec.synthesise in float32, as the Python decoder runs it.
//
// The graph is float arithmetic, not the exact grid: its pixels agree with Python's within ±1 (the
// contract of docs/format.md, Determinism), while the symbols, which come from the exact path, are
// identical.

import { roundHalfEven } from "./exact.js";

/** An export whose synthesis part this decoder cannot use. */
export class SynthesisError extends Error {
  constructor(message) {
    super(message);
    this.name = "SynthesisError";
  }
}

/** One tile's float state: the running reconstruction (3, H, W) and the decoder's LSTM state at 1/16. */
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

export class Synthesis {
  /**
   * `ort` is the ONNX Runtime Web module, `graph` the bytes of synthesis.onnx, `json` the entropy-path
   * export of the same model (its `synthesis` gains and `config`).
   */
  static async load(ort, graph, json, executionProviders = ["wasm"]) {
    const session = await ort.InferenceSession.create(graph, { executionProviders, graphOptimizationLevel: "all" });
    return new Synthesis(ort, session, json);
  }

  constructor(ort, session, json) {
    const gains = json.synthesis;
    if (!gains) throw new SynthesisError("the export has no synthesis part (an older codec/web_export.py)");
    this.ort = ort;
    this.session = session;
    this.layers = json.config.layers;
    this.latentChannels = json.config.latent_channels;
    this.latentStride = json.constants.latent_stride;
    this.rnnChannels = gains.rnn_channels;
    this.initialReconstruction = Math.fround(gains.initial_reconstruction);
    this.latentInverseGain = gains.latent_inverse_gain.map((row) => Float32Array.from(row));
    this.incrementGain = Float32Array.from(gains.increment_gain);
    if (this.latentInverseGain.length !== this.layers || this.incrementGain.length !== this.layers) {
      throw new SynthesisError(`synthesis gains for ${this.incrementGain.length} layers, the model has ${this.layers}`);
    }
  }

  newTile(height, width) {
    return new TileSynthesisState(this, height, width);
  }

  /**
   * Add the next layer's increment to every tile in `tiles` ([{state, latents}], one padded size, all at
   * the same layer), `latents` the Float64Array (C, h/16, w/16) of symbols + means: the tiles run through
   * the graph as one batch, as codec.api.Decoder batches them. Updates each state in place.
   */
  async synthesise(tiles) {
    if (!tiles.length) return;
    const { height, width, layer: k } = tiles[0].state;
    if (tiles.some(({ state }) => state.height !== height || state.width !== width || state.layer !== k)) {
      throw new RangeError("a batch holds tiles of one padded size at one layer");
    }
    if (k >= this.layers) throw new RangeError(`the model has ${this.layers} layers`);
    const n = tiles.length;
    const lh = height / this.latentStride;
    const lw = width / this.latentStride;
    const plane = lh * lw;
    const latentSize = this.latentChannels * plane;
    const stateSize = this.rnnChannels * plane;
    const input = new Float32Array(n * latentSize);
    const hidden = new Float32Array(n * stateSize);
    const cell = new Float32Array(n * stateSize);
    const inverseGain = this.latentInverseGain[k];
    tiles.forEach(({ state, latents }, t) => {
      if (latents.length !== latentSize) throw new RangeError(`${latents.length} latents for ${latentSize}`);
      const base = t * latentSize;
      for (let c = 0; c < this.latentChannels; c++) {
        const gain = inverseGain[c];
        for (let i = c * plane, end = i + plane; i < end; i++) input[base + i] = Math.fround(latents[i]) * gain;
      }
      hidden.set(state.hidden, t * stateSize);
      cell.set(state.cell, t * stateSize);
    });
    const { Tensor } = this.ort;
    const outputs = await this.session.run({
      input: new Tensor("float32", input, [n, this.latentChannels, lh, lw]),
      hidden: new Tensor("float32", hidden, [n, this.rnnChannels, lh, lw]),
      cell: new Tensor("float32", cell, [n, this.rnnChannels, lh, lw]),
    });
    const increment = outputs.output.data;
    const nextHidden = outputs.next_hidden.data;
    const nextCell = outputs.next_cell.data;
    const gain = this.incrementGain[k];
    const pictureSize = 3 * height * width;
    tiles.forEach(({ state }, t) => {
      const reconstruction = state.reconstruction;
      const base = t * pictureSize;
      for (let i = 0; i < pictureSize; i++) reconstruction[i] = reconstruction[i] + Math.fround(increment[base + i] * gain);
      state.hidden = nextHidden.slice(t * stateSize, (t + 1) * stateSize);
      state.cell = nextCell.slice(t * stateSize, (t + 1) * stateSize);
      state.layer = k + 1;
    });
    for (const output of Object.values(outputs)) output.dispose?.();
  }
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
