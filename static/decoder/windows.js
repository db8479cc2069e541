// Where the post-filter runs in the browser: codec/filter_windows.py. The picture shown is the filter
// applied to the picture assembled from every tile's padded reconstruction, so a tile's shown pixels
// follow from a window around it: its padded reconstruction and HALO pixels of its neighbours, within the
// padded picture. Windows start on the 16-pixel block grid, so the filter's block-grid input is that of
// the whole picture. The workers decode their shares of the tiles; the page assembles each window from
// them (`tileWindows`) and the worker that owns the tile filters it.

export const HALO = 16; // codec.filter_windows.HALO: one block, more than the filter reaches

/**
 * Each tile's window with its pixels, from every tile of a layer ([{index, x, y, paddedWidth,
 * paddedHeight, reconstruction}], `reconstruction` the padded (3, paddedHeight, paddedWidth) Float32Array):
 * Map index -> {index, x, y, width, height, data}, `data` the window's (3, height, width) Float32Array.
 */
export function tileWindows(tiles) {
  const right = Math.max(...tiles.map((tile) => tile.x + tile.paddedWidth));
  const bottom = Math.max(...tiles.map((tile) => tile.y + tile.paddedHeight));
  const windows = new Map();
  for (const tile of tiles) {
    const x = Math.max(0, tile.x - HALO);
    const y = Math.max(0, tile.y - HALO);
    const width = Math.min(right, tile.x + tile.paddedWidth + HALO) - x;
    const height = Math.min(bottom, tile.y + tile.paddedHeight + HALO) - y;
    const data = new Float32Array(3 * width * height);
    for (const source of tiles) copyOverlap(source, { x, y, width, height, data });
    windows.set(tile.index, { index: tile.index, x, y, width, height, data });
  }
  return windows;
}

/** Copy the part of `source`'s padded reconstruction that lies inside `window` into the window's data. */
function copyOverlap(source, window) {
  const left = Math.max(source.x, window.x);
  const top = Math.max(source.y, window.y);
  const right = Math.min(source.x + source.paddedWidth, window.x + window.width);
  const bottom = Math.min(source.y + source.paddedHeight, window.y + window.height);
  if (left >= right || top >= bottom) return;
  const sourcePlane = source.paddedWidth * source.paddedHeight;
  const windowPlane = window.width * window.height;
  for (let channel = 0; channel < 3; channel++) {
    for (let row = top; row < bottom; row++) {
      const from = channel * sourcePlane + (row - source.y) * source.paddedWidth + (left - source.x);
      const to = channel * windowPlane + (row - window.y) * window.width + (left - window.x);
      window.data.set(source.reconstruction.subarray(from, from + right - left), to);
    }
  }
}
