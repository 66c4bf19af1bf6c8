"""The authors' state dicts -> our modules, by a key mapping (no code of theirs is run).

The authors name every layer flatly; BatchNorm and dropout layers carry `_bn` / `_drop` suffixes:

    generator       transition0, convT1 ... convT18 (three per dense block), transition1 ... transition6
    encoder         conv1 ... conv13            (the autoencoder's first half)
    decoder         convT1 ... convT13          (its second half)
    discriminator   conv1 ... conv13            (conv13 is the conditioned RC-score layer)

e.g. `convT5_bn.running_mean` is the BatchNorm of the second conv of dense block 2, which is our
`blocks.1.c2.bn.running_mean`. A key that maps nowhere, a missing key or a shape that differs is
refused with a message naming the first bad key (in the file's order).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from s2i_bench.errors import UserError
from s2i_translator.models import AudioAutoencoder, AudioEncoder, DenseGenerator, Discriminator

_NAME = re.compile(r"^(?P<layer>[A-Za-z]+\d+)(?P<suffix>_bn|_drop)?\.(?P<param>[A-Za-z_]+)$")


def generator_layer_map(num_blocks: int = 6) -> dict[str, str]:
    """Authors' layer name -> our module path, for DenseGenerator."""
    names = {"transition0": "transition0"}
    for b in range(num_blocks):
        for j in range(3):
            names[f"convT{3 * b + j + 1}"] = f"blocks.{b}.c{j + 1}"
        names[f"transition{b + 1}"] = f"transitions.{b}"
    return names


def encoder_layer_map(num_layers: int = 13) -> dict[str, str]:
    return {f"conv{i + 1}": f"layers.{i}" for i in range(num_layers)}


def decoder_layer_map(num_layers: int = 13) -> dict[str, str]:
    return {f"convT{i + 1}": f"layers.{i}" for i in range(num_layers)}


def discriminator_layer_map(num_layers: int = 13) -> dict[str, str]:
    names = {f"conv{i + 1}": f"layers.{i}" for i in range(num_layers - 1)}
    names[f"conv{num_layers}"] = "judge"
    return names


def unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """A bare state dict, also when saved as {"state_dict": ...} or from nn.DataParallel."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise UserError(f"{source}: not a state dict (a mapping of layer names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def looks_like_authors_generator(obj: Any) -> bool:
    return isinstance(obj, dict) and any(
        isinstance(k, str) and k.split("module.")[-1] in ("transition0.weight", "transition6_bn.weight") for k in obj)


def map_state_dict(authors: dict[str, torch.Tensor], layer_map: dict[str, str], model: torch.nn.Module,
                   source: str, what: str, ignore=lambda layer: False) -> dict[str, torch.Tensor]:
    """Rename the authors' keys to ours and check them against `model`; returns our state dict.

    `num_batches_tracked` may be absent (older PyTorch): the model's own value is kept.
    """
    own = model.state_dict()
    ours: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in authors.items():
        m = _NAME.match(key)
        if m is None:
            raise UserError(f"{source}: {what}: unexpected key {key!r} (not an authors' layer name)")
        layer, suffix, param = m["layer"], m["suffix"] or "", m["param"]
        if ignore(layer):
            continue
        if layer not in layer_map or suffix == "_drop":
            raise UserError(f"{source}: {what}: unexpected key {key!r}")
        sub = "bn" if suffix == "_bn" else "conv"
        target = f"{layer_map[layer]}.{sub}.{param}"
        if target not in own:
            raise UserError(f"{source}: {what}: unexpected key {key!r}")
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: {what}: key {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(own[target].shape):
            raise UserError(f"{source}: {what}: key {key!r} has shape {tuple(value.shape)}, "
                            f"expected {tuple(own[target].shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise UserError(f"{source}: {what}: key {key!r} holds NaN or infinite values")
        ours[target] = value
        origin[target] = key
    inverse = {v: k for k, v in layer_map.items()}
    for target, value in own.items():
        if target in ours:
            continue
        if target.endswith("num_batches_tracked"):
            ours[target] = torch.zeros((), dtype=torch.long) if value.is_meta else value
            continue
        path, sub, param = target.rsplit(".", 2)
        name = f"{inverse[path]}{'_bn' if sub == 'bn' else ''}.{param}"
        raise UserError(f"{source}: {what}: missing key {name!r}")
    return ours


def load_authors_generator(state: Any, embedding_dim: int | None, source: str):
    """DenseGenerator (paper widths) from the authors' generator state dict."""
    state = unwrap_state_dict(state, source)
    weight = state.get("transition0.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise UserError(f"{source}: generator: missing key 'transition0.weight'")
    found = int(weight.shape[0])  # ConvTranspose2d weight: (in = f, out, k, k)
    if embedding_dim is not None and embedding_dim != found:
        raise UserError(f"{source}: generator: key 'transition0.weight' has input size {found}, "
                        f"but --embedding-dim is {embedding_dim}")
    if found % 4:
        raise UserError(f"{source}: generator: embedding size {found} (from 'transition0.weight') "
                        "is not a multiple of 4")
    with torch.device("meta"):  # no init work: every tensor comes from the file
        model = DenseGenerator(found)
    model.load_state_dict(map_state_dict(state, generator_layer_map(), model, source, "generator"), assign=True)
    return model


def load_authors_encoder(state: Any, embedding_dim: int, source: str):
    """AudioEncoder (paper widths) from the authors' autoencoder (or encoder) state dict; the
    decoder's `convT*` keys are ignored."""
    state = unwrap_state_dict(state, source)
    with torch.device("meta"):
        model = AudioEncoder(embedding_dim)
    mapped = map_state_dict(state, encoder_layer_map(), model, source, "audio encoder",
                            ignore=lambda layer: layer.startswith("convT"))
    model.load_state_dict(mapped, assign=True)
    return model


def load_authors_autoencoder(state: Any, embedding_dim: int, source: str):
    """AudioAutoencoder (paper widths) from the authors' autoencoder state dict (both halves)."""
    state = unwrap_state_dict(state, source)
    with torch.device("meta"):
        model = AudioAutoencoder(embedding_dim)
    enc = map_state_dict(state, encoder_layer_map(), model.encoder, source, "audio encoder",
                         ignore=lambda layer: layer.startswith("convT"))
    dec = map_state_dict(state, decoder_layer_map(), model.decoder, source, "audio decoder",
                         ignore=lambda layer: not layer.startswith("convT"))
    model.encoder.load_state_dict(enc, assign=True)
    model.decoder.load_state_dict(dec, assign=True)
    return model


def load_authors_discriminator(state: Any, embedding_dim: int, source: str):
    state = unwrap_state_dict(state, source)
    with torch.device("meta"):
        model = Discriminator(embedding_dim)
    model.load_state_dict(map_state_dict(state, discriminator_layer_map(), model, source, "discriminator"),
                          assign=True)
    return model
