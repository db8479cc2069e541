// The wavelet synthesis in the browser: codec.wavelet.WaveletSynthesis in float32, for codecs trained with
// `--transform wavelet`. Its constants (levels, lifting steps, gains, colour axes) come from the export
// (codec/web_export.py, `synthesis.wavelet`), so they live once, in codec/wavelet.py.
//
// Each colour axis holds 256 coefficients a 16x16 block, coarse to fine: LL4, HL4, LH4, HH4, then each
// finer level's three bands (HL, LH, HH) as cells of f x f per block (f = 2, 4, 8), row-major within the
// cell (torch's pixel_unshuffle). A codec keeps the first `luma` of the luma axis and the first `chroma` of
// each chroma axis; the rest are zero. The tile is synthesised alone, with whole-sample symmetric extension.

const BANDS_PER_LEVEL = 3;

export class WaveletSynthesis {
  /** `part` is the export's `synthesis.wavelet`; `luma` and `chroma` the kept coefficients per axis. */
  constructor(part, luma, chroma) {
    this.levels = part.levels;
    [this.alpha, this.beta, this.gamma, this.delta] = part.lifting;
    this.lowGain = part.low_gain;
    this.highGain = part.high_gain;
    this.colour = part.colour; // colour[axis][rgb]
    this.counts = [luma, chroma, chroma];
  }

  /** Coefficients (luma + 2 chroma, lh, lw) to the increment (3, 16 lh, 16 lw), both Float32Array. */
  synthesise(coefficients, lh, lw) {
    const plane = lh * lw;
    const block = 2 ** this.levels;
    const size = block * block * plane;
    const axes = [];
    let first = 0;
    for (const count of this.counts) {
      const channel = (k) => (k < count ? coefficients.subarray((first + k) * plane, (first + k + 1) * plane) : null);
      axes.push(this.synthesiseAxis(channel, lh, lw));
      first += count;
    }
    const increment = new Float32Array(3 * size);
    for (let rgb = 0; rgb < 3; rgb++) {
      const out = increment.subarray(rgb * size, (rgb + 1) * size);
      const [a, b, c] = [this.colour[0][rgb], this.colour[1][rgb], this.colour[2][rgb]];
      for (let i = 0; i < size; i++) out[i] = a * axes[0][i] + b * axes[1][i] + c * axes[2][i];
    }
    return increment;
  }

  /** One colour axis, its coefficient k given by `channel(k)` (a plane of lh x lw, or null: zero). */
  synthesiseAxis(channel, lh, lw) {
    let picture = channel(0) ? Float32Array.from(channel(0)) : new Float32Array(lh * lw);
    let at = 1;
    for (let factor = 1; factor < 2 ** this.levels; factor *= 2) {
      const bands = [];
      for (let band = 0; band < BANDS_PER_LEVEL; band++) {
        bands.push(unpackedBand(channel, at, factor, lh, lw));
        at += factor * factor;
      }
      picture = this.synthesise2d(picture, bands, lh * factor, lw * factor);
    }
    return picture;
  }

  /** One level: LL and (HL, LH, HH), each (h, w), to the next LL (2h, 2w): columns first, then rows. */
  synthesise2d(ll, [hl, lh, hh], h, w) {
    const low = new Float32Array(2 * h * w);
    const high = new Float32Array(2 * h * w);
    for (let x = 0; x < w; x++) {
      this.synthesiseLine(ll, lh, x, w, h, low, x, w);
      this.synthesiseLine(hl, hh, x, w, h, high, x, w);
    }
    const out = new Float32Array(4 * h * w);
    for (let y = 0; y < 2 * h; y++) this.synthesiseLine(low, high, y * w, 1, w, out, 2 * y * w, 1);
    return out;
  }

  /**
   * The inverse lifting along one line: `n` low and `n` high samples at `start`, `start + stride`, … of
   * `lows` and `highs` to 2n samples at `outStart`, `outStart + outStride`, … of `out`, interleaved.
   */
  synthesiseLine(lows, highs, start, stride, n, out, outStart, outStride) {
    const even = new Float32Array(n);
    const odd = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      even[i] = lows[start + i * stride] / this.lowGain;
      odd[i] = highs[start + i * stride] / this.highGain;
    }
    const last = n - 1;
    for (let i = 0; i < n; i++) even[i] -= this.delta * (odd[i] + odd[Math.max(i - 1, 0)]);
    for (let i = 0; i < n; i++) odd[i] -= this.gamma * (even[i] + even[Math.min(i + 1, last)]);
    for (let i = 0; i < n; i++) even[i] -= this.beta * (odd[i] + odd[Math.max(i - 1, 0)]);
    for (let i = 0; i < n; i++) odd[i] -= this.alpha * (even[i] + even[Math.min(i + 1, last)]);
    for (let i = 0; i < n; i++) {
      out[outStart + 2 * i * outStride] = even[i];
      out[outStart + (2 * i + 1) * outStride] = odd[i];
    }
  }
}

/** Band coefficients `at` … `at + f² - 1` of an axis as the band's own grid (lh f, lw f): torch's pixel_shuffle. */
function unpackedBand(channel, at, factor, lh, lw) {
  const width = lw * factor;
  const band = new Float32Array(lh * factor * width);
  for (let dy = 0; dy < factor; dy++) {
    for (let dx = 0; dx < factor; dx++) {
      const values = channel(at + dy * factor + dx);
      if (!values) continue;
      for (let y = 0; y < lh; y++) {
        for (let x = 0; x < lw; x++) band[(y * factor + dy) * width + x * factor + dx] = values[y * lw + x];
      }
    }
  }
  return band;
}

/**
 * codec.wavelet.significant_neighbours: for every latent (C, lh, lw) of a wavelet codec (`layout`: the kept
 * luma and chroma coefficients and the levels, web_export's `latent_rows.neighbours`), 1 where its 3x3
 * neighbourhood in its own band's grid (across block borders) or its parent in the next coarser band of the
 * same orientation had a non-zero symbol (`significance` > 0), else 0, as a Uint8Array.
 */
export function significantNeighbours(significance, { luma, chroma, levels }, lh, lw) {
  const plane = lh * lw;
  const near = new Uint8Array(significance.length);
  let first = 0;
  for (const count of [luma, chroma, chroma]) {
    const parents = new Map(); // "factor,orientation" -> the band's first channel
    axisBands(count, levels).forEach(([at, factor], index) => {
      const orientation = (index - 1) % 3;
      const parent = parents.get(`${factor / 2},${orientation}`);
      const sent = (start, f, gy, gx) => significance[(start + (gy % f) * f + (gx % f)) * plane + ((gy / f) | 0) * lw + ((gx / f) | 0)] > 0;
      const [height, width] = [lh * factor, lw * factor];
      for (let gy = 0; gy < height; gy++) {
        for (let gx = 0; gx < width; gx++) {
          let found = parent !== undefined && sent(first + parent, factor / 2, gy >> 1, gx >> 1);
          for (let y = Math.max(0, gy - 1); !found && y <= Math.min(height - 1, gy + 1); y++) {
            for (let x = Math.max(0, gx - 1); !found && x <= Math.min(width - 1, gx + 1); x++) {
              found = sent(first + at, factor, y, x);
            }
          }
          const channel = first + at + (gy % factor) * factor + (gx % factor);
          near[channel * plane + ((gy / factor) | 0) * lw + ((gx / factor) | 0)] = found ? 1 : 0;
        }
      }
      if (index > 0) parents.set(`${factor},${orientation}`, at);
    });
    first += count;
  }
  return near;
}

/** codec.wavelet._bands: [first coefficient, cell factor] of each band an axis of `count` keeps, coarse to fine. */
function axisBands(count, levels) {
  const bands = [[0, 1]];
  let at = 1;
  for (let factor = 1; factor < 2 ** levels; factor *= 2) {
    for (let band = 0; band < BANDS_PER_LEVEL; band++) {
      if (at < count) bands.push([at, factor]);
      at += factor * factor;
    }
  }
  return bands;
}
