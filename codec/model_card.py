"""weights/MODEL_CARD.md, written from the weights file, the training log and an evaluation.

Regenerating the card after every export keeps its figures those of the
weights it sits beside.
"""

from __future__ import annotations

import csv
import platform
from pathlib import Path

import torch

from codec.container import DEFAULT_TILE_SIZE
from codec.model import ScalableCodec, count_macs_per_pixel


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _last_validation(log: Path) -> dict[str, str] | None:
    if not log.exists():
        return None
    rows = list(csv.DictReader(log.open()))
    return rows[-1] if rows else None


def plot_training_curve(log: Path, output: Path) -> bool:
    """PSNR and estimated bpp of every layer on the validation crops against the step; False without a log."""
    if not log.exists():
        return False
    rows = list(csv.DictReader(log.open()))
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(row["step"]) for row in rows]
    layers = sorted(int(name[4:]) for name in rows[0] if name.startswith("psnr"))
    figure, (quality, rate) = plt.subplots(1, 2, figsize=(11, 4))
    for k in layers:
        quality.plot(steps, [float(row[f"psnr{k}"]) for row in rows], label=f"layer {k}")
        rate.plot(steps, [float(row[f"bpp{k}"]) for row in rows], label=f"layer {k}")
    quality.set(xlabel="step", ylabel="PSNR (dB)", title="Validation crops: quality after each layer")
    rate.set(xlabel="step", ylabel="bpp (estimated)", title="Rate up to each layer")
    for axes in (quality, rate):
        axes.grid(alpha=0.3)
    quality.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(output, dpi=90)
    plt.close(figure)
    return True


def _post_filter_lines(model: ScalableCodec) -> list[str]:
    if model.post_filter is None:
        return []
    return [
        f"Post-filter ({model.config.post_filter_channels} channels, `codec/postfilter.py`): the picture shown "
        "after layer k is the reconstruction plus a small convolutional correction at half resolution that knows "
        "k and each pixel's position in the 16×16 block grid; it was trained on the frozen codec (mean over "
        "layers of log MSE), last on 256² crops coded as 128² tiles and filtered assembled, so that it learns "
        "the tile seams as well as the block edges. It never feeds back into the coding, so it is left out of "
        "the model id.",
        "",
    ]


def _fitted_table_lines(model: ScalableCodec) -> list[str]:
    if model.latent_tables is None:
        return []
    tables = model.latent_tables
    fitted = tables.fitted_cells
    counted = model.training_info.get("fitted_tables", {})
    return [
        f"Fitted latent tables (`codec/symbol_tables.py`, `python -m codec fit-tables`): {fitted:,} of the "
        f"{tables.rows.numel():,} (layer, context, scale) cells code their latents with a CDF row counted on "
        f"{counted.get('crops', '?')} training crops of {counted.get('crop_size', '?')}² instead of the "
        "discretised Gaussian of the scale; the context is the coefficient's frequency band and what earlier "
        "layers sent at its position and next to it. The symbols, and so the pictures, are those of the "
        "Gaussian rows; only their code lengths differ.",
        "",
    ]


# what the card says of each transform: the analysis, then the synthesis
_TRANSFORM_TEXT = {
    "lapped": (
        "lapped analysis (32×32 bases, stride 16, initialised as a colour-decorrelated 16×16 DCT)",
        "the transpose lapped synthesis",
    ),
    "wavelet": (
        "a fixed CDF 9/7 wavelet in four levels on colour-decorrelated axes, its bands packed at 1/16",
        "the inverse wavelet",
    ),
}


def _post_filter_commands(model: ScalableCodec) -> list[str]:
    if model.post_filter is None:
        return []
    return [
        f"python -m codec train --post-filter {model.config.post_filter_channels} --init-weights weights/codec.pt "
        "--checkpoint .cache/pf/checkpoint.pt --log .cache/pf/log.csv --lr 1e-3 --threads 1 --steps 40000 --resume",
        "# ... then the same with --lr 3e-4 for the last steps (weights/training_history.md says where),",
        "# then across tile borders: cp .cache/pf/checkpoint.pt .cache/pft/checkpoint.pt and",
        f"python -m codec train --post-filter {model.config.post_filter_channels} --crop-size 256 "
        "--filter-tile-size 128 --batch 4 --checkpoint .cache/pft/checkpoint.pt --log .cache/pft/log.csv "
        "--lr 2e-4 --threads 1 --steps 28900 --resume",
        "# ... then the same with --lr 5e-5 to --steps 30100",
        "python -m codec export .cache/pft/checkpoint.pt weights/codec.pt",
    ]


def write_model_card(
    model: ScalableCodec, weights: Path, evaluation: Path, log: Path, output: Path, hardware: str | None = None
) -> str:
    """Compose the card; `evaluation` is the summary.md written by `python -m codec eval`."""
    config = model.config
    info = model.training_info
    parameters = sum(p.numel() for p in model.parameters())
    macs = count_macs_per_pixel(model)
    steps = int(info.get("steps", 0))
    hours = float(info.get("training_seconds", 0.0)) / 3600
    summary = evaluation.read_text() if evaluation.exists() else "_No evaluation has been run for these weights._\n"
    last = _last_validation(log)
    lambdas = " | ".join(f"{lam:g}" for lam in config.lambdas)
    lines = [
        "# Model card: scalable RNN codec",
        "",
        f"- **File**: `{weights.name}`, {weights.stat().st_size / 1e6:.1f} MB (float32 weights, the side models' "
        f"rANS tables{' and the fitted latent tables' if model.latent_tables is not None else ''})",
        f"- **Model id**: `{model.model_id.hex()}` (written into every bitstream; files of other weights are refused)",
        f"- **Training steps**: {steps:,} ({hours:.1f} h of optimisation wall time)",
        f"- **Hardware**: {hardware or _cpu_name()}, torch {torch.__version__}",
        f"- **Parameters**: {parameters:,}",
        f"- **Layers**: {config.layers}; latents {config.latent_channels} per 16×16 block "
        f"({config.luma_coefficients} luma + 2×{config.chroma_coefficients} chroma), "
        f"side information {config.side_channels} channels at 1/64",
        "",
        "## Architecture",
        "",
        "Residual coding, one layer per RNN iteration (Su et al., ICIP 2020). Encoder: "
        f"{_TRANSFORM_TEXT[config.transform][0]} of the residual, then a "
        "ConvLSTM refiner whose state carries across layers, times a learned per-layer gain. Hyperprior: a "
        "recurrent hyper-encoder, an `EntropyBottleneck` per layer for z_k, and a gated recurrent "
        "hyper-decoder over z_k and the previous layer's latents, computed exactly in fixed point, that "
        "gives a scale and a mean to every latent (`GaussianConditional`). Decoder: a ConvLSTM refiner and "
        f"{_TRANSFORM_TEXT[config.transform][1]}; the increment is added to the reconstruction.",
        "",
        *_post_filter_lines(model),
        *_fitted_table_lines(model),
        f"Inference codes the picture in independent {DEFAULT_TILE_SIZE}² tiles (container version 3), shows it "
        "post-filtered across the tile borders, and runs the analysis "
        "and synthesis networks in float32; the entropy parameters stay exact, so the rANS symbols are the "
        "same on every machine and pixels agree within ±1 (docs/format.md).",
        "",
        "Multiply-accumulates per pixel and per layer (inference):",
        "",
        "| part | MAC/pixel/layer |",
        "|---|---:|",
        *[f"| {part} | {value:,.0f} |" for part, value in macs.items()],
        "",
        "## Training",
        "",
        "- **Data**: the 586 photos of `../shared/data/train` (Debian wallpapers, Urban100, Sun-Hays 80, "
        "McMaster, one ImageNet sample per class; see its MANIFEST.csv), cut once into 256² crops "
        "(`python -m codec crops`), then random 128² sub-crops with flips. Kodak was never trained on; "
        "four centre crops of it are the validation batch of the log.",
        "- **Loss**: Σ_k [R_≤k + λ_k·255²·MSE_k] / K over the layers, rates from additive uniform noise, "
        "straight-through rounding into the decoder and the hyper-decoder.",
        f"- **λ per layer**: {lambdas}",
        "- **Optimiser**: Adam, learning rate 5·10⁻⁴ then 1.5·10⁻⁴ (see the schedule; 10× for the per-layer "
        "gains), gradient norm clipped at 5; "
        "batch 8 on the CPU in float32. bf16 autocast (`--precision bfloat16`) ran 10–16× slower on the CPUs "
        "of the first sessions (no AVX-512); on the AVX-512-BF16 EPYC of 2026-12-07 a step ran 1.3× faster "
        "with the same losses within 0.05 %; these weights were trained in float32.",
        "- **Log**: `weights/training_log.csv` (step, seconds, loss, estimated bpp and PSNR per layer on the "
        "validation crops).",
        "- **Schedule**: training ran as many resumed runs; the λ and learning-rate changes between them, "
        "with the steps at which they happened, are in `weights/training_history.md`.",
    ]
    if last:
        per_layer = [f"layer {k}: {last[f'bpp{k}']} bpp / {last[f'psnr{k}']} dB" for k in range(1, config.layers + 1)]
        lines.append(f"- **Last validation row** (step {last['step']}): " + ", ".join(per_layer))
    lines += [
        "",
        "Reproduce (CPU; resumes from `.cache/train/checkpoint.pt` when `--resume` is given):",
        "",
        "```sh",
        "python -m codec crops                      # ../shared/data/train -> .cache/crops-256.npy",
        "python -m codec train --threads 2 --lambdas " + " ".join(f"{lam:g}" for lam in config.lambdas),
        "python -m codec export                     # .cache/train/checkpoint.pt -> weights/codec.pt",
        *_post_filter_commands(model),
        *(["python -m codec fit-tables weights/codec.pt weights/codec.pt"] if model.latent_tables is not None else []),
        "python -m codec eval ../shared/data/kodak --out results",
        "python -m codec card                       # this file",
        "```",
        "",
        "## Kodak (24 images, real file sizes)",
        "",
        summary.strip(),
        "",
        "![RD curves](../results/rd.png)",
        "",
    ]
    curve = output.with_name("training_curve.png")
    if plot_training_curve(log, curve):
        lines[lines.index("## Kodak (24 images, real file sizes)") : 0] = [
            "## Training curve",
            "",
            f"![Validation PSNR and rate against the step]({curve.name})",
            "",
        ]
    text = "\n".join(lines)
    output.write_text(text)
    return text
