"""Command line of the client: upload a picture, or fetch an image progressively and decode it here.

python -m client upload SERVER FILE [--key K]
python -m client fetch URL OUT.png [--layers N | --bytes B | --psnr-target DB] [--via range|ws] [--each] [--key K]

Exit status 1 for a server, network or request error, 2 for a codec error (damaged or truncated
data, other weights, a weights file that cannot be read); the layers decoded before it are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from client import Refinement, open_fetch
from client.errors import ClientError
from client.uploads import upload
from codec import CodecError, ScalableCodec, load_model, write_image


def _write(pixels: np.ndarray, path: Path) -> None:
    write_image(pixels, path, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))


def fetch_command(model: ScalableCodec, args: argparse.Namespace) -> None:
    """`python -m client fetch`, with the exit statuses above."""
    output = Path(args.output)
    last: Refinement | None = None
    try:
        with open_fetch(args.url, model, via=args.via, key=args.key) as fetch:
            for refinement in fetch.refine(args.layers, args.max_bytes, args.psnr_target):
                last = refinement
                if args.each:
                    path = output.with_name(f"{output.stem}-{refinement.layer}{output.suffix}")
                    _write(refinement.pixels, path)
                    print(
                        f"layer {refinement.layer}: {refinement.bytes} bytes, {refinement.bpp:.3f} bpp, "
                        f"decoded in {refinement.decode_seconds:.2f} s -> {path}",
                        flush=True,
                    )
    except (ClientError, CodecError) as error:
        print(f"error: {error}", file=sys.stderr)
        if last is not None:
            _write(last.pixels, output)
            print(f"kept layers 1..{last.layer} ({last.bytes} bytes) in {output}", file=sys.stderr)
        raise SystemExit(1 if isinstance(error, ClientError) else 2) from None
    assert last is not None and fetch.table is not None  # a fresh fetch decodes at least one layer
    _write(last.pixels, output)
    table = fetch.table
    quality = table.psnr[last.layer - 1]
    measured = "" if quality is None else f", {quality:.2f} dB (server's measure)"
    print(
        f"{output}: layer {last.layer} of {table.layer_count}, {fetch.bytes_received} bytes received, "
        f"{last.bpp:.3f} bpp{measured}"
    )
    if args.psnr_target is not None and quality is not None and quality < args.psnr_target:
        print(f"note: no layer reaches {args.psnr_target} dB; this is the last one", file=sys.stderr)


def upload_command(args: argparse.Namespace) -> int:
    """`python -m client upload`: the encode job's progress on stderr, then the image's id and URLs."""
    path = Path(args.file)

    def progress(job: dict) -> None:
        done, total = job["progress"]["done"], job["progress"]["total"]
        print(f"{job['state']}: {done}/{total} tile-layers", file=sys.stderr, flush=True)

    try:
        info = upload(args.server, path.read_bytes(), path.name, args.key, progress)
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    base = args.server.rstrip("/")
    print(f"{info['id']}  {info['width']}x{info['height']}, {len(info['layers'])} layers, {info['bytes']} bytes")
    print(f"{base}{info['urls']['image']}  (viewer: {base}{info['urls']['viewer']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m client", description="Progressive client of the image service: upload, fetch and decode here."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("upload", help="upload a picture and follow its encode job until it is stored")
    p.add_argument("server", help="http://host:port of the service")
    p.add_argument("file", help="a PNG, JPEG, WebP, TIFF or BMP file")
    p.add_argument("--key", help="the write key of a server that requires one")
    p = sub.add_parser("fetch", help="fetch an image progressively from a server")
    p.add_argument("url", help="http://host:port/image/ID")
    p.add_argument("output")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--layers", type=int)
    stop.add_argument("--bytes", type=int, dest="max_bytes")
    stop.add_argument("--psnr-target", type=float, help="stop at the first layer the server reports at this PSNR")
    p.add_argument("--via", choices=("range", "ws"), default="range")
    p.add_argument("--each", action="store_true", help="write OUT-1.png, OUT-2.png, ... for every layer")
    p.add_argument("--key", help="the read key of a server that requires one")
    p.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "upload":
        try:
            return upload_command(args)
        except OSError as error:  # FILE cannot be read
            print(f"error: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
            return 2
    try:
        model = load_model(args.weights, args.device)
    except CodecError as error:  # the weights are missing or cannot be read
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        fetch_command(model, args)  # exits 1 or 2 itself for a server, network or codec error
    except OSError as error:  # OUT cannot be written
        print(f"error: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
