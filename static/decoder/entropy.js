// The exact entropy-parameter path in the browser: for each tile, layer by layer, the CDF row and the mean
// of every latent, exactly as the Python decoder derives them (ScalableCodec.entropy_parameters in exact
// mode, then quantized_scale_index), and with them every layer's side and latent symbols decoded from the
// file (container.js, rans.js). The data come from codec/web_export.py, bound to one model id.
//
// Only what the entropy path needs is here: the hyper-decoder and the history of the symbols. The
// synthesis network (the pixels) is not. Models with a frequency context are refused.

import { CodecError, CorruptLayerError, crc32, parseHeader, tilePayload } from "./container.js";
import {
  ACTIVATION_BITS,
  ACTIVATION_LIMIT,
  ExactConvolution,
  MAX_TERMS,
  WEIGHT_BITS,
  WEIGHT_LIMIT,
  activation,
  activationInPlace,
  clampInPlace,
  concatenate,
  hardSigmoidInPlace,
  pixelShuffle2,
  reluInPlace,
  roundHalfEven,
} from "./exact.js";
import { RansDecoder, RansTables } from "./rans.js";
import { significantNeighbours } from "./wavelet.js";

export const EXPORT_FORMAT = "scalable-codec-entropy-path";
export const EXPORT_VERSION = 6;
const CONVOLUTIONS = ["up32", "up16", "history", "gate", "candidate", "mix", "params"];

/** A file written by other weights than the export's (codec.errors.ModelMismatchError). */
export class ModelMismatchError extends CodecError {}

/** An export this decoder cannot use (wrong format or version, a frequency context, other constants). */
export class EntropyPathError extends Error {
  constructor(message) {
    super(message);
    this.name = "EntropyPathError";
  }
}

function numerators({ shape, bits, dtype, base64 }) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  const view = new DataView(bytes.buffer);
  const count = shape.reduce((a, b) => a * b, 1);
  const width = dtype === "int16" ? 2 : dtype === "int32" ? 4 : 0;
  if (!width) throw new EntropyPathError(`unknown dtype ${dtype}`);
  if (bytes.length !== count * width) throw new EntropyPathError(`${bytes.length} bytes for ${count} ${dtype} values`);
  const values = new Float64Array(count);
  const scale = 2 ** bits;
  for (let i = 0; i < count; i++) {
    values[i] = (width === 2 ? view.getInt16(2 * i, true) : view.getInt32(4 * i, true)) / scale;
  }
  return values;
}

/**
 * Weights from their numerators over 2^WEIGHT_BITS: on the grid by construction, and int16 numerators
 * within ±WEIGHT_LIMIT too; int32 ones are checked against it here, once, instead of every value again.
 */
function gridWeights(packed) {
  const values = numerators(packed);
  if (packed.dtype !== "int16" && values.some((v) => Math.abs(v) > WEIGHT_LIMIT)) {
    throw new EntropyPathError(`a weight beyond ±${WEIGHT_LIMIT}`);
  }
  return values;
}

function sameConstant(name, got, expected) {
  if (got !== expected) throw new EntropyPathError(`export has ${name} ${got}; this decoder computes with ${expected}`);
}

/**
 * The entropy path of one model, from the JSON that codec/web_export.py writes (`export_entropy_path`):
 * the hyper-decoder's convolutions on the weight grid, per-layer scale offsets and history weights, side
 * medians, and the rANS tables of the latents and of every layer's side information.
 */
export class EntropyPath {
  constructor(json) {
    if (json.format !== EXPORT_FORMAT || json.version !== EXPORT_VERSION) {
      throw new EntropyPathError(
        `not an entropy-path export of version ${EXPORT_VERSION} (${json.format} ${json.version})`,
      );
    }
    const { config, constants } = json;
    if (config.context_channels) {
      throw new EntropyPathError(
        `this model has a frequency context (context_channels ${config.context_channels}); ` +
          "the browser decoder has none",
      );
    }
    sameConstant("weight_bits", constants.weight_bits, WEIGHT_BITS);
    sameConstant("activation_bits", constants.activation_bits, ACTIVATION_BITS);
    sameConstant("weight_limit", constants.weight_limit, WEIGHT_LIMIT);
    sameConstant("activation_limit", constants.activation_limit, ACTIVATION_LIMIT);
    sameConstant("max_terms", constants.max_terms, MAX_TERMS);
    this.modelId = json.model_id;
    this.layers = config.layers;
    this.latentChannels = config.latent_channels;
    this.hyperChannels = config.hyper_channels;
    this.historyChannels = config.history_channels;
    this.sideChannels = config.side_channels;
    this.scaleLevels = constants.scale_levels;
    this.historyMagnitudeLimit = constants.history_magnitude_limit;
    this.latentStride = constants.latent_stride;
    this.sideStride = constants.side_stride;
    const m = this.latentChannels;
    const h = this.hyperChannels;
    const joint = 2 * h + this.historyChannels;
    // HyperDecoder's convolutions: [in, out, kernel]
    const shapes = {
      up32: [this.sideChannels, 4 * h, 3],
      up16: [h, 4 * h, 3],
      history: [2 * m, this.historyChannels, 1],
      gate: [joint, h, 3],
      candidate: [joint, h, 3],
      mix: [joint, 2 * h, 1],
      params: [2 * h, 2 * m, 1],
    };
    this.convolutions = {};
    for (const name of CONVOLUTIONS) {
      const c = json.hyper_decoder[name];
      const shape = [c.in_channels, c.out_channels, c.kernel_size];
      if (shape.join() !== shapes[name].join() || c.padding !== c.kernel_size >> 1) {
        throw new EntropyPathError(`${name}: ${shape.join("x")} padding ${c.padding}, not the hyper-decoder's`);
      }
      if (c.weight.bits !== WEIGHT_BITS || c.bias.bits !== WEIGHT_BITS) {
        throw new EntropyPathError(`${name}: not on the weight grid`);
      }
      this.convolutions[name] = new ExactConvolution({
        inChannels: c.in_channels,
        outChannels: c.out_channels,
        kernelSize: c.kernel_size,
        weight: gridWeights(c.weight),
        bias: gridWeights(c.bias),
        onGrid: true,
      });
    }
    const perLayer = (rows, width, what) => {
      if (rows.length !== this.layers || rows.some((row) => row.flat().length !== width)) {
        throw new EntropyPathError(`${what}: not ${this.layers} layers of ${width}`);
      }
    };
    perLayer(json.scale_index_offset, m, "scale_index_offset");
    perLayer(json.history_scale_weights, 3 * m, "history_scale_weights");
    perLayer(json.side_medians, this.sideChannels, "side_medians");
    // the offsets as entropy_parameters snaps them (2^-10 grid within ±SCALE_LEVELS), the history weights
    // as _history_scale does (the weight grid)
    this.scaleIndexOffset = json.scale_index_offset.map((row) =>
      Float64Array.from(row, (n) => n / 2 ** ACTIVATION_BITS),
    );
    this.historyScaleWeights = json.history_scale_weights.map((rows) =>
      rows.map((row) => Float64Array.from(row, (n) => n / 2 ** WEIGHT_BITS)),
    );
    this.sideMedians = json.side_medians.map((row) => Float64Array.from(row, Math.fround));
    this.latentTables = new RansTables(json.rans.latent);
    this.latentRows = json.latent_rows ? new LatentRows(json.latent_rows, this, this.latentTables.rows) : null;
    if (!this.latentRows && this.latentTables.rows !== this.scaleLevels) {
      throw new EntropyPathError(`${this.latentTables.rows} latent CDF rows for ${this.scaleLevels} scale levels`);
    }
    if (json.rans.side.length !== this.layers) throw new EntropyPathError(`${json.rans.side.length} side models`);
    this.sideTables = json.rans.side.map((tables) => new RansTables(tables));
    for (const tables of this.sideTables) {
      if (tables.rows !== this.sideChannels) throw new EntropyPathError(`a side model of ${tables.rows} rows`);
    }
  }

  /** A tile's recurrent state before its first layer; `height` and `width` padded (multiples of 64). */
  newTile(height, width) {
    return new TileEntropyState(this, height, width);
  }

  /** The CDF row of every side symbol of a (height, width) tile: c for channel c (codec.rans.side_indexes). */
  sideIndexes(height, width) {
    const plane = (height / this.sideStride) * (width / this.sideStride);
    const indexes = new Int32Array(this.sideChannels * plane);
    for (let c = 0; c < this.sideChannels; c++) indexes.fill(c, c * plane, (c + 1) * plane);
    return indexes;
  }

  /**
   * Decode `layers` layers (default: every complete one in `file`) of tile `tile` of `file` (a Uint8Array,
   * any prefix of a container) entirely here: the side symbols (rANS with the side indexes), the entropy
   * parameters (`nextLayer`), the latent symbols (rANS with those rows), the history (`afterLayer`).
   * Continues from `state` (a tile's TileEntropyState at an earlier layer) when given. Returns the state
   * and, per layer, {layer, sideSymbols, latentSymbols, scaleIndexes, means, scaleIndex, checksum,
   * overran, exactMs, ransMs}: `checksum` is codec.coding.symbol_checksum of the layer's symbols.
   */
  decodeTileSymbols(file, tile, layers = undefined, state = undefined) {
    const header = parseHeader(file);
    if (header.modelId !== this.modelId) {
      throw new ModelMismatchError(`file needs model ${header.modelId}, loaded model is ${this.modelId}`);
    }
    const place = header.tiles[tile];
    if (!place) throw new RangeError(`tile ${tile} outside 0..${header.tileCount - 1}`);
    const target = layers === undefined ? header.layersWithin(file.length) : layers;
    if (!(Number.isInteger(target) && target >= 1 && target <= Math.min(header.layerCount, this.layers))) {
      throw new RangeError(`layers must be within 1..${Math.min(header.layerCount, this.layers)}`);
    }
    const height = Math.ceil(place.height / this.sideStride) * this.sideStride;
    const width = Math.ceil(place.width / this.sideStride) * this.sideStride;
    const tileState = state ?? this.newTile(height, width);
    if (tileState.height !== height || tileState.width !== width) {
      throw new RangeError(`a state of ${tileState.width}x${tileState.height} for a tile of ${width}x${height}`);
    }
    const sideIndexes = this.sideIndexes(height, width);
    const results = [];
    while (tileState.layer < target) {
      const layer = tileState.layer + 1;
      const payload = tilePayload(header, file, layer, tile);
      let started = performance.now();
      const { sideDecoder, latentDecoder } = payloadDecoders(payload, layer, header.version);
      const sideSymbols = sideDecoder.decodeStream(sideIndexes, this.sideTables[layer - 1]);
      let ransMs = performance.now() - started;
      started = performance.now();
      const { scaleIndexes, means, scaleIndex } = tileState.nextLayer(sideSymbols);
      const exactMs = performance.now() - started;
      started = performance.now();
      const latentSymbols = latentDecoder.decodeStream(scaleIndexes, this.latentTables);
      ransMs += performance.now() - started;
      tileState.afterLayer(latentSymbols);
      results.push({
        layer,
        sideSymbols,
        latentSymbols,
        scaleIndexes,
        means,
        scaleIndex,
        checksum: symbolChecksum(sideSymbols, latentSymbols),
        overran: sideDecoder.overran || latentDecoder.overran,
        exactMs,
        ransMs,
      });
    }
    return {
      tile,
      width: place.width,
      height: place.height,
      paddedWidth: width,
      paddedHeight: height,
      state: tileState,
      layers: results,
    };
  }
}

// Container versions whose payloads hold two strings behind the side string's length (codec/coding.py).
const TWO_STRING_VERSIONS = [1, 2];
const STATE_BYTES = 8; // every rANS string opens with the coder's flushed 64-bit state

/**
 * The rANS decoders a tile's layer payload is read with (docs/format.md, Tile payload): from version 3 on
 * one string, the side symbols then the latents, so both are the same decoder; before, a u32 side
 * length, the side string and the latent string.
 */
export function payloadDecoders(payload, layer, version) {
  const sideDecoder = new RansDecoder();
  if (!TWO_STRING_VERSIONS.includes(version)) {
    if (payload.length < STATE_BYTES) {
      throw new CorruptLayerError(`layer ${layer} payload is ${payload.length} bytes, shorter than a rANS state`);
    }
    sideDecoder.setStream(payload);
    return { sideDecoder, latentDecoder: sideDecoder };
  }
  if (payload.length < 4) throw new CorruptLayerError(`layer ${layer} payload is ${payload.length} bytes, too short`);
  const sideLength = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(0, true);
  if (sideLength > payload.length - 4) {
    throw new CorruptLayerError(`layer ${layer} declares ${sideLength} bytes of side information`);
  }
  sideDecoder.setStream(payload.subarray(4, 4 + sideLength));
  const latentDecoder = new RansDecoder();
  latentDecoder.setStream(payload.subarray(4 + sideLength));
  return { sideDecoder, latentDecoder };
}

/** `path.decodeTileSymbols(file, tile, layers, state)`: every layer's symbols of one tile, decoded here. */
export function decodeTileSymbols(path, file, tile, layers = undefined, state = undefined) {
  return path.decodeTileSymbols(file, tile, layers, state);
}

/**
 * The exact path's recurrent state of one tile (the entropy part of codec.model.RecurrentState): the
 * hyper-decoder state, the previous layer's latents (symbols + means), the symbols' magnitudes and
 * significance. `nextLayer` then `afterLayer`, once per layer, in order.
 */
export class TileEntropyState {
  constructor(path, height, width) {
    if (!(height > 0 && width > 0 && height % path.sideStride === 0 && width % path.sideStride === 0)) {
      throw new RangeError(`tile of ${width}x${height}: not a positive multiple of ${path.sideStride}`);
    }
    this.path = path;
    this.height = height;
    this.width = width;
    this.latentHeight = height / path.latentStride;
    this.latentWidth = width / path.latentStride;
    this.sideHeight = height / path.sideStride;
    this.sideWidth = width / path.sideStride;
    const plane = this.latentHeight * this.latentWidth;
    this.layer = 0; // layers completed (RecurrentState.layer)
    this.hyperDecoder = new Float64Array(path.hyperChannels * plane); // initial_state: zeros
    this.previousLatents = null; // none before the first layer: zeros
    this.previousMagnitudes = null;
    this.significance = null;
    this.means = null;
    this.pending = false; // nextLayer ran, afterLayer not yet
  }

  /**
   * ScalableCodec.entropy_parameters(side_hat, state, exact_mode=True) then quantized_scale_index, for
   * layer `this.layer + 1`, from its side symbols (Int32Array, (side_channels, h/64, w/64)). Updates the
   * hyper-decoder state. Returns {scaleIndexes: Int32Array (the CDF row of every latent, (C, h/16, w/16)
   * order: its scale's row, or with fitted tables the row `LatentRows` maps it to), means: Float64Array,
   * scaleIndex: Float64Array (before rounding)}.
   */
  nextLayer(sideSymbols) {
    const path = this.path;
    const k = this.layer;
    if (k >= path.layers) throw new RangeError(`the model has ${path.layers} layers`);
    if (this.pending) throw new Error("afterLayer was not called after the last nextLayer");
    const { latentHeight: lh, latentWidth: lw, sideHeight: sh, sideWidth: sw } = this;
    const plane = lh * lw;
    const m = path.latentChannels;
    const sideCount = path.sideChannels * sh * sw;
    if (sideSymbols.length !== sideCount) {
      throw new CorruptLayerError(`${sideSymbols.length} side symbols for ${sideCount}`);
    }
    const c = path.convolutions;
    // (each loop below is a function of its own: V8 optimises a function once it has seen all of it run,
    // and one function of many loops went back and forth between its compilers on a first picture)
    const side = sideLatents(sideSymbols, path.sideMedians[k], sh * sw);

    // HyperDecoder.forward in exact mode
    const previous = this.previousLatents ? activationInPlace(this.previousLatents.slice()) : new Float64Array(m * plane);
    const h = path.hyperChannels;
    let u = pixelShuffle2(reluInPlace(c.up32.forward(side, sh, sw)), h, sh, sw);
    u = pixelShuffle2(reluInPlace(c.up16.forward(u, 2 * sh, 2 * sw)), h, 2 * sh, 2 * sw);
    const history = reluInPlace(c.history.forward(concatenate(previous, absolute(previous)), lh, lw));
    const state = this.hyperDecoder;
    const joint = concatenate(u, history, state);
    const gate = hardSigmoidInPlace(c.gate.forward(joint, lh, lw));
    const candidate = clampInPlace(c.candidate.forward(joint, lh, lw), -1.0, 1.0);
    const next = gatedUpdate(state, gate, candidate);
    const features = reluInPlace(c.mix.forward(concatenate(u, history, next), lh, lw));
    const parameters = c.params.forward(features, lh, lw);
    this.hyperDecoder = next;

    // scale_index + SCALE_LEVELS // 2 + offset + _history_scale; every term on the 2^-10 grid
    const scaleIndex = parameters.slice(0, m * plane);
    const means = parameters.slice(m * plane);
    addScaleOffsets(scaleIndex, path.scaleIndexOffset[k], Math.floor(path.scaleLevels / 2), plane);
    if (this.previousMagnitudes) {
      const [nonZero, magnitude, significance] = path.historyScaleWeights[k];
      const limit = path.historyMagnitudeLimit;
      addHistoryScale(scaleIndex, this.previousMagnitudes, this.significance, nonZero, magnitude, significance, limit, plane);
    }
    this.means = means;
    this.pending = true;
    const scaleIndexes = quantizedScaleIndexes(scaleIndex, path.scaleLevels);
    if (path.latentRows) path.latentRows.toCodingRows(scaleIndexes, k, this.significance, this.previousMagnitudes, lh, lw);
    return { scaleIndexes, means, scaleIndex };
  }

  /**
   * What ScalableCodec.synthesise does to the exact path's state, given the layer's latent symbols
   * (Int32Array, as `nextLayer`'s indexes): previous_latents = symbols + means, previous_magnitudes =
   * |symbols|, significance = whether any layer so far sent a non-zero symbol there. The layer is done.
   */
  afterLayer(latentSymbols) {
    if (!this.pending) throw new Error("nextLayer was not called");
    const means = this.means;
    if (latentSymbols.length !== means.length) {
      throw new CorruptLayerError(`${latentSymbols.length} latent symbols for ${means.length}`);
    }
    const latents = new Float64Array(means.length);
    const magnitudes = new Float64Array(means.length);
    const significance = this.significance ?? new Float64Array(means.length);
    for (let i = 0; i < latents.length; i++) {
      latents[i] = latentSymbols[i] + means[i]; // exact: an integer plus a multiple of 2^-10 below 2^8
      magnitudes[i] = Math.abs(latentSymbols[i]); // |round(latents - means)| as synthesise computes it
      if (latentSymbols[i] !== 0) significance[i] = 1;
    }
    this.previousLatents = latents;
    this.previousMagnitudes = magnitudes;
    this.significance = significance;
    this.pending = false;
    this.layer += 1;
  }
}

/**
 * Fitted latent tables (codec/symbol_tables.py): the row of the latent table that codes each latent, from
 * its layer, a context the decoder knows before the layer (its channel's frequency band and what earlier
 * layers sent there) and its scale row. `json` is web_export's `latent_rows`.
 */
class LatentRows {
  constructor(json, path, tableRows) {
    const { bands, history_states: historyStates, rows, neighbours } = json;
    if (historyStates !== HISTORY_STATES) {
      throw new EntropyPathError(`latent_rows: ${historyStates} history states; this decoder knows ${HISTORY_STATES}`);
    }
    if (tableRows < path.scaleLevels) {
      throw new EntropyPathError(`${tableRows} latent CDF rows, fewer than the ${path.scaleLevels} Gaussian rows`);
    }
    const contexts = rows.length / (path.layers * path.scaleLevels);
    if (bands.length !== path.latentChannels || !Number.isInteger(contexts)) {
      throw new EntropyPathError(`latent_rows: ${bands.length} bands, ${rows.length} rows`);
    }
    if (bands.some((b) => !(Number.isInteger(b) && b >= 0 && (b + 1) * historyStates <= contexts))) {
      throw new EntropyPathError("latent_rows: a band outside the contexts");
    }
    if (rows.some((r) => !(Number.isInteger(r) && r >= 0 && r < tableRows))) {
      throw new EntropyPathError(`latent_rows: a row outside the ${tableRows} of the latent table`);
    }
    if (neighbours.kind !== "same channel" && neighbours.kind !== "wavelet band") {
      throw new EntropyPathError(`latent_rows: neighbours of kind ${neighbours.kind}; this decoder knows two`);
    }
    this.neighbours = neighbours;
    this.bands = Int32Array.from(bands);
    this.historyStates = historyStates;
    this.contexts = contexts;
    this.scaleLevels = path.scaleLevels;
    this.rows = Int32Array.from(rows);
  }

  /**
   * ScalableCodec.coding_rows, in place: every latent's scale row (C, lh, lw) to its coding row in layer
   * `k` (from 0), given the history before the layer (null before the first: every latent in state 0).
   */
  toCodingRows(indexes, k, significance, previousMagnitudes, lh, lw) {
    const plane = lh * lw;
    const layerRows = k * this.contexts * this.scaleLevels;
    const bandNeighbours =
      significance && this.neighbours.kind === "wavelet band"
        ? significantNeighbours(significance, this.neighbours, lh, lw)
        : null;
    for (let c = 0; c < indexes.length / plane; c++) {
      const base = c * plane;
      const band = this.bands[c] * this.historyStates;
      for (let y = 0; y < lh; y++) {
        for (let x = 0; x < lw; x++) {
          const p = base + y * lw + x;
          let history = 0;
          if (bandNeighbours) history = significance[p] > 0 ? (previousMagnitudes[p] > 0 ? 3 : 2) : bandNeighbours[p];
          else if (significance) history = historyState(significance, previousMagnitudes, base, y, x, lh, lw);
          indexes[p] = this.rows[layerRows + (band + history) * this.scaleLevels + indexes[p]];
        }
      }
    }
  }
}

// codec.symbol_tables.HISTORY_STATES: what `historyState` tells apart.
const HISTORY_STATES = 4;

/**
 * codec.symbol_tables.history_states of one latent of the lapped transform: 3 sent in the last layer, 2 sent
 * before but not in the last, 1 never sent but a 3x3 neighbour (same channel) was, 0 neither.
 */
function historyState(significance, previousMagnitudes, base, y, x, lh, lw) {
  const p = base + y * lw + x;
  if (significance[p] > 0) return previousMagnitudes[p] > 0 ? 3 : 2;
  for (let dy = Math.max(0, y - 1); dy <= Math.min(lh - 1, y + 1); dy++) {
    for (let dx = Math.max(0, x - 1); dx <= Math.min(lw - 1, x + 1); dx++) {
      if (significance[base + dy * lw + dx] > 0) return 1;
    }
  }
  return 0;
}

/** side_hat = symbols + medians in float32, as codec.coding computes it, then `activation`. */
function sideLatents(sideSymbols, medians, sidePlane) {
  const side = new Float64Array(sideSymbols.length);
  for (let i = 0; i < side.length; i++) {
    side[i] = activation(Math.fround(Math.fround(sideSymbols[i]) + medians[(i / sidePlane) | 0]));
  }
  return side;
}

function absolute(values) {
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = Math.abs(values[i]);
  return out;
}

/** The hyper-decoder's recurrent update: activation(state + gate * (candidate - state)). */
function gatedUpdate(state, gate, candidate) {
  const next = new Float64Array(state.length);
  for (let i = 0; i < next.length; i++) next[i] = activation(state[i] + gate[i] * (candidate[i] - state[i]));
  return next;
}

/** scaleIndex (C, plane) += centre + offset[c], in place. */
function addScaleOffsets(scaleIndex, offset, centre, plane) {
  for (let p = 0; p < scaleIndex.length; p++) scaleIndex[p] += centre + offset[(p / plane) | 0];
}

/**
 * _history_scale, added in place: per channel c, activation(w0[c] * (magnitude > 0) + w1[c] *
 * min(magnitude, limit) + w2[c] * significance) of the previous layer's symbols.
 */
function addHistoryScale(scaleIndex, magnitudes, significance, w0, w1, w2, limit, plane) {
  for (let p = 0; p < scaleIndex.length; p++) {
    const c = (p / plane) | 0;
    const magnitude = magnitudes[p];
    const nonZero = magnitude > 0 ? 1 : 0;
    scaleIndex[p] += activation(w0[c] * nonZero + w1[c] * Math.min(magnitude, limit) + w2[c] * significance[p]);
  }
}

/** quantized_scale_index: round (halves to even), clamped to the table's rows. */
function quantizedScaleIndexes(scaleIndex, levels) {
  const indexes = new Int32Array(scaleIndex.length);
  const top = levels - 1;
  for (let p = 0; p < indexes.length; p++) {
    const r = roundHalfEven(scaleIndex[p]);
    indexes[p] = r < 0 ? 0 : r > top ? top : r;
  }
  return indexes;
}

/**
 * codec.coding.symbol_checksum: CRC-32 of a layer's symbols, int32 little-endian (the byte order of every
 * browser's typed arrays), side then latents.
 */
export function symbolChecksum(sideSymbols, latentSymbols) {
  const both = new Int32Array(sideSymbols.length + latentSymbols.length);
  both.set(sideSymbols);
  both.set(latentSymbols, sideSymbols.length);
  return crc32(new Uint8Array(both.buffer));
}
