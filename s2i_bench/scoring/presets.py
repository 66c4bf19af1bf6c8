"""Feature-space presets: the field's image-metric recipes by name, each pinned whole.

    extractor = load_preset("inception-pytorch-fid", weights=None)     # the torch hub cache, else one line
    extractor = load_preset("clip-vit-b-32", "open_clip_model.safetensors")
    recipe = record_recipe(extractor, image_size=96, audio_ref=..., metrics=...)   # what a record carries
    recipe["identity"]                                                  # "s2i-recipe-1:<24 hex>"
    difference(recipe_a, recipe_b)                                      # "image.resize ('a' vs 'b')" or None

A preset fixes everything its numbers depend on: the network and its checkpoint's sha256 (with
whether that is the published file), how images reach it (uint8, resize, crop, mean and std),
the precision and batching, what the embedding is (layer, normalisation), the class prompt of the
text metrics, and the constants of every metric it serves (negatives, tie rule, scale). The
record's recipe adds the scored images' size and, for AIS, the audio encoder (sha256, sample
rate, clip length and tiling). The recipe is hashed into one identity string; `compare` refuses
records whose identities differ and names the first field that differs (`difference`).

Presets and the published recipe each stands for (docs/metrics.md has the table of what is the
same and what differs):

    inception-pytorch-fid     FID / KID as pytorch-fid computes them (ASVA's FID)
    inception-torch-fidelity  the same network, torch-fidelity's TensorFlow-1 resize
    inception-torchmetrics    the same network, torchmetrics' antialiased resize
    clip-vit-b-32             OpenAI CLIP ViT-B/32 (open_clip format): SonicDiffusion's AIS image
                              side; clean-fid's CLIP-FID space (MACS)
    clip-vit-l-14             OpenAI CLIP ViT-L/14 (open_clip format): SonicDiffusion's IIS and AIC
    hf-clip-vit-b-32          openai/clip-vit-base-patch32 (transformers folder): MACS's AIS / IIS

Audio presets, the audio side of AIS (`--ais-audio-preset`, `scoring.clap_tower`):

    clap-htsat-tiny           LAION-CLAP HTSAT-tiny, non-fusion (630k-audioset-best.pt, 630k-best.pt)
    clap-htsat-base           LAION-CLAP HTSAT-base, non-fusion (music_audioset_epoch_15_esc_90.14.pt)

ASVA's IA (ImageBind) has no preset: ImageBind is not installable here and its audio and vision
towers cannot be built offline without the imagebind package (docs/metrics.md says more).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.scoring import image_metrics as IM
from s2i_bench.scoring import inception as INC
from s2i_bench.scoring.clap_tower import PRESETS as AUDIO_PRESETS
from s2i_bench.scoring.clap_tower import RATE as CLAP_RATE
from s2i_bench.scoring.clap_tower import clap_audio_encoder
from s2i_bench.scoring.clip_towers import hf_clip_tower, open_clip_tower
from s2i_bench.scoring.features import Extractor

logger = logging.getLogger(__name__)

RECIPE_VERSION = 1
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_METRICS = ("fid", "kid", "prdc", "iis", "retrieval")
CLIP_METRICS = IMAGE_METRICS + ("clip_score", "aic", "ais", "ais_rank", "ais_z")
# metrics of an extractor that is no preset (the domain CNN, a program of the user's)
OTHER_METRICS = IMAGE_METRICS + ("ais", "ais_rank", "ais_z")


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # "inception", "open_clip" or "transformers"
    mirrors: str  # the published recipe it stands for
    fetch: str  # what to get, for the one-line refusal without weights
    metrics: tuple[str, ...]
    resize: str | None = None  # Inception: one of inception.RESIZES
    architecture: str | None = None  # open_clip's config name
    prompt: str = "{}"  # the class prompt ("{}" is the class name)
    # the sha256 of the file this preset expects, where it could be confirmed; None: unconfirmed
    published_sha256: str | None = None


_INCEPTION_FETCH = (f"{INC.WEIGHTS_URL} into {INC.cache_dir()}/ (or --feature-weights FILE)")
PRESETS = {p.name: p for p in (
    Preset("inception-pytorch-fid", "inception", "pytorch-fid 0.3: FID / KID in Inception pool3 (ASVA's FID)",
           _INCEPTION_FETCH, IMAGE_METRICS, resize="pytorch-fid", published_sha256=INC.PUBLISHED_SHA256),
    Preset("inception-torch-fidelity", "inception", "torch-fidelity 0.4 `inception-v3-compat`",
           _INCEPTION_FETCH, IMAGE_METRICS, resize="torch-fidelity", published_sha256=INC.PUBLISHED_SHA256),
    Preset("inception-torchmetrics", "inception", "torchmetrics 1.9 FrechetInceptionDistance (antialias=True)",
           _INCEPTION_FETCH, IMAGE_METRICS, resize="torchmetrics", published_sha256=INC.PUBLISHED_SHA256),
    Preset("clip-vit-b-32", "open_clip", "OpenAI CLIP ViT-B/32: SonicDiffusion's AIS image side; clean-fid's "
           "CLIP-FID space (MACS)", "open_clip's state dict of ViT-B-32 'openai' (hub timm/vit_base_patch32_clip_224."
           "openai, open_clip_model.safetensors)", CLIP_METRICS, architecture="ViT-B-32-quickgelu"),
    Preset("clip-vit-l-14", "open_clip", "OpenAI CLIP ViT-L/14: SonicDiffusion's IIS and AIC",
           "open_clip's state dict of ViT-L-14 'openai' (hub timm/vit_large_patch14_clip_224.openai, "
           "open_clip_model.safetensors)", CLIP_METRICS, architecture="ViT-L-14-quickgelu"),
    Preset("hf-clip-vit-b-32", "transformers", "openai/clip-vit-base-patch32 through transformers: MACS's AIS / IIS",
           "the transformers folder of openai/clip-vit-base-patch32 (config.json, model.safetensors, vocab.json, "
           "merges.txt, preprocessor_config.json)", CLIP_METRICS),
)}


def names() -> tuple[str, ...]:
    return tuple(PRESETS)


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"--feature-preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]


# -- loading --------------------------------------------------------------------------------------------
def _weights_check(preset: Preset, sha: str, path) -> str:
    """"published", "differs" (warned) or "unconfirmed" (no published sha256 to check against)."""
    if preset.published_sha256 is None:
        logger.info(f"{path}: sha256 {sha[:16]}...: no published sha256 of this file could be confirmed, so the "
                    "weights are pinned by their own sha256 only (check: unconfirmed)")
        return "unconfirmed"
    return "published" if sha == preset.published_sha256 else "differs"


def _inception(preset: Preset, weights, device) -> Extractor:
    path = INC.find_weights(weights)
    check = INC.check_weights(path)
    model = INC.load_inception(path, device)

    def fn(images):  # (B, 3, S, S) in [-1, 1] -> (B, 2048)
        return INC.features(model, INC.quantise(images), preset.resize, device)

    recipe = {"preset": preset.name, "family": "inception",
              "network": "FID Inception-v3 (TensorFlow 2015-12-05 graph, pytorch-fid layout)", "layer": "pool3",
              "dims": INC.DIMS, "checkpoint_sha256": check["sha256"], "weights_check": check["check"],
              "published_sha256": INC.PUBLISHED_SHA256, "input": "uint8 (rounded from [-1, 1])",
              "resize": preset.resize, "resize_to": INC.SIZE, "precision": "float32",
              "batch": f"fixed passes of {INC.CHUNK} images", "embedding": "not normalised"}
    return Extractor(f"{preset.name} (Inception pool3, 2048-d)", check["sha256"], fn,
                     {"kind": "preset", "preset": preset.name, "path": str(path), "dims": INC.DIMS}, recipe)


def _clip(preset: Preset, weights, device) -> Extractor:
    if weights is None:
        raise UserError(f"--feature-preset {preset.name} needs --feature-weights: {preset.fetch}; s2i-bench "
                        "downloads nothing")
    if preset.family == "open_clip":
        tower = open_clip_tower(preset.architecture, weights, mean=OPENAI_MEAN, std=OPENAI_STD, device=device)
        preprocess = {"resize": "shorter side to the input size, PIL bicubic (open_clip.image_transform)",
                      "crop": "centre", "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}
        tokenizer = "open_clip SimpleTokenizer (the BPE vocabulary in the wheel)"
    else:
        tower = hf_clip_tower(weights, device=device)
        preprocess = {"resize": "CLIPImageProcessorPil (PIL bicubic, shortest edge)", "crop": "centre",
                      **{k: tower.info["processor"][k] for k in ("mean", "std", "shortest_edge")}}
        tokenizer = f"CLIPTokenizer (the folder's, sha256 {', '.join(s[:16] for s in tower.info['tokenizer_sha256'])})"
    sha = tower.info["checkpoint_sha256"]
    check = _weights_check(preset, sha, weights)

    def fn(images):  # (B, 3, S, S) in [-1, 1] -> (B, D)
        u8 = INC.quantise(images).permute(0, 2, 3, 1).numpy()  # (B, S, S, 3): what a PNG of them holds
        return tower.images(u8)

    recipe = {"preset": preset.name, "family": preset.family, "architecture": tower.info["architecture"],
              "checkpoint_sha256": sha, "weights_check": check, "published_sha256": preset.published_sha256,
              **({"config_sha256": tower.info["config_sha256"]} if "config_sha256" in tower.info else {}),
              "input": "uint8 (rounded from [-1, 1]) as PIL images", "input_size": tower.info["input_size"],
              "preprocess": preprocess, "precision": "float32", "embedding": "image embedding, not normalised",
              "text": {"tokenizer": tokenizer, "prompt": preset.prompt}}
    extractor = Extractor(f"{preset.name} ({tower.info['architecture']})", sha, fn,
                          {"kind": "preset", "preset": preset.name, "path": str(weights)}, recipe,
                          text=lambda names: tower.texts([preset.prompt.format(n) for n in names]))
    return extractor


def load_preset(name: str, weights=None, device="cpu") -> Extractor:
    """The feature extractor of preset `name` with the weights of `weights` (a file, or for the
    transformers presets a folder; Inception: default the torch hub cache)."""
    preset = get(name)
    weights = None if weights is None else Path(weights)
    if preset.family == "inception":
        return _inception(preset, weights, device)
    return _clip(preset, weights, device)


def load_audio_preset(name: str, weights, store, device="cpu"):
    """AIS's audio encoder of audio preset `name` (a laion_clap checkpoint `weights`) for `store`:
    (fn, ref) as `features.audio_encoder` returns them. Refused when the store keeps no audio at
    the preset's rate (CLAP: 48 kHz, `prepare --audio-rate 48000|native`)."""
    if name not in AUDIO_PRESETS:
        raise UserError(f"--ais-audio-preset: unknown preset {name!r} (known: {', '.join(AUDIO_PRESETS)})")
    kept = max(store.sample_rate, store.hires_rate or 0)
    if kept < CLAP_RATE:  # before the checkpoint is read: it is large
        raise UserError(f"{store.path}: keeps audio up to {kept} Hz and {name} listens at {CLAP_RATE} Hz; rebuild "
                        f"the store with `s2i-bench prepare ... --audio-rate {CLAP_RATE}` (or native, for sources "
                        f"at {CLAP_RATE} Hz or above)")
    fn, ref = clap_audio_encoder(name, weights, segment_seconds=store.protocol.data.segment_seconds, device=device)
    return fn, ref


# -- the record's recipe and its identity -------------------------------------------------------------
def _audio_recipe(audio_ref: dict | None) -> dict | None:
    if not audio_ref:
        return None
    audio = audio_ref.get("audio") or {}
    seconds = audio.get("seconds")
    out = {"sha256": audio.get("sha256"), "sample_rate": audio.get("sample_rate"), "seconds": seconds,
           "samples": audio.get("samples"), "pooling": "the encoder's output",
           "tiling": "the 1-s segment" if seconds == 1.0 else "the centred window of the store's context"}
    # an audio preset (scoring.clap_tower) pins more: its network, quantisation, padding, pooling, precision
    return out | audio["recipe"] if isinstance(audio.get("recipe"), dict) else out


def record_recipe(extractor: Extractor | None, *, image_size: int | None, audio_ref: dict | None = None) -> dict:
    """The record's `image_metrics.recipe`: what the image metrics were computed on, path-free,
    with its `identity` (a hash of everything else)."""
    if extractor is None:
        image, metrics = None, OTHER_METRICS
    elif extractor.recipe is not None:
        image, metrics = extractor.recipe, PRESETS[extractor.recipe["preset"]].metrics
    else:  # the domain CNN or a program: pinned by its name and sha256 (and a program's sidecar)
        image = {"preset": None, "name": extractor.name, "sha256": extractor.sha256,
                 **{k: extractor.info.get(k) for k in ("kind", "dims", "input_size", "input_range", "mean", "std")
                    if k in extractor.info}}
        metrics = OTHER_METRICS
    known = set(IM.names())
    recipe = {"version": RECIPE_VERSION, "images": {"size": image_size, "real": "centre frames of the scored sounds"},
              "image": image, "audio": _audio_recipe(audio_ref),
              "ais_image": None if not audio_ref else _strip_paths(audio_ref.get("image")),
              "metrics": {m: dict(IM.get(m).params) for m in metrics if m in known and IM.get(m).params}}
    recipe["identity"] = identity(recipe)
    return recipe


def _strip_paths(ref: dict | None) -> dict | None:
    """An encoder's ref without what differs between machines (paths, confinement)."""
    if not ref:
        return None
    return {k: v for k, v in ref.items() if k not in ("path", "confinement", "bundle")}


def identity(recipe: dict) -> str:
    """"s2i-recipe-1:<24 hex>": the sha256 of the recipe's canonical JSON (without the identity)."""
    body = {k: v for k, v in recipe.items() if k != "identity"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default)
    return f"s2i-recipe-{RECIPE_VERSION}:" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _json_default(v):
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    raise TypeError(f"not JSON: {type(v).__name__}")


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict = {}
    for k in sorted(d):
        if k == "identity":
            continue
        out |= _flat(d[k], f"{prefix}{k}.") if isinstance(d[k], dict) and d[k] else {f"{prefix}{k}": d[k]}
    return out


def difference(a: dict | None, b: dict | None) -> str | None:
    """The first field (dotted) in which two recipes differ, with both values; None if equal."""
    fa, fb = _flat(a or {}), _flat(b or {})
    for key in sorted(set(fa) | set(fb)):
        if fa.get(key) != fb.get(key):
            return f"{key} ({_short(fa.get(key))} vs {_short(fb.get(key))})"
    return None


def _short(v) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
