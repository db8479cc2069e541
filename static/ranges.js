// Delivery by HTTP byte ranges. With server previews, for n = 1, 2, ... the viewer fetches
// `bytes=0-(end of layer n - 1)`, a valid n-layer container, and shows the server's picture of those n
// layers beside it. When the browser decodes, it fetches the header and then each layer's own range,
// once: the bytes are the picture.

import { bitstreamRange, reconstruction } from "./api.js";

/**
 * Fetch the bitstream described by `info` layer by layer. `onHeader({bytes})` first when the browser
 * decodes (`previews` false); then for each layer `onLayer({layer, layerBytes, receivedBytes, contentRange,
 * bytes, picture})`: `bytes` the layer's own bytes (browser) or the whole prefix, `picture` the server's
 * picture (previews only).
 */
export async function fetchLayerRanges(info, { link, signal, previews = true, onHeader, onLayer }) {
  if (!previews) {
    const { bytes } = await bitstreamRange(info.urls.bitstream, 0, info.header_bytes, signal);
    await link.deliver(bytes.byteLength, signal);
    await onHeader({ bytes });
  }
  for (const layer of info.layers) {
    const start = previews ? 0 : layer.offset;
    const { bytes, contentRange } = await bitstreamRange(info.urls.bitstream, start, layer.end, signal);
    await link.deliver(bytes.byteLength, signal);
    const picture = previews ? await reconstruction(info.id, layer.index, signal) : null;
    await onLayer({ layer, layerBytes: layer.bytes, receivedBytes: layer.end, contentRange, bytes, picture });
  }
}
