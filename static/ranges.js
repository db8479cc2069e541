// Delivery by HTTP byte ranges: for n = 1, 2, ... the viewer fetches `bytes=0-(end of layer n - 1)`,
// a valid n-layer container, and shows the server's picture of those n layers beside it.

import { bitstreamPrefix, reconstruction } from "./api.js";

/**
 * Fetch every prefix of the bitstream described by `info` that ends at a layer boundary.
 * For each: `onLayer({layer, layerBytes, receivedBytes, contentRange, picture})`.
 */
export async function fetchLayerRanges(info, { link, signal, onLayer }) {
  for (const layer of info.layers) {
    const { bytes, contentRange } = await bitstreamPrefix(info.urls.bitstream, layer.end, signal);
    await link.deliver(bytes.byteLength, signal);
    const picture = await reconstruction(info.id, layer.index, signal);
    await onLayer({ layer, layerBytes: layer.bytes, receivedBytes: bytes.byteLength, contentRange, picture });
  }
}
