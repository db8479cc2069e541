"""Training: Σ_k [R_≤k + λ_k·D_k] over the layers, resumable at any point.

The same script runs on the CPU and on a GPU and writes the same checkpoint
format, so runs on either continue each other. A checkpoint holds the model,
both optimizers, the step, the sampler's random state and the wall time spent.
"""

from __future__ import annotations

import csv
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from pytorch_msssim import ms_ssim
from torch import Tensor
from tqdm import tqdm

from codec.data import CropSampler, center_crops, load_crop_bank
from codec.model import CodecConfig, LayerOutput, ScalableCodec
from codec.quality import psnr_from_mse

# Log-gains are a handful of scalars that must move by whole octaves early on.
GAIN_LR_SCALE = 10.0
# The frequency context is added to trained weights from zero and has a few
# thousand steps to learn in, beside a codec that is already near its optimum.
CONTEXT_LR_SCALE = 5.0
VALIDATION_IMAGES = ("kodim01.png", "kodim07.png", "kodim14.png", "kodim23.png")


@dataclass
class TrainSettings:
    crops: Path
    checkpoint: Path
    log: Path
    steps: int = 100_000
    batch: int = 8
    crop_size: int = 128
    learning_rate: float = 5e-4
    layers: int | None = None
    objective: str = "mse"
    device: str = "cpu"
    checkpoint_minutes: float = 10.0
    validate_every: int = 250
    validation_dir: Path | None = None
    seed: int = 0
    config: CodecConfig | None = None
    lambdas: tuple[float, ...] | None = None
    init_weights: Path | None = None
    # > 0: train only a post-filter of this width on the frozen codec of `init_weights`
    post_filter_channels: int = 0
    # > 0, with a post-filter: its hidden 3x3 convolutions; those beyond a trained filter's start as the identity
    post_filter_depth: int = 0
    # > 0, with a post-filter: the codec codes each crop as tiles of this side and the filter sees
    # them assembled, across the tile borders, as the decoder shows a picture
    filter_tile_size: int = 0
    # extra weight on the first layer's rate, which λ_1 alone does not move
    first_layer_rate_weight: float = 0.0
    # > 0: add a two-pass frequency context of this width to the codec of `init_weights`
    context_channels: int = 0
    # "bfloat16": the networks' products in bfloat16 (torch.autocast; weights, optimiser and losses stay
    # float32), about 1.5x the steps per hour on CPUs with avx512_bf16 and much slower on those without
    precision: str = "float32"


def distortion(reconstruction: Tensor, image: Tensor, objective: str) -> Tensor:
    """MSE on the 0..255 scale, or 1 - MS-SSIM."""
    if objective == "mse":
        return (reconstruction - image).square().mean() * 255.0**2
    return 1.0 - ms_ssim(reconstruction.clamp(0, 1), image, data_range=1.0)


def layer_rates(outputs: list[LayerOutput], pixels: int) -> list[Tensor]:
    """Bits per pixel of each layer (latents + side information)."""
    return [(o.latent_likelihoods.log2().sum() + o.side_likelihoods.log2().sum()).neg() / pixels for o in outputs]


def rate_distortion_loss(
    outputs: list[LayerOutput],
    image: Tensor,
    lambdas: tuple[float, ...],
    objective: str,
    first_layer_rate_weight: float = 0.0,
    pictures: list[Tensor] | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The paper's loss, averaged over layers: Σ_k [Σ_{j≤k} R_j + λ_k·D_k] / K, plus w·R_1.

    R_1 already counts in every term; `first_layer_rate_weight` w adds to it,
    to move the first layer's rate where the λ alone do not. D_k is measured on
    `pictures[k]` (the pictures shown) when given, else on the reconstructions.
    """
    pixels = image.shape[0] * image.shape[2] * image.shape[3]
    rates = layer_rates(outputs, pixels)
    pictures = pictures or [o.reconstruction for o in outputs]
    distortions = [distortion(picture, image, objective) for picture in pictures]
    loss = image.new_zeros(())
    cumulative = image.new_zeros(())
    for rate, dist, lam in zip(rates, distortions, lambdas):
        cumulative = cumulative + rate
        loss = loss + cumulative + lam * dist
    return loss / len(outputs) + first_layer_rate_weight * rates[0], rates, distortions


def shown_pictures(model: ScalableCodec, outputs: list[LayerOutput]) -> list[Tensor]:
    """The picture a viewer sees after each layer (post-filtered when the model has a filter)."""
    return [model.shown_picture(o.reconstruction, k) for k, o in enumerate(outputs, start=1)]


def post_filter_loss(model: ScalableCodec, reconstructions: list[Tensor], image: Tensor) -> Tensor:
    """Mean over layers of log MSE of the shown picture: the mean PSNR gain, every layer alike."""
    shown = [model.shown_picture(r, k) for k, r in enumerate(reconstructions, start=1)]
    return torch.stack([torch.log((s - image).square().mean()) for s in shown]).mean()


def as_tiles(images: Tensor, side: int) -> Tensor:
    """(N, 3, H, W) to its tiles of side x side in raster order, (N * H/side * W/side, 3, side, side)."""
    n, c, height, width = images.shape
    tiles = images.reshape(n, c, height // side, side, width // side, side).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(-1, c, side, side)


def from_tiles(tiles: Tensor, height: int, width: int) -> Tensor:
    """`as_tiles` undone: the tiles of pictures height x width assembled, (N, 3, height, width)."""
    _, c, side, _ = tiles.shape
    rows, columns = height // side, width // side
    pictures = tiles.reshape(-1, rows, columns, c, side, side).permute(0, 3, 1, 4, 2, 5)
    return pictures.reshape(-1, c, height, width)


class Trainer:
    """Owns the model, optimizers and data for one resumable training run."""

    def __init__(self, settings: TrainSettings) -> None:
        self.settings = settings
        self.device = torch.device(settings.device)
        torch.manual_seed(settings.seed)
        self.step = 0
        self.elapsed = 0.0
        config = settings.config or CodecConfig()
        saved = (
            torch.load(settings.checkpoint, map_location="cpu", weights_only=False)
            if settings.checkpoint.exists()
            else None
        )
        initial = None
        if saved is None and settings.init_weights is not None:
            initial = torch.load(settings.init_weights, map_location="cpu", weights_only=False)
        if saved is not None or initial is not None:
            config = CodecConfig.from_dict((saved or initial)["config"])
        if settings.lambdas is not None:
            config = CodecConfig.from_dict({**config.to_dict(), "lambdas": settings.lambdas})
        for option in ("post_filter_channels", "post_filter_depth", "context_channels"):
            if getattr(settings, option):
                config = CodecConfig.from_dict({**config.to_dict(), option: getattr(settings, option)})
        self.model = ScalableCodec(config).to(self.device)
        gains, main, context, aux = self._parameter_groups()
        groups = [{"params": main, "lr_scale": 1.0}, {"params": gains, "lr_scale": GAIN_LR_SCALE}]
        if context:
            groups.append({"params": context, "lr_scale": CONTEXT_LR_SCALE})
        self.optimizer = torch.optim.Adam(groups, lr=settings.learning_rate)
        self._set_learning_rate(settings.learning_rate)
        self.aux_optimizer = torch.optim.Adam(aux, lr=1e-3) if aux else None
        self.sampler = CropSampler(load_crop_bank(settings.crops), settings.crop_size, settings.seed)
        if saved is not None:
            self._restore(saved)
        elif initial is not None:
            # a weights file carries the model only: the optimiser starts afresh;
            # a new post-filter or context starts as doing nothing
            missing, unexpected = self.model.load_state_dict(initial["state_dict"], strict=False)
            new = [name for name in missing if not name.startswith(("post_filter.", "context."))]
            if new or unexpected:
                raise ValueError(f"{settings.init_weights} does not fit: missing {new}, unexpected {unexpected}")
            self._pass_through_new_filter_convolutions(missing)
            # fitted tables belong to the symbols they were counted on, which training changes:
            # the trained weights are fitted again (`python -m codec fit-tables`)
            self.model.latent_tables = None
            self.step = int(initial["info"].get("steps", 0))
            self.elapsed = float(initial["info"].get("training_seconds", 0.0))
        else:
            self.model.initialise_scales(self.sampler.batch(4 * settings.batch).to(self.device))
        self.validation = None
        if settings.validation_dir is not None:
            # a clone without ../shared trains without the validation rows of the log
            paths = [path for name in VALIDATION_IMAGES if (path := settings.validation_dir / name).exists()]
            self.validation = center_crops(paths, 256).to(self.device) if paths else None
        self._stop_requested = False

    def _pass_through_new_filter_convolutions(self, missing: list[str]) -> None:
        """A filter deepened from a trained one (`post_filter_depth`) starts as that filter."""
        if self.model.post_filter is None or "post_filter.head.weight" in missing:
            return
        for index in range(len(self.model.post_filter.body)):
            if f"post_filter.body.{index}.weight" in missing:
                self.model.post_filter.pass_through_(index)

    def _parameter_groups(self) -> tuple[list, list, list, list]:
        """Per-layer tables, other network weights, the context, entropy-bottleneck quantiles.

        When training a post-filter, it alone is trained and the codec is frozen.
        """
        if self.settings.post_filter_channels:
            self.model.requires_grad_(False)
            self.model.post_filter.requires_grad_(True)
            return [], list(self.model.post_filter.parameters()), [], []
        gains, main, context, aux = [], [], [], []
        for name, parameter in self.model.named_parameters():
            if name.endswith("quantiles"):
                aux.append(parameter)
            elif name in ScalableCodec.PER_LAYER_TABLES:
                gains.append(parameter)
            elif name.startswith("context."):
                context.append(parameter)
            else:
                main.append(parameter)
        return gains, main, context, aux

    def _set_learning_rate(self, learning_rate: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate * group["lr_scale"]

    def _restore(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.aux_optimizer is not None:
            self.aux_optimizer.load_state_dict(saved["aux_optimizer"])
        self.sampler.restore(saved["sampler"])
        torch.set_rng_state(saved["torch_rng"])
        self.step = saved["step"]
        self.elapsed = saved["elapsed"]
        self._set_learning_rate(self.settings.learning_rate)

    def save(self) -> None:
        state = {
            "config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict() if self.aux_optimizer is not None else None,
            "sampler": self.sampler.state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "elapsed": self.elapsed,
        }
        path = self.settings.checkpoint
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(path)

    def train_step(self) -> dict:
        s = self.settings
        if s.post_filter_channels:
            return self._post_filter_step()
        self.model.train()
        image = self.sampler.batch(s.batch).to(self.device)
        with self._precision():
            outputs = self.model(image, s.layers)
        lambdas = self.model.config.lambdas
        # with a post-filter the codec and the filter learn together, against the picture shown
        loss, rates, distortions = rate_distortion_loss(
            outputs, image, lambdas, s.objective, s.first_layer_rate_weight, shown_pictures(self.model, outputs)
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # only the main parameters: the quantiles still hold the last aux gradient
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], 5.0)
        self.optimizer.step()
        aux = self.model.auxiliary_loss()
        self.aux_optimizer.zero_grad(set_to_none=True)
        aux.backward()
        self.aux_optimizer.step()
        return {"loss": loss.item(), "bpp": sum(r.item() for r in rates), "aux": aux.item()}

    def _post_filter_step(self) -> dict:
        """The frozen codec runs in eval mode (rounding, as at test time); only the filter learns."""
        self.model.eval()
        image = self.sampler.batch(self.settings.batch).to(self.device)
        with torch.no_grad(), self._precision():
            outputs, reconstructions = self._coded(image, self.settings.layers)
        with self._precision():
            loss = post_filter_loss(self.model, reconstructions, image)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        pixels = image.shape[0] * image.shape[2] * image.shape[3]
        return {"loss": loss.item(), "bpp": sum(r.item() for r in layer_rates(outputs, pixels))}

    def _precision(self) -> torch.autocast:
        """The forward passes' arithmetic: float32, or bfloat16 products (`TrainSettings.precision`)."""
        enabled = self.settings.precision == "bfloat16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _coded(self, image: Tensor, layers: int | None = None) -> tuple[list[LayerOutput], list[Tensor]]:
        """The codec's layers of `image` and the reconstruction after each, as the post-filter sees it:
        with `filter_tile_size` the crops are coded as tiles and the reconstructions assembled."""
        side = self.settings.filter_tile_size
        if not side:
            outputs = self.model(image, layers)
            return outputs, [o.reconstruction for o in outputs]
        outputs = self.model(as_tiles(image, side), layers)
        height, width = image.shape[2:]
        return outputs, [from_tiles(o.reconstruction, height, width) for o in outputs]

    @torch.no_grad()
    def validate(self) -> dict:
        """Estimated bpp and PSNR per layer on the fixed validation crops."""
        self.model.eval()
        outputs, reconstructions = self._coded(self.validation)
        pixels = self.validation.shape[0] * self.validation.shape[2] * self.validation.shape[3]
        rates = layer_rates(outputs, pixels)
        row, cumulative = {}, 0.0
        for k, (rate, reconstruction) in enumerate(zip(rates, reconstructions), start=1):
            cumulative += rate.item()
            shown = self.model.shown_picture(reconstruction, k)
            mse = (shown.clamp(0, 1) - self.validation).square().mean().item() * 255.0**2
            row[f"bpp{k}"] = round(cumulative, 4)
            row[f"psnr{k}"] = round(psnr_from_mse(mse), 3)
        return row

    def _log(self, row: dict) -> None:
        path = self.settings.log
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def request_stop(self, *_: object) -> None:
        self._stop_requested = True

    def run(self) -> None:
        """Train until `steps`, or until SIGTERM/SIGINT; always end with a checkpoint."""
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._loop()
        finally:
            self.save()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self) -> None:
        s = self.settings
        last_save = time.monotonic()
        running: dict[str, float] = {}
        bar = tqdm(total=s.steps, initial=self.step, unit="step", dynamic_ncols=True)
        while self.step < s.steps and not self._stop_requested:
            started = time.monotonic()
            stats = self.train_step()
            self.step += 1
            self.elapsed += time.monotonic() - started
            for key, value in stats.items():
                running[key] = 0.98 * running.get(key, value) + 0.02 * value
            bar.update(1)
            bar.set_postfix(loss=f"{running['loss']:.3f}", bpp=f"{running['bpp']:.3f}")
            if self.validation is not None and self.step % s.validate_every == 0:
                row = {"step": self.step, "seconds": round(self.elapsed, 1), "loss": round(running["loss"], 4)}
                row.update(self.validate())
                self._log(row)
                bar.write(" ".join(f"{k}={v}" for k, v in row.items()))
            if time.monotonic() - last_save > s.checkpoint_minutes * 60:
                self.save()
                last_save = time.monotonic()
        bar.close()


def export_weights(checkpoint: Path, output: Path) -> Path:
    """Strip a checkpoint to the model and its coding tables (a weights file)."""
    from codec.api import save_weights

    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = ScalableCodec(CodecConfig.from_dict(saved["config"]))
    model.load_state_dict(saved["model"])
    info = {"steps": saved["step"], "training_seconds": round(saved["elapsed"], 1)}
    save_weights(model, output, info)
    return output
