// The pictures of the layers received so far, painted at the image's native size so that the
// canvas holds exactly the server's reconstruction (CSS scales it for display).

/** Decode a picture without colour management, so its pixels reach the canvas unchanged. */
export function decodePicture(blob) {
  return createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
}

/** Paint `bitmap` on `canvas`, resized to `width` x `height` pixels. */
export function paint(canvas, bitmap, width, height) {
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingEnabled = false;
  context.clearRect(0, 0, width, height);
  if (bitmap) context.drawImage(bitmap, 0, 0, width, height);
}

export class LayerFrames {
  constructor(canvas) {
    this.canvas = canvas;
    this.pictures = new Map();
    this.width = 0;
    this.height = 0;
  }

  /** Forget every picture and blank the canvas for a `width` x `height` image of `layerCount` layers. */
  reset(width, height, layerCount) {
    for (const bitmap of this.pictures.values()) bitmap.close();
    this.pictures.clear();
    this.width = width;
    this.height = height;
    paint(this.canvas, null, width, height);
    Object.assign(this.canvas.dataset, { layer: "0", received: "0", layers: String(layerCount) });
  }

  get received() {
    return this.pictures.size;
  }

  has(layer) {
    return this.pictures.has(layer);
  }

  /** Keep `bitmap`, the picture of layers 1..`layer`; it must have the image's size. */
  add(layer, bitmap) {
    if (bitmap.width !== this.width || bitmap.height !== this.height) {
      bitmap.close();
      throw new Error(`The picture of layer ${layer} is ${bitmap.width}x${bitmap.height}, not ${this.width}x${this.height}`);
    }
    this.pictures.set(layer, bitmap);
    this.canvas.dataset.received = String(this.pictures.size);
  }

  /** Paint layer `layer`; `cause` ("arrival" or "navigation") travels with the `layershown` event. */
  show(layer, cause) {
    paint(this.canvas, this.pictures.get(layer), this.width, this.height);
    this.canvas.dataset.layer = String(layer);
    this.canvas.dispatchEvent(new CustomEvent("layershown", { detail: { layer, cause } }));
  }
}
