"""Command line: argument parsing only; every command calls into the library.

python -m codec compress IN.png OUT.bin [--weights PATH] [--layers N]
python -m codec decompress IN.bin OUT.png [--layers N] [--region X,Y,W,H] [--weights PATH]
python -m codec info IN.bin
python -m codec train --crops .cache/crops-256.npy ...
python -m codec eval DIR [--out results/]

Fetching from a server is the client's: `python -m client fetch URL OUT.png ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from codec.container import DEFAULT_TILE_SIZE
from codec.effort import DEFAULT_EFFORT, EFFORTS
from codec.errors import CodecError

DEFAULT_CROPS = Path(".cache/crops-256.npy")
DEFAULT_CHECKPOINT = Path(".cache/train/checkpoint.pt")
DEFAULT_LOG = Path(".cache/train/log.csv")
KODAK = Path("../shared/data/kodak")


def _refuse(message: str) -> None:
    """A request the file or the model cannot satisfy: one line, exit 2, like a codec error."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _load(weights: str | None, device: str = "cpu"):
    from codec.api import load_model

    return load_model(weights, device)


def cmd_compress(args: argparse.Namespace) -> None:
    from codec.api import encode

    model = _load(args.weights, args.device)
    started = time.perf_counter()
    try:
        data = encode(Path(args.input), model, args.layers, args.tile_size, effort=args.effort)
    except ValueError as error:  # layers, tile size or effort out of range
        _refuse(str(error))
    Path(args.output).write_bytes(data)
    from codec.container import parse_header

    header = parse_header(data)
    pixels = header.width * header.height
    print(
        f"{args.output}: {len(data)} bytes, {header.layer_count} layers, "
        f"{len(data) * 8 / pixels:.3f} bpp, {time.perf_counter() - started:.2f} s",
        file=sys.stderr,
    )


def cmd_decompress(args: argparse.Namespace) -> None:
    from codec.api import Decoder
    from codec.imageio import write_image

    model = _load(args.weights, args.device)
    # one decode and done: no tile states or pictures kept for a next call, so memory follows a batch of tiles
    decoder = Decoder(Path(args.input).read_bytes(), model, state_budget=0, picture_budget=0)
    if decoder.layers_available == 0:
        from codec.errors import TruncatedLayerError

        raise TruncatedLayerError("the file holds no complete layer")
    try:
        pixels = decoder.decode(args.layers, args.region)
    except ValueError as error:  # layers or region outside the file's
        _refuse(str(error))
    write_image(pixels, args.output, format=_format_for(args.output))


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y,W,H (four integers)")
    return values  # type: ignore[return-value]


def _format_for(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        suffix, "PNG"
    )


def cmd_info(args: argparse.Namespace) -> None:
    from codec.container import parse_header

    data = Path(args.input).read_bytes()
    info = parse_header(data).to_dict()
    info["bytes_present"] = len(data)
    print(json.dumps(info, indent=2))


def cmd_crops(args: argparse.Namespace) -> None:
    from codec.data import build_crop_bank

    bank = build_crop_bank(Path(args.images), Path(args.output), args.size, args.per_image, args.seed)
    print(f"{args.output}: {bank.shape[0]} crops of {args.size}x{args.size}, {bank.nbytes / 1e6:.0f} MB")


def cmd_train(args: argparse.Namespace) -> None:
    from codec.train import Trainer, TrainSettings

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not Path(args.crops).exists():
        raise SystemExit(f"no crop bank at {args.crops}: run `python -m codec crops` first")
    if not args.resume and Path(args.checkpoint).exists():
        raise SystemExit(f"{args.checkpoint} exists: pass --resume to continue it, or choose another path")
    config = None
    if args.transform:
        if args.resume or args.init_weights:
            raise SystemExit("--transform starts a fresh run: a checkpoint or weights file keeps its own transform")
        from codec.model import FRESH_COEFFICIENTS, CodecConfig

        if args.transform not in FRESH_COEFFICIENTS:
            raise SystemExit(f"--transform is one of {', '.join(sorted(FRESH_COEFFICIENTS))}")
        luma, chroma = FRESH_COEFFICIENTS[args.transform]
        config = CodecConfig(transform=args.transform, luma_coefficients=luma, chroma_coefficients=chroma)
    settings = TrainSettings(
        config=config,
        crops=Path(args.crops),
        checkpoint=Path(args.checkpoint),
        log=Path(args.log),
        steps=args.steps,
        batch=args.batch,
        crop_size=args.crop_size,
        learning_rate=args.lr,
        layers=args.layers,
        objective=args.objective,
        device=args.device,
        checkpoint_minutes=args.checkpoint_minutes,
        validate_every=args.validate_every,
        validation_dir=Path(args.validation) if args.validation else None,
        lambdas=tuple(args.lambdas) if args.lambdas else None,
        init_weights=Path(args.init_weights) if args.init_weights else None,
        post_filter_channels=args.post_filter,
        post_filter_depth=args.post_filter_depth,
        filter_tile_size=args.filter_tile_size,
        precision=args.precision,
        context_channels=args.context,
        first_layer_rate_weight=args.first_layer_rate_weight,
    )
    if settings.post_filter_channels and settings.init_weights is None and not args.resume:
        raise SystemExit("--post-filter trains on a frozen codec: pass --init-weights weights/codec.pt")
    if settings.post_filter_depth and (not settings.post_filter_channels or settings.post_filter_depth < 1):
        raise SystemExit("--post-filter-depth needs --post-filter and at least 1 convolution")
    tile = settings.filter_tile_size
    if tile and (not settings.post_filter_channels or settings.crop_size % tile):
        raise SystemExit("--filter-tile-size needs --post-filter and must divide --crop-size")
    Trainer(settings).run()


def cmd_export(args: argparse.Namespace) -> None:
    from codec.train import export_weights

    path = export_weights(Path(args.checkpoint), Path(args.output))
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


def cmd_grow(args: argparse.Namespace) -> None:
    import torch

    from codec.api import load_model, save_weights
    from codec.data import CropSampler, load_crop_bank
    from codec.grow import grow_coefficients, synthesis_floor_psnr

    model = load_model(args.weights, runtime="torch")
    images = CropSampler(load_crop_bank(Path(args.crops)), 128, seed=0).batch(32)
    with torch.no_grad():
        grown = grow_coefficients(model, args.luma, args.chroma, images)
    info = {**model.training_info, "grown_from": model.model_id.hex()}
    save_weights(grown, Path(args.output), info)
    floors = [synthesis_floor_psnr(m.decoder.synthesis, images) for m in (model, grown)]
    print(
        f"{args.output}: {grown.config.latent_channels} coefficients per block (was {model.config.latent_channels}); "
        f"the best PSNR the synthesis can reach on the crops: {floors[1]:.2f} dB (was {floors[0]:.2f} dB)"
    )


def cmd_fit_tables(args: argparse.Namespace) -> None:
    import torch

    from codec.api import load_model, save_weights
    from codec.data import CropSampler, load_crop_bank
    from codec.fit_tables import fit_tables

    model = load_model(args.weights)
    crops = CropSampler(load_crop_bank(Path(args.crops)), args.crop_size, seed=0).batch(args.count)
    started = time.perf_counter()
    with torch.no_grad():
        model.latent_tables = fit_tables(model, crops)
    info = {**model.training_info, "fitted_tables": {"crops": args.count, "crop_size": args.crop_size}}
    save_weights(model, Path(args.output), info)
    tables = model.latent_tables
    print(
        f"{args.output}: {tables._cdf_length.numel()} fitted rows code {tables.fitted_cells} of "
        f"{tables.rows.numel()} (layer, context, scale) cells; "
        f"{args.count} crops counted in {time.perf_counter() - started:.0f} s"
    )


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from codec.api import load_model
    from codec.web_export import write_web_decoder

    folder = write_web_decoder(load_model(args.weights, runtime="torch"), Path(args.output))
    for path in sorted(folder.iterdir()):
        print(f"{path}: {path.stat().st_size:,} bytes")


def cmd_eval(args: argparse.Namespace) -> None:
    import torch

    from codec.evaluate import evaluate_directory

    torch.set_num_threads(max(1, torch.get_num_threads() - 1))  # one core for the baseline process
    model = _load(args.weights, args.device)
    evaluate_directory(model, Path(args.directory), Path(args.out), limit=args.limit, anchors=Path(args.anchors))


def cmd_card(args: argparse.Namespace) -> None:
    from codec.api import default_weights_path
    from codec.model_card import write_model_card

    model = _load(args.weights)
    weights = Path(args.weights) if args.weights else default_weights_path()
    evaluation, log, output = Path(args.evaluation), Path(args.log), Path(args.output)
    write_model_card(model, weights, evaluation, log, output, args.hardware)
    print(f"{args.output} written")


def cmd_macs(args: argparse.Namespace) -> None:
    from codec.model import count_macs_per_pixel

    model = _load(args.weights)
    parameters = sum(p.numel() for p in model.parameters())
    print(json.dumps({"parameters": parameters, "macs_per_pixel_per_layer": count_macs_per_pixel(model)}, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m codec", description="Scalable learned image codec.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_model(p: argparse.ArgumentParser) -> None:
        p.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
        p.add_argument("--device", default="cpu", help="cpu or cuda")

    p = sub.add_parser("compress", help="encode an image into a layered bitstream")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--layers", type=int, help="number of layers to write (default: all)")
    p.add_argument(
        "--tile-size",
        type=int,
        default=DEFAULT_TILE_SIZE,
        help=f"tile side, a multiple of 64 (default {DEFAULT_TILE_SIZE})",
    )
    p.add_argument(
        "--effort",
        type=int,
        choices=sorted(EFFORTS),
        default=DEFAULT_EFFORT,
        help=f"1: the trained encoder, fastest; higher: search each tile's symbols, fewer bytes, "
        f"slower (default {DEFAULT_EFFORT})",
    )
    with_model(p)
    p.set_defaults(run=cmd_compress)

    p = sub.add_parser("decompress", help="decode the first layers of a bitstream")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--layers", type=int, help="layers to decode (default: all complete ones present)")
    p.add_argument("--region", type=_region, metavar="X,Y,W,H", help="decode only this rectangle (only its tiles)")
    with_model(p)
    p.set_defaults(run=cmd_decompress)

    p = sub.add_parser("info", help="print a bitstream's header as JSON")
    p.add_argument("input")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("crops", help="cut the training photos into a crop bank")
    p.add_argument("--images", default="../shared/data/train")
    p.add_argument("--output", default=str(DEFAULT_CROPS))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--per-image", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_crops)

    p = sub.add_parser("train", help="train (or --resume training) the codec")
    p.add_argument("--crops", default=str(DEFAULT_CROPS))
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--log", default=str(DEFAULT_LOG))
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--steps", type=int, default=100_000, help="total steps to reach")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--layers", type=int, help="train only the first N layers")
    p.add_argument("--lambdas", type=float, nargs="+", help="override the per-layer lambdas")
    p.add_argument("--init-weights", help="start a new checkpoint from a weights file (model only, fresh optimiser)")
    p.add_argument("--objective", choices=("mse", "ms-ssim"), default="mse")
    p.add_argument(
        "--first-layer-rate-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="add W times the first layer's rate to the loss (lowers layer 1's bpp)",
    )
    p.add_argument(
        "--post-filter",
        type=int,
        default=0,
        metavar="CHANNELS",
        help="train only a post-filter of this width on the frozen codec of --init-weights",
    )
    p.add_argument(
        "--post-filter-depth",
        type=int,
        default=0,
        metavar="CONVOLUTIONS",
        help="with --post-filter: its hidden 3x3 convolutions (3 when new, the output one on top); "
        "those beyond the filter of --init-weights start as the identity",
    )
    p.add_argument(
        "--filter-tile-size",
        type=int,
        default=0,
        metavar="SIDE",
        help="with --post-filter: code each crop as tiles of this side, filtered assembled (a divisor of --crop-size)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=0,
        metavar="CHANNELS",
        help="add a two-pass frequency context of this width to the codec of --init-weights",
    )
    p.add_argument(
        "--transform",
        help="a fresh run's transform: lapped (the default: 160 luma + 2x48 chroma coefficients a block) "
        "or wavelet (a CDF 9/7 in four levels: 256 + 2x64)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16: the networks' products in bfloat16 (autocast), faster only where the CPU has avx512_bf16",
    )
    p.add_argument(
        "--threads", type=int, help="torch threads; 1 avoids a collapse when other processes share the cores"
    )
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--validate-every", type=int, default=250)
    p.add_argument("--validation", default=str(KODAK), help="Kodak folder for the validation crops")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("export", help="turn a training checkpoint into a weights file")
    p.add_argument("checkpoint", nargs="?", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("output", nargs="?", default="weights/codec.pt")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("grow", help="widen a weights file's transform by further DCT frequencies, then train it")
    p.add_argument("weights", help="weights file to grow")
    p.add_argument("output", help="the grown weights file (train it with --init-weights)")
    p.add_argument("--luma", type=int, required=True, help="luma coefficients per block, at most 256")
    p.add_argument("--chroma", type=int, required=True, help="coefficients per block and chroma axis, at most 256")
    p.add_argument("--crops", default=str(DEFAULT_CROPS), help="training crops that set the new scales")
    p.set_defaults(run=cmd_grow)

    p = sub.add_parser(
        "fit-tables", help="fit the latents' coding tables to a weights file's symbols on training crops"
    )
    p.add_argument("weights", help="weights file to fit (fitted tables it has are replaced)")
    p.add_argument("output", help="the weights file with its fitted tables (may be the same path)")
    p.add_argument("--crops", default=str(DEFAULT_CROPS), help="training crops whose symbols are counted")
    p.add_argument("--count", type=int, default=512, help="crops to count")
    p.add_argument("--crop-size", type=int, default=256, help="crop side, a multiple of 64")
    p.set_defaults(run=cmd_fit_tables)

    p = sub.add_parser(
        "export-onnx", help="write the browser decoder's files of the weights: ONNX graphs and entropy path"
    )
    p.add_argument("output", help="folder; the files go to OUTPUT/<model id>/")
    p.add_argument("--weights", help="weights file (default: weights/codec.pt or $CODEC_WEIGHTS)")
    p.set_defaults(run=cmd_export_onnx)

    p = sub.add_parser("eval", help="rate-distortion evaluation with real file sizes")
    p.add_argument("directory")
    p.add_argument("--out", default="results")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--anchors", default="../shared/anchors", help="published RD points")
    with_model(p)
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("card", help="write weights/MODEL_CARD.md from the weights, log and evaluation")
    p.add_argument("--weights")
    p.add_argument("--evaluation", default="results/summary.md")
    p.add_argument("--log", default="weights/training_log.csv")
    p.add_argument("--output", default="weights/MODEL_CARD.md")
    p.add_argument("--hardware", help="where it was trained (default: this CPU)")
    p.set_defaults(run=cmd_card)

    p = sub.add_parser("macs", help="parameters and multiply-accumulates per pixel")
    p.add_argument("--weights")
    p.set_defaults(run=cmd_macs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except CodecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"error: {error.strerror}: {error.filename}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
