"""The reference translator of Sound-to-Imagination (SPEC section 4): audio autoencoder, dense
generator with test-time dropout, audio-conditioned discriminator.

Every width, kernel and dropout rate comes from the protocol's `ModelSpec` (`spec=None` means the
paper's, i.e. `protocols/vegas5.toml`). At the paper's widths the parameter counts equal SPEC
section 4 exactly (tests/translators/test_translator_models.py). Shapes for the paper profile:

    spectrogram (B, 1, 128, 100) --encoder--> x (B, f) --generator--> image (B, 3, 96, 96)
    (image, x) --discriminator--> RC-score (B, 1, 1, 1)

Module names are ours (readable blocks); `authors.py` maps the authors' flat names onto them.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol


@functools.lru_cache(maxsize=1)
def paper_spec():
    """The paper's ModelSpec (protocols/vegas5.toml), the default of every model."""
    return load_protocol("vegas5").model


class ConvBN(nn.Module):
    """One layer: (transposed) convolution then BatchNorm; the caller applies the activation."""

    def __init__(self, in_channels, out_channels, kernel, stride=1, padding=0, transposed=False, bias=True):
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return self.bn(self.conv(x))


def xavier_init(model: nn.Module) -> nn.Module:
    """Xavier-uniform weights for every (transposed) conv layer (the paper's Eq. 7), zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def _out_size(size, kernel, stride, padding, transposed):
    if transposed:
        return (size - 1) * stride - 2 * padding + kernel
    return (size + 2 * padding - kernel) // stride + 1


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise UserError(f"model spec: {what}")


# -- audio autoencoder ------------------------------------------------------------------------
class AudioEncoder(nn.Module):
    """13 convs, no padding: (B, 1, 128, 100) -> (B, f, 1, 1) -> BN -> TanH -> x (B, f)."""

    def __init__(self, embedding_dim: int, spec=None):
        super().__init__()
        spec = spec or paper_spec()
        widths = [1, *spec.encoder_channels, embedding_dim]
        kernels, strides = spec.encoder_kernels, spec.encoder_strides
        _check(len(widths) - 1 == len(kernels) == len(strides),
               f"encoder has {len(widths) - 1} widths, {len(kernels)} kernels, {len(strides)} strides")
        self.embedding_dim = embedding_dim
        self.layers = nn.ModuleList(
            ConvBN(widths[i], widths[i + 1], tuple(kernels[i]), strides[i]) for i in range(len(kernels)))
        h, w = 128, 100  # (n_mels, frames)
        for k, s in zip(kernels, strides):
            h, w = _out_size(h, k[0], s, 0, False), _out_size(w, k[1], s, 0, False)
        _check((h, w) == (1, 1), f"encoder kernels/strides map (128, 100) to {(h, w)}, not (1, 1)")
        xavier_init(self)

    def forward(self, spectrogram):  # (B, 1, 128, 100) in [-1, 1]
        h = spectrogram
        for layer in self.layers[:-1]:
            h = F.relu(layer(h))  # (B, 80, 61, 48) ... (B, 512, 3, 3) for the paper's widths
        return torch.tanh(self.layers[-1](h)).flatten(1)  # (B, f)


class AudioDecoder(nn.Module):
    """13 transposed convs mirroring the encoder: x (B, f) -> (B, 1, 128, 100) in [-1, 1];
    Dropout2d after each inner layer (the paper's latent-space softening, section 5.2)."""

    def __init__(self, embedding_dim: int, spec=None):
        super().__init__()
        spec = spec or paper_spec()
        widths = [embedding_dim, *spec.decoder_channels, 1]
        kernels, strides = spec.decoder_kernels, spec.decoder_strides
        _check(len(widths) - 1 == len(kernels) == len(strides) == len(spec.decoder_dropout) + 1,
               "decoder widths, kernels, strides and dropout rates disagree in length")
        self.dropout = tuple(spec.decoder_dropout)
        self.layers = nn.ModuleList(
            ConvBN(widths[i], widths[i + 1], tuple(kernels[i]), strides[i], transposed=True)
            for i in range(len(kernels)))
        h, w = 1, 1
        for k, s in zip(kernels, strides):
            h, w = _out_size(h, k[0], s, 0, True), _out_size(w, k[1], s, 0, True)
        _check((h, w) == (128, 100), f"decoder kernels/strides map (1, 1) to {(h, w)}, not (128, 100)")
        xavier_init(self)

    def forward(self, x):  # (B, f)
        h = x[:, :, None, None]  # (B, f, 1, 1)
        for layer, p in zip(self.layers[:-1], self.dropout):
            h = F.dropout2d(F.relu(layer(h)), p, self.training)  # (B, 512, 3, 3) ... (B, 80, 61, 48)
        return torch.tanh(self.layers[-1](h))  # (B, 1, 128, 100)


class AudioAutoencoder(nn.Module):
    """Encoder + decoder, trained on the reconstruction MSE (Eq. 1); only the encoder is kept."""

    def __init__(self, embedding_dim: int, spec=None):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.encoder = AudioEncoder(embedding_dim, spec)
        self.decoder = AudioDecoder(embedding_dim, spec)

    def encode(self, spectrogram):  # (B, 1, 128, 100) -> (B, f)
        return self.encoder(spectrogram)

    def forward(self, spectrogram):  # (B, 1, 128, 100) -> (B, 1, 128, 100)
        return self.decoder(self.encoder(spectrogram))


# -- generator --------------------------------------------------------------------------------
class DenseBlock(nn.Module):
    """Three transposed convs (k3, s1, p1: size kept): c1 = conv(in), c2 = conv(c1),
    c3 = conv(cat(c1, c2)); the block outputs cat(c1, c2, c3) (DenseNet-style reuse)."""

    def __init__(self, in_channels: int, widths):
        super().__init__()
        w1, w2, w3 = widths
        self.c1 = ConvBN(in_channels, w1, 3, 1, 1, transposed=True)
        self.c2 = ConvBN(w1, w2, 3, 1, 1, transposed=True)
        self.c3 = ConvBN(w1 + w2, w3, 3, 1, 1, transposed=True)
        self.out_channels = w1 + w2 + w3

    def forward(self, h):  # (B, C_in, H, W)
        h1 = F.relu(self.c1(h))  # (B, w1, H, W)
        h2 = F.relu(self.c2(h1))  # (B, w2, H, W)
        h3 = F.relu(self.c3(torch.cat((h1, h2), 1)))  # (B, w3, H, W)
        return torch.cat((h1, h2, h3), 1)  # (B, w1 + w2 + w3, H, W)


def channel_dropout(h, p: float, keep_uniforms=None, training: bool = True):
    """Dropout2d: zero whole channels with probability p, scale the rest by 1 / (1 - p).

    `keep_uniforms` (B, C) in [0, 1), when given, decides the mask (channel kept iff u >= p), so
    the caller controls the randomness; otherwise the global RNG draws it (F.dropout2d).
    """
    if p <= 0:
        return h
    if keep_uniforms is None:
        return F.dropout2d(h, p, training)
    mask = (keep_uniforms >= p).to(h.dtype) / (1.0 - p)  # (B, C)
    return h * mask[:, :, None, None]


class DenseGenerator(nn.Module):
    """25 transposed-conv layers: transition0, six dense blocks (18 layers), six transitions.

    x (B, f) viewed as (f, 1, 1) -> transition0 (k2) -> (512, 2, 2) -> [block -> transition]*6
    -> (3, 96, 96) -> BN -> TanH (paper profile). Dropout2d after transition0..transition5 is
    active at test time too (SPEC section 4.2: it is the generator's only stochasticity); BN uses
    running statistics in eval mode.
    """

    def __init__(self, embedding_dim: int, spec=None):
        super().__init__()
        spec = spec or paper_spec()
        blocks = [tuple(b) for b in spec.generator_blocks]
        kernels = spec.generator_transition_kernels
        strides = spec.generator_transition_strides
        paddings = spec.generator_transition_paddings
        _check(len(blocks) == len(kernels) == len(strides) == len(paddings) == len(spec.generator_dropout),
               "generator blocks, transition kernels/strides/paddings and dropout rates disagree in length")
        _check(all(len(b) == 3 for b in blocks), "every generator block has three widths (c1, c2, c3)")
        self.embedding_dim = embedding_dim
        self.image_size = spec.image_size
        self.dropout = tuple(spec.generator_dropout)
        self.transition0 = ConvBN(embedding_dim, spec.generator_transition0, 2, 1, 0, transposed=True)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        channels, size = spec.generator_transition0, 2
        for i, widths in enumerate(blocks):
            block = DenseBlock(channels, widths)
            out = 3 if i == len(blocks) - 1 else widths[2]  # the last transition makes the RGB image
            self.blocks.append(block)
            self.transitions.append(ConvBN(block.out_channels, out, kernels[i], strides[i], paddings[i],
                                           transposed=True))
            channels, size = out, _out_size(size, kernels[i], strides[i], paddings[i], True)
        _check(size == spec.image_size,
               f"generator transitions give {size}x{size} images, not image_size {spec.image_size}")
        # Channels each dropout layer sees (after transition0..transition5), for per-image masks.
        self.dropout_channels = (spec.generator_transition0, *[b[2] for b in blocks[:-1]])
        xavier_init(self)

    def dropout_uniforms(self, dropout_seeds, device):
        """Per-image uniforms for every dropout layer, drawn on the CPU from one torch.Generator
        per image seeded with its own seed: an image never depends on its batch or device."""
        total = sum(self.dropout_channels)
        u = torch.empty(len(dropout_seeds), total)  # (B, sum of dropout channels)
        g = torch.Generator()
        for i, seed in enumerate(dropout_seeds.tolist()):
            g.manual_seed(int(seed))
            u[i] = torch.rand(total, generator=g)
        return u.to(device).split(list(self.dropout_channels), dim=1)  # 6 x (B, C_i)

    def forward(self, x, dropout_seeds=None):  # x (B, f); dropout_seeds (B,) int64 or None
        uniforms = [None] * len(self.dropout)
        if dropout_seeds is not None:
            uniforms = self.dropout_uniforms(dropout_seeds, x.device)
        # Dropout is on in train and eval mode alike (test-time dropout), hence training=True.
        h = F.relu(self.transition0(x[:, :, None, None]))  # (B, 512, 2, 2)
        h = channel_dropout(h, self.dropout[0], uniforms[0])
        last = len(self.blocks) - 1
        for i, (block, transition) in enumerate(zip(self.blocks, self.transitions)):
            h = transition(block(h))  # (B, 512, 4, 4), (B, 352, 6, 6), ..., (B, 3, 96, 96)
            if i < last:
                h = channel_dropout(F.relu(h), self.dropout[i + 1], uniforms[i + 1])
        return torch.tanh(h)  # (B, 3, S, S) in [-1, 1]


# -- discriminator ----------------------------------------------------------------------------
class Discriminator(nn.Module):
    """Audio-conditioned discriminator: 12 convs (no bias) over the image -> (B, 256, 2, 2), x
    viewed as (f/4, 2, 2) concatenated on channels, conv13 (k2) -> BN -> TanH = RC-score."""

    def __init__(self, embedding_dim: int, spec=None):
        super().__init__()
        spec = spec or paper_spec()
        _check(embedding_dim % 4 == 0,
               f"embedding_dim {embedding_dim} is not a multiple of 4 (x is viewed as (f/4, 2, 2))")
        widths = [3, *spec.discriminator_channels]
        kernels, strides, paddings = spec.discriminator_kernels, spec.discriminator_strides, spec.discriminator_paddings
        _check(len(widths) - 1 == len(kernels) == len(strides) == len(paddings),
               "discriminator widths, kernels, strides and paddings disagree in length")
        self.embedding_dim = embedding_dim
        self.dropout = spec.discriminator_dropout
        self.layers = nn.ModuleList(
            ConvBN(widths[i], widths[i + 1], kernels[i], strides[i], paddings[i], bias=False)
            for i in range(len(kernels)))
        size = spec.image_size
        for k, s, p in zip(kernels, strides, paddings):
            size = _out_size(size, k, s, p, False)
        _check(size == 2, f"discriminator layers map {spec.image_size}x{spec.image_size} to {size}x{size}, not 2x2")
        self.judge = ConvBN(widths[-1] + embedding_dim // 4, 1, 2, 1, 0, bias=False)  # conv13
        xavier_init(self)

    def forward(self, image, x):  # image (B, 3, S, S), x (B, f)
        h = image
        for layer in self.layers:
            h = F.dropout2d(F.relu(layer(h)), self.dropout, self.training)  # ... (B, 256, 2, 2)
        cond = x.reshape(x.shape[0], self.embedding_dim // 4, 2, 2)  # (B, f/4, 2, 2)
        return torch.tanh(self.judge(torch.cat((h, cond), 1)))  # (B, 1, 1, 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
