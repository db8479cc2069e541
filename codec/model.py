"""The scalable codec: residual ConvLSTM coder with a recurrent hyperprior.

One RNN iteration is one layer of the bitstream. At layer k

* the encoder sees the residual between the input and the reconstruction
  after layer k-1 and emits latents y_k at 1/16 resolution;
* a hyper-encoder turns y_k into side information z_k at 1/64 resolution;
* the hyper-decoder, whose state carries across layers, predicts a scale and
  a mean for every element of y_k from z_k, the previous layer's quantized
  latents and its state; it runs on the exact fixed-point grid of
  `codec.exact`, so encoder and decoder always agree on the probabilities;
* optionally a frequency context codes y_k in two passes (channel-wise
  autoregression, Minnen & Singh 2020): each block's low frequencies with the
  hyper-decoder's parameters, then its high frequencies with parameters
  refined from the decoded low frequencies of the block and its neighbours;
* the decoder turns the quantized latents into an increment that is added to
  the reconstruction (additive residual formulation).

Per-layer learned gains let one set of recurrent weights serve residuals whose
size shrinks by an order of magnitude from the first layer to the last.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from torch import Tensor, nn
from torch.nn import functional as F

from codec import exact
from codec.layers import ConvLSTMCell, LSTMState, conv3x3
from codec.postfilter import PostFilter
from codec.symbol_tables import FittedLatentTables, frequency_bands, latent_contexts, same_channel_neighbours
from codec.transforms import LappedAnalysis, LappedSynthesis
from codec.wavelet import (
    WaveletAnalysis,
    WaveletSynthesis,
    check_coefficient_counts,
    checkerboard_first_pass,
    significant_neighbours,
)

if TYPE_CHECKING:
    from codec.onnx_runtime import InferenceNetworks

LATENT_STRIDE = 16
SIDE_STRIDE = 64
SCALE_MIN = 0.11
SCALE_MAX = 256.0
SCALE_LEVELS = 64
LOG_SCALE_STEP = math.log(SCALE_MAX / SCALE_MIN) / (SCALE_LEVELS - 1)
INITIAL_RECONSTRUCTION = 0.5
# Latents are transform coefficients times this gain: a quantization step of
# about 0.2 in coefficient units, near where a 0.1 bpp first layer lands.
INITIAL_LATENT_GAIN = 5.0
# Each layer's residual is amplified by this factor more than the last one's,
# and its increment attenuated by the same, so all layers see similar numbers.
RESIDUAL_GAIN_PER_LAYER = 1.5
# Symbol magnitudes above this count as this in the history features.
HISTORY_MAGNITUDE_LIMIT = 8.0
# the codec's transforms by name: (analysis, synthesis)
TRANSFORMS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "lapped": (LappedAnalysis, LappedSynthesis),
    "wavelet": (WaveletAnalysis, WaveletSynthesis),
}
# what a fresh training run keeps of each transform: (luma, chroma) coefficients per 16x16 block
FRESH_COEFFICIENTS = {"lapped": (160, 48), "wavelet": (256, 64)}


@dataclass(frozen=True)
class CodecConfig:
    """Everything needed to rebuild the network; stored with the weights."""

    layers: int = 6
    luma_coefficients: int = FRESH_COEFFICIENTS["lapped"][0]
    chroma_coefficients: int = FRESH_COEFFICIENTS["lapped"][1]
    rnn_channels: int = 96
    hyper_channels: int = 64
    history_channels: int = 32
    side_channels: int = 24
    lambdas: tuple[float, ...] = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.05)
    # 0: no post-filter; the picture shown is the running reconstruction
    post_filter_channels: int = 0
    # the post-filter's hidden 3x3 convolutions (codec.postfilter.PostFilter; its output convolution is on top)
    post_filter_depth: int = 3
    # 0: one pass per layer; > 0: a two-pass frequency context this wide
    context_channels: int = 0
    # "lapped": 32x32 bases at stride 16 (codec.transforms); "wavelet": a fixed CDF 9/7 in four
    # levels (codec.wavelet), whose coefficient counts end whole levels
    transform: str = "lapped"

    def __post_init__(self) -> None:
        if len(self.lambdas) != self.layers:
            raise ValueError("one lambda per layer is required")
        if list(self.lambdas) != sorted(self.lambdas):
            raise ValueError("lambdas must rise with the layer index")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {sorted(TRANSFORMS)}")
        if self.transform == "wavelet":
            check_coefficient_counts(self.luma_coefficients, self.chroma_coefficients)

    @property
    def latent_channels(self) -> int:
        return self.luma_coefficients + 2 * self.chroma_coefficients

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CodecConfig:
        data = dict(data)
        data["lambdas"] = tuple(data["lambdas"])
        return cls(**data)


def scale_table() -> list[float]:
    return [SCALE_MIN * math.exp(LOG_SCALE_STEP * i) for i in range(SCALE_LEVELS)]


class RecurrentRefiner(nn.Module):
    """A ConvLSTM branch that adds a learned correction to coefficients.

    Its output convolution starts at zero, so an untrained refiner passes the
    coefficients through unchanged and training only ever improves on the
    plain transform codec.
    """

    def __init__(self, coefficients: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(coefficients, hidden, 1)
        self.rnn = ConvLSTMCell(hidden, hidden)
        self.expand = conv3x3(hidden, coefficients)
        nn.init.zeros_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)

    def forward(self, coefficients: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        x = self.reduce(coefficients)
        if state is None:
            state = self.rnn.initial_state(x)
        x, state = self.rnn(x, state)
        return coefficients + self.expand(x), state


class ResidualEncoder(nn.Module):
    """Residual (3 channels, full resolution) to latents at 1/16 resolution."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.analysis = TRANSFORMS[config.transform][0](config.luma_coefficients, config.chroma_coefficients)
        self.refiner = RecurrentRefiner(config.latent_channels, config.rnn_channels)

    def forward(self, residual: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        return self.refiner(self.analysis(residual), state)


class ResidualDecoder(nn.Module):
    """Quantized latents to the layer's increment of the reconstruction."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.refiner = RecurrentRefiner(config.latent_channels, config.rnn_channels)
        self.synthesis = TRANSFORMS[config.transform][1](config.luma_coefficients, config.chroma_coefficients)

    def forward(self, latents: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        coefficients, state = self.refiner(latents, state)
        return self.synthesis(coefficients), state


class HyperEncoder(nn.Module):
    """Latents y_k to side information z_k; its state remembers earlier layers."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        m, h = config.latent_channels, config.hyper_channels
        self.magnitude = nn.Conv2d(m, h, 1)
        self.state_update = conv3x3(2 * h, h)
        self.down32 = conv3x3(h, h, stride=2)
        self.down64 = conv3x3(h, config.side_channels, stride=2)

    def forward(self, latents: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        x = F.leaky_relu(self.magnitude(latents.abs()), 0.1)
        if state is None:
            state = torch.zeros_like(x)
        state = torch.tanh(self.state_update(torch.cat([x, state], dim=1)))
        z = self.down64(F.leaky_relu(self.down32(state), 0.1))
        return z, state


class HyperDecoder(nn.Module):
    """Side information and decoded history to entropy parameters of y_k.

    A gated convolutional recurrent cell at 1/16 resolution built only from
    `codec.exact` operations, so its output is bit-exact in `exact` mode. Its
    inputs are z_k and the previous layer's quantized latents, which both
    sides know. Outputs are the scale as a continuous index into
    `scale_table()` and the mean of each latent.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        m, h, s = config.latent_channels, config.hyper_channels, config.side_channels
        history = config.history_channels
        self.hyper_channels = h
        self.up32 = exact.ExactConv2d(s, 4 * h)
        self.up16 = exact.ExactConv2d(h, 4 * h)
        self.history = exact.ExactConv2d(2 * m, history, kernel_size=1)
        self.gate = exact.ExactConv2d(h + history + h, h)
        self.candidate = exact.ExactConv2d(h + history + h, h)
        self.mix = exact.ExactConv2d(h + history + h, 2 * h, kernel_size=1)
        self.params = exact.ExactConv2d(2 * h, 2 * m, kernel_size=1)
        with torch.no_grad():
            self.params.weight.mul_(0.1)

    def initial_state(self, side: Tensor, exact_mode: bool) -> Tensor:
        n, _, h, w = side.shape
        dtype = torch.float64 if exact_mode else side.dtype
        return torch.zeros(n, self.hyper_channels, h * 4, w * 4, dtype=dtype, device=side.device)

    def forward(
        self, side: Tensor, previous_latents: Tensor, state: Tensor, exact_mode: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        e = exact_mode
        side = exact.activation(side, e)
        previous_latents = exact.activation(previous_latents, e)
        u = F.pixel_shuffle(F.relu(self.up32(side, e)), 2)
        u = F.pixel_shuffle(F.relu(self.up16(u, e)), 2)
        history = F.relu(self.history(torch.cat([previous_latents, previous_latents.abs()], dim=1), e))
        joint = torch.cat([u, history, state], dim=1)
        gate = exact.hard_sigmoid(self.gate(joint, e), e)
        candidate = torch.clamp(self.candidate(joint, e), -1.0, 1.0)
        state = exact.activation(state + gate * (candidate - state), e)
        features = F.relu(self.mix(torch.cat([u, history, state], dim=1), e))
        scale_index, means = self.params(features, e).chunk(2, dim=1)
        # centred on the middle of the table; an integer offset keeps it exact
        return scale_index + SCALE_LEVELS // 2, means, state


# The first pass of a layer with context: every block's lowest frequencies, the
# first 8 zigzag diagonals of luma and the first 4 of each chroma axis.
FIRST_PASS_LUMA = 36
FIRST_PASS_CHROMA = 10


def first_pass_mask(config: CodecConfig, like: Tensor) -> Tensor:
    """True for the latents coded in the first pass: each block's lowest frequencies for the lapped
    transform, shape (1, C, 1, 1); a checkerboard of every band for the wavelet, (1, C, h, w) like `like`."""
    if config.transform == "wavelet":
        height, width = like.shape[-2:]
        luma, chroma = config.luma_coefficients, config.chroma_coefficients
        return checkerboard_first_pass(luma, chroma, height, width).to(like.device)[None]
    mask = torch.zeros(config.latent_channels, dtype=torch.bool, device=like.device)
    mask[:FIRST_PASS_LUMA] = True
    for start in (config.luma_coefficients, config.luma_coefficients + config.chroma_coefficients):
        mask[start : start + FIRST_PASS_CHROMA] = True
    return mask[None, :, None, None]


class FrequencyContext(nn.Module):
    """Second-pass entropy parameters from the first pass of the same layer.

    The first pass's symbols (zero where not yet decoded) and the hyper-decoder's
    scale index go through exact convolutions (3x3 support: the block and its
    neighbours) to a correction of the scale index and the mean of every latent;
    only the second pass uses it.
    The symbols are integers and the weights on the grid, so it is exact. Its
    output convolution starts at zero: added to a trained codec, it changes
    nothing until it has learned something.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        m, c = config.latent_channels, config.context_channels
        self.reduce = exact.ExactConv2d(3 * m, c, kernel_size=1)
        self.spread = exact.ExactConv2d(c, c)
        self.params = exact.ExactConv2d(c, 2 * m, kernel_size=1)
        nn.init.zeros_(self.params.weight)
        nn.init.zeros_(self.params.bias)

    def forward(self, first_symbols: Tensor, scale_index: Tensor, exact_mode: bool) -> tuple[Tensor, Tensor]:
        e = exact_mode
        first_symbols = exact.activation(first_symbols, e)
        inputs = torch.cat([first_symbols, first_symbols.abs(), exact.activation(scale_index, e)], dim=1)
        x = F.relu(self.reduce(inputs, e))
        x = F.relu(self.spread(x, e))
        scale_correction, mean_correction = self.params(x, e).chunk(2, dim=1)
        return scale_correction, mean_correction


def scale_from_index(scale_index: Tensor) -> Tensor:
    """Continuous scale index to standard deviation (training path)."""
    return SCALE_MIN * torch.exp(LOG_SCALE_STEP * scale_index)


def quantized_scale_index(scale_index: Tensor) -> Tensor:
    """Exact scale index to the integer row of the CDF table (coding path)."""
    return torch.clamp(torch.round(scale_index), 0, SCALE_LEVELS - 1).to(torch.int32)


@dataclass
class LayerOutput:
    """What one training iteration produced."""

    reconstruction: Tensor
    latent_likelihoods: Tensor
    side_likelihoods: Tensor


@dataclass
class RecurrentState:
    """Everything carried from one layer to the next.

    The encoder-only parts (`encoder`, `hyper_encoder`) are None on the
    decoding side.
    """

    reconstruction: Tensor
    decoder: LSTMState | None = None
    hyper_decoder: Tensor | None = None
    previous_latents: Tensor | None = None
    means: Tensor | None = None
    previous_magnitudes: Tensor | None = None
    significance: Tensor | None = None
    encoder: LSTMState | None = None
    hyper_encoder: Tensor | None = None
    layer: int = 0


def stack_states(states: list[RecurrentState]) -> RecurrentState:
    """Tiles' states as one batch, so that a layer's networks run once for all of them.

    The tiles must be of one padded size and at one layer."""
    if len({state.layer for state in states}) != 1:
        raise ValueError("only states at the same layer stack")

    def stacked(values: list):
        if values[0] is None:
            return None
        if isinstance(values[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*values, strict=True))
        return torch.cat(values)

    fields = {name: stacked([getattr(state, name) for state in states]) for name in _TENSOR_FIELDS}
    return RecurrentState(**fields, layer=states[0].layer)


def split_state(state: RecurrentState) -> list[RecurrentState]:
    """A batch's state back to one state per tile (copies: a tile kept alone holds only its own memory)."""
    count = state.reconstruction.shape[0]

    def part(value, index: int):
        if value is None:
            return None
        if isinstance(value, tuple):
            return tuple(v[index : index + 1].clone() for v in value)
        return value[index : index + 1].clone()

    return [
        RecurrentState(**{name: part(getattr(state, name), i) for name in _TENSOR_FIELDS}, layer=state.layer)
        for i in range(count)
    ]


_TENSOR_FIELDS = tuple(name for name in RecurrentState.__dataclass_fields__ if name != "layer")


class ScalableCodec(CompressionModel):
    """The whole network. `forward` trains; `codec.coding` runs it for real."""

    # Small per-layer tables that must move by whole units early in training:
    # the optimiser gives them a larger learning rate.
    PER_LAYER_TABLES = (
        "log_residual_gain",
        "log_latent_gain",
        "log_latent_inverse_gain",
        "log_increment_gain",
        "scale_index_offset",
        "history_scale_weights",
    )

    def __init__(self, config: CodecConfig | None = None) -> None:
        super().__init__()
        self.config = config or CodecConfig()
        k, m = self.config.layers, self.config.latent_channels
        self.encoder = ResidualEncoder(self.config)
        self.decoder = ResidualDecoder(self.config)
        self.hyper_encoder = HyperEncoder(self.config)
        self.hyper_decoder = HyperDecoder(self.config)
        self.side_models = nn.ModuleList(EntropyBottleneck(self.config.side_channels) for _ in range(k))
        self.latent_model = GaussianConditional(scale_table())
        # the latents' coding tables fitted after training (`codec.fit_tables`); None: the Gaussian rows
        self.latent_tables: FittedLatentTables | None = None
        self.register_buffer(
            "latent_bands",
            frequency_bands(self.config.luma_coefficients, self.config.chroma_coefficients),
            persistent=False,
        )
        # log-domain gains per layer: residual in, latent out/in, increment out
        self.log_residual_gain = nn.Parameter(torch.arange(k, dtype=torch.float32) * math.log(RESIDUAL_GAIN_PER_LAYER))
        self.scale_index_offset = nn.Parameter(torch.zeros(k, m))
        self.history_scale_weights = nn.Parameter(torch.zeros(k, 3, m))
        self.log_latent_gain = nn.Parameter(torch.full((k, m), math.log(INITIAL_LATENT_GAIN)))
        self.log_latent_inverse_gain = nn.Parameter(torch.full((k, m), -math.log(INITIAL_LATENT_GAIN)))
        self.log_increment_gain = nn.Parameter(-self.log_residual_gain.detach().clone())
        channels = self.config.post_filter_channels
        self.post_filter = PostFilter(k, channels, self.config.post_filter_depth) if channels else None
        self.context = FrequencyContext(self.config) if self.config.context_channels else None
        # set by `codec.api.load_model`: the analysis, synthesis and post-filter through ONNX Runtime at inference
        self.inference: InferenceNetworks | None = None

    def _float_network(self, name: str, module: nn.Module):
        """`module`, or its ONNX Runtime graph when the model has one and no gradient is recorded
        (training and the encoder-side search differentiate through the torch modules)."""
        if self.inference is None or torch.is_grad_enabled():
            return module
        return self.inference.network(name)

    # -- the per-layer pieces, shared by training and coding -----------------

    def initial_state(self, image: Tensor) -> RecurrentState:
        return RecurrentState(reconstruction=torch.full_like(image, INITIAL_RECONSTRUCTION))

    def analyse(self, image: Tensor, state: RecurrentState) -> Tensor:
        """Encoder side: latents y_k of the current residual."""
        k = state.layer
        residual = (image - state.reconstruction) * self.log_residual_gain[k].exp()
        latents, state.encoder = self._float_network("analysis", self.encoder)(residual, state.encoder)
        return latents * self.log_latent_gain[k].exp()[None, :, None, None]

    def side_information(self, latents: Tensor, state: RecurrentState) -> Tensor:
        side, state.hyper_encoder = self.hyper_encoder(latents, state.hyper_encoder)
        return side

    def entropy_parameters(self, side_hat: Tensor, state: RecurrentState, exact_mode: bool) -> tuple[Tensor, Tensor]:
        """Scale index and mean for y_k. Updates the hyper-decoder state.

        In exact mode everything here runs in float64 on the CPU and the
        results stay there: they only feed the entropy coder.
        """
        if exact_mode:
            side_hat = side_hat.cpu().double()
        if state.hyper_decoder is None:
            state.hyper_decoder = self.hyper_decoder.initial_state(side_hat, exact_mode)
        previous = state.previous_latents
        if previous is None:
            n, _, h, w = state.hyper_decoder.shape
            previous = state.hyper_decoder.new_zeros(n, self.config.latent_channels, h, w)
        scale_index, means, state.hyper_decoder = self.hyper_decoder(
            side_hat, previous, state.hyper_decoder, exact_mode
        )
        offset = exact.to_grid(self.scale_index_offset[state.layer], exact.ACTIVATION_BITS, SCALE_LEVELS, exact_mode)
        if exact_mode:
            offset = offset.cpu().double()
        scale_index = scale_index + offset[None, :, None, None] + self._history_scale(state, exact_mode)
        state.means = means
        return scale_index, means

    def context_parameters(
        self, first_symbols: Tensor, scale_index: Tensor, means: Tensor, state: RecurrentState, exact_mode: bool
    ) -> tuple[Tensor, Tensor]:
        """The second pass: its parameters refined from the decoded first pass.

        `first_symbols` are round(y - mean) in the first pass's channels and 0
        elsewhere. The first pass keeps the hyper-decoder's parameters. Updates
        `state.means`.
        """
        scale_correction, mean_correction = self.context(first_symbols, scale_index, exact_mode)
        first = first_pass_mask(self.config, scale_index)
        scale_index = torch.where(first, scale_index, scale_index + scale_correction)
        means = torch.where(first, means, means + mean_correction)
        state.means = means
        return scale_index, means

    def latent_contexts(self, state: RecurrentState, like: Tensor) -> Tensor:
        """Every latent's context for the fitted tables (`codec.symbol_tables`): its band and what
        earlier layers sent there. Call before `synthesise` moves the history on."""
        return latent_contexts(
            self.latent_bands, state.previous_magnitudes, state.significance, like, self.significant_neighbours
        )

    def significant_neighbours(self, significance: Tensor) -> Tensor:
        """Whether a latent's neighbours in the transform's sense had a non-zero symbol (the history context)."""
        if self.config.transform == "wavelet":
            return significant_neighbours(significance, self.config.luma_coefficients, self.config.chroma_coefficients)
        return same_channel_neighbours(significance)

    def coding_rows(self, layer: int, contexts: Tensor, scale_rows: Tensor) -> Tensor:
        """The coding-table row of every latent: its scale's Gaussian row, or with fitted tables the
        row of its layer, context and scale."""
        if self.latent_tables is None:
            return scale_rows
        return self.latent_tables.row_indexes(layer, contexts, scale_rows)

    def _history_scale(self, state: RecurrentState, exact_mode: bool) -> Tensor | float:
        """Per-coefficient scale correction from what earlier layers sent there.

        A residual coefficient is distributed very differently once an earlier
        layer has coded it (bounded by that layer's step) than while it is
        still unsent. The hyper-decoder sees the history only through a narrow
        bottleneck, so this path gives every coefficient its own learned
        offsets, per layer: for a non-zero symbol in the previous layer, for
        that symbol's magnitude (up to 8), and for having been non-zero in any
        earlier layer. Features are integers and weights on the grid: exact.
        """
        if state.previous_magnitudes is None:
            return 0.0
        weights = self.history_scale_weights[state.layer]
        weights = exact.to_grid(weights, exact.WEIGHT_BITS, exact.WEIGHT_LIMIT, exact_mode)
        if exact_mode:
            weights = weights.cpu().double()
        magnitude = state.previous_magnitudes
        features = (magnitude > 0).to(magnitude), magnitude.clamp(max=HISTORY_MAGNITUDE_LIMIT), state.significance
        correction = sum(w[None, :, None, None] * f for w, f in zip(weights, features))
        return exact.activation(correction, exact_mode)

    @torch.no_grad()
    def initialise_scales(self, images: Tensor, channels: Tensor | None = None) -> None:
        """Data-dependent start: set each layer's per-channel scale offset so that
        the predicted scale matches the latents' RMS on `images` (only `channels`, if given).

        Without this the entropy model starts with one scale for coefficients
        whose sizes differ by two orders of magnitude, and the learning rate
        moves the offsets by a thousandth of a level per step.
        """
        state = self.initial_state(images)
        for k in range(self.config.layers):
            latents = self.analyse(images, state)
            side = self.side_information(latents, state)
            scale_index, means = self.entropy_parameters(side, state, exact_mode=False)
            rms = latents.square().mean(dim=(0, 2, 3)).sqrt().clamp_min(SCALE_MIN)
            target = torch.log(rms / SCALE_MIN) / LOG_SCALE_STEP
            correction = target - scale_index.mean(dim=(0, 2, 3))
            if channels is None:
                self.scale_index_offset[k] += correction
            else:
                self.scale_index_offset[k, channels] += correction[channels]
            self.synthesise(torch.round(latents - means) + means, state)

    def synthesise(self, latents_hat: Tensor, state: RecurrentState) -> None:
        """Decoder side: add layer k's increment to the reconstruction."""
        k = state.layer
        state.previous_latents = latents_hat
        magnitude = torch.round(latents_hat - state.means).abs().detach()
        state.previous_magnitudes = magnitude
        nonzero = (magnitude > 0).to(magnitude)
        state.significance = nonzero if state.significance is None else torch.maximum(state.significance, nonzero)
        x = latents_hat.to(state.reconstruction) * self.log_latent_inverse_gain[k].exp()[None, :, None, None]
        increment, state.decoder = self._float_network("synthesis", self.decoder)(x, state.decoder)
        state.reconstruction = state.reconstruction + increment * self.log_increment_gain[k].exp()
        state.layer = k + 1

    def shown_picture(self, reconstruction: Tensor, layers: int) -> Tensor:
        """The picture a viewer sees after `layers` layers: post-filtered if the model has a filter."""
        if self.post_filter is None:
            return reconstruction
        if self.inference is None or torch.is_grad_enabled():
            return self.post_filter(reconstruction, layers - 1)
        return self.inference.post_filter()(reconstruction, layers - 1)

    # -- training ------------------------------------------------------------

    def forward(
        self,
        image: Tensor,
        layers: int | None = None,
        latent_offsets: list[Tensor] | None = None,
        rounded_rates: bool = False,
    ) -> list[LayerOutput]:
        """Run `layers` iterations with training-time quantization.

        Rates use additive uniform noise; the decoder and the hyper-decoder see
        rounded values with a straight-through gradient. The encoder-side
        search (`codec.search`) adds `latent_offsets[k]` to the analysis of
        layer k and asks for `rounded_rates`: the likelihoods of the rounded
        symbols the coder will write, with straight-through gradients (with fitted tables, what the tables
        charge, and the gradient of their costs interpolated between symbols).
        """
        layers = layers or self.config.layers
        state = self.initial_state(image)
        outputs: list[LayerOutput] = []
        for k in range(layers):
            latents = self.analyse(image, state)
            if latent_offsets is not None:
                latents = latents + latent_offsets[k]
            side = self.side_information(latents, state)
            medians = self.side_models[k].quantiles[:, 0, 1].detach()[None, :, None, None]
            side_hat = exact.round_ste(side - medians) + medians
            if rounded_rates:
                side_likelihoods = _side_likelihoods(self.side_models[k], side_hat)
            else:
                _, side_likelihoods = self.side_models[k](side)
            scale_index, means = self.entropy_parameters(side_hat, state, exact_mode=False)
            if self.context is not None:
                first_symbols = exact.round_ste(latents - means) * first_pass_mask(self.config, latents)
                scale_index, means = self.context_parameters(first_symbols, scale_index, means, state, False)
            latents_hat = exact.round_ste(latents - means) + means
            if rounded_rates and self.latent_tables is not None:
                rows = self.coding_rows(k, self.latent_contexts(state, latents), quantized_scale_index(scale_index))
                bits = self.latent_tables.symbol_bits(self.latent_model, rows, latents - means)
                latent_likelihoods = torch.exp2(-bits)
            elif rounded_rates:
                likelihoods = self.latent_model._likelihood(latents_hat, scale_from_index(scale_index), means)
                latent_likelihoods = self.latent_model.likelihood_lower_bound(likelihoods)
            else:
                _, latent_likelihoods = self.latent_model(latents, scale_from_index(scale_index), means)
            self.synthesise(latents_hat, state)
            outputs.append(LayerOutput(state.reconstruction, latent_likelihoods, side_likelihoods))
        return outputs

    def load_state_dict(self, state_dict: dict[str, Tensor], strict: bool = True):
        """Also a state without the latent model's coding tables, which weights files leave out:
        they follow from the fixed `scale_table()` alone and are rebuilt here. Fitted tables in the
        state are taken in at their stored size; a strict load without them leaves the model without."""
        if "latent_tables.rows" in state_dict:
            self.latent_tables = FittedLatentTables.like_state(state_dict, "latent_tables.")
        elif strict:
            self.latent_tables = None
        if any(name not in state_dict for name in DERIVED_TABLES):
            self.latent_model.update_scale_table(scale_table(), force=True)
            rebuilt = {name: getattr(self.latent_model, name.split(".")[1]) for name in DERIVED_TABLES}
            state_dict = {**rebuilt, **state_dict}
        return super().load_state_dict(state_dict, strict=strict)

    def auxiliary_loss(self) -> Tensor:
        return sum(m.loss() for m in self.side_models)

    def update(self, scale_table_values: list[float] | None = None, force: bool = False, **_: object) -> bool:
        """Build the integer CDF tables the rANS coder uses (after training)."""
        return super().update(scale_table=scale_table_values or scale_table(), force=force)


# The latent model's CDF tables: a function of the fixed scale table, 0.8 MB of a weights file.
DERIVED_TABLES = tuple(f"latent_model.{name}" for name in ("_quantized_cdf", "_offset", "_cdf_length"))


def _side_likelihoods(side_model: EntropyBottleneck, side_hat: Tensor) -> Tensor:
    """Likelihoods of already rounded side information, with gradients (the bottleneck's own
    forward rounds again, which would stop them). Same layout as its forward: (N, C, h, w)."""
    channels = side_hat.shape[1]
    values = side_hat.transpose(0, 1).reshape(channels, 1, -1)
    likelihoods, _, _ = side_model._likelihood(values)
    likelihoods = side_model.likelihood_lower_bound(likelihoods)
    return likelihoods.reshape(side_hat.transpose(0, 1).shape).transpose(0, 1)


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The size the network runs at: a multiple of the side-information stride."""
    return (-(-height // SIDE_STRIDE) * SIDE_STRIDE, -(-width // SIDE_STRIDE) * SIDE_STRIDE)


def count_macs_per_pixel(model: ScalableCodec, size: int = 256) -> dict[str, float]:
    """Multiply-accumulates per input pixel for one layer, by part.

    The torch modules are counted, so a model loaded for inference (whose
    analysis and synthesis run through ONNX Runtime) is counted the same.
    """
    totals: dict[str, float] = {}

    def hook_for(part: str):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                macs = output.numel() * k * module.in_channels // module.groups
            else:  # a lapped transform: one kernel-sized product per coefficient
                coefficients = output if isinstance(module, LappedAnalysis) else inputs[0]
                macs = coefficients.numel() * module.weight[0].numel()
            totals[part] = totals.get(part, 0) + macs

        return hook

    parts = ["encoder", "decoder", "hyper_encoder", "hyper_decoder"] + (["post_filter"] if model.post_filter else [])
    handles = []
    for part in parts:
        for module in getattr(model, part).modules():
            if isinstance(module, (nn.Conv2d, LappedAnalysis, LappedSynthesis)):
                handles.append(module.register_forward_hook(hook_for(part)))
    inference, model.inference = model.inference, None
    try:
        with torch.no_grad():
            outputs = model(torch.rand(1, 3, size, size).to(next(model.parameters())), layers=1)
            model.shown_picture(outputs[0].reconstruction, layers=1)
    finally:
        model.inference = inference
        for handle in handles:
            handle.remove()
    return {part: macs / (size * size) for part, macs in totals.items()}
