// A simulated slow link: on localhost every layer arrives at once, so the viewer holds each
// delivery back until the moment a link of the chosen rate would have carried its bytes.

export class SimulatedLink {
  /** `bitsPerSecond` 0 means no throttling. */
  constructor(bitsPerSecond) {
    this.bitsPerSecond = bitsPerSecond;
    this.started = performance.now();
    this.bits = 0;
  }

  /** Milliseconds since the delivery started. */
  elapsed() {
    return performance.now() - this.started;
  }

  /** Resolves when `byteCount` more bytes would have arrived (at once when unthrottled). */
  deliver(byteCount, signal) {
    this.bits += byteCount * 8;
    if (!this.bitsPerSecond) return Promise.resolve();
    const wait = this.started + (this.bits / this.bitsPerSecond) * 1000 - performance.now();
    if (wait <= 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, wait);
      signal?.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(signal.reason);
      }, { once: true });
    });
  }
}
