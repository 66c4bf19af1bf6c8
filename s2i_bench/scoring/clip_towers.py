"""CLIP image and text towers from local files, offline, in the formats the field's tools read.

    tower = open_clip_tower("ViT-B-32-quickgelu", "open_clip_model.safetensors")
    tower = hf_clip_tower("clip-vit-base-patch32/")        # a transformers folder (config.json, model.safetensors, ...)
    tower.images(u8)      # (B, H, W, 3) uint8 -> (B, D) float32 embeddings (not normalised)
    tower.texts(["dog"])  # (C, D) float32 text embeddings (not normalised)

open_clip format: a state dict (`.safetensors`, or a torch file read with weights_only) of the
architecture that open_clip's own config names (`open_clip.create_model(arch)` builds it, with
random values and no download, then the file is loaded strictly: every key and shape). OpenAI's
original `ViT-B-32.pt` is a TorchScript program, which open_clip would run (`torch.jit.load`):
s2i-bench refuses it and names the state-dict release instead. Images go through open_clip's own
evaluation transform (`open_clip.image_transform`: PIL bicubic resize of the shorter side,
centre crop, the preset's mean and std), texts through its tokenizer (the BPE vocabulary ships
inside the wheel).

transformers format: a folder as `save_pretrained` writes it, read with `local_files_only=True`
and safetensors only (`model.safetensors`: no pickle at all), the tokenizer from the folder's
`vocab.json` / `merges.txt`, images through `CLIPImageProcessorPil` (PIL bicubic, as the
transformers 4.x `CLIPProcessor` that MACS used) with the folder's `preprocessor_config.json`
when it has one.

Images arrive as uint8 (what a PNG of them holds) and are converted to PIL images, so the
libraries' own transforms see exactly what they would see reading the image files.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from s2i_bench.errors import UserError
from s2i_bench.fileio import file_sha256
from s2i_bench.safeload import archive_kind, check_state_dict, load_state_into, load_weights_only

BATCH = 64  # images or texts per forward pass


@dataclass
class Tower:
    images: Callable[[np.ndarray], np.ndarray]  # (B, H, W, 3) uint8 -> (B, D) float32
    texts: Callable[[list[str]], np.ndarray]  # C strings -> (C, D) float32
    info: dict = field(default_factory=dict)  # what the recipe records: files' sha256, preprocessing, scale


def read_state_dict(path: Path, what: str) -> dict:
    """A state dict from `.safetensors` (no pickle) or a torch file (weights_only); a TorchScript
    program is refused (the libraries would run it)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise UserError(f"{path}: cannot read as safetensors ({type(e).__name__}: {str(e)[:200]})") from None
    else:
        if archive_kind(path) in ("torchscript", "export"):
            raise UserError(f"{path}: a TorchScript / torch.export program (OpenAI's original CLIP files are), which "
                            "the library would run; give the state-dict release instead (open_clip_model.safetensors "
                            "or open_clip_pytorch_model.bin of the same model)")
        state = load_weights_only(path, what)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state, dict) and state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from a DataParallel wrapper
    return check_state_dict(state, str(path), what)


@contextlib.contextmanager
def _root_filter(text: str):
    """Drop root-logger records containing `text` (open_clip logs on the root logger) while inside."""
    class Drop(logging.Filter):
        def filter(self, record):
            return text not in record.getMessage()

    drop = Drop()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


def _pil(u8: np.ndarray) -> list:
    from PIL import Image

    return [Image.fromarray(np.ascontiguousarray(im), mode="RGB") for im in np.asarray(u8, dtype=np.uint8)]


def _batched(fn, items, batch: int = BATCH) -> np.ndarray:
    out = [fn(items[i:i + batch]) for i in range(0, len(items), batch)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


# -- open_clip ------------------------------------------------------------------------------------------
def open_clip_tower(arch: str, path, *, mean, std, interpolation: str = "bicubic", resize_mode: str = "shortest",
                    device="cpu") -> Tower:
    """The open_clip model `arch` with the weights of `path` (see the module docstring)."""
    import open_clip
    from open_clip.convert import convert_state_dict

    if arch not in open_clip.list_models():
        raise UserError(f"open_clip has no architecture {arch!r}")
    path = Path(path)
    state = read_state_dict(path, "open_clip checkpoint")
    # built from open_clip's own config with random values: nothing is fetched (pretrained=None);
    # its note that no weights were loaded is true only until the file is loaded just below
    with _root_filter("No pretrained weights loaded"):
        model = open_clip.create_model(arch, pretrained=None, precision="fp32", device="cpu")
    state = convert_state_dict(model, state)  # the library's conversions of other layouts
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    load_state_into(model, state, str(path), "open_clip checkpoint")
    model = model.eval().requires_grad_(False).to(device)
    size = model.visual.image_size
    transform = open_clip.image_transform(size, is_train=False, mean=tuple(mean), std=tuple(std),
                                          resize_mode=resize_mode, interpolation=interpolation)
    tokenizer = open_clip.get_tokenizer(arch)

    @torch.no_grad()
    def images(u8):
        x = torch.stack([transform(im) for im in _pil(u8)]).to(device)  # (B, 3, 224, 224)
        return model.encode_image(x).float().cpu().numpy()

    @torch.no_grad()
    def texts(strings):
        return model.encode_text(tokenizer(list(strings)).to(device)).float().cpu().numpy()

    return Tower(lambda u8: _batched(images, np.asarray(u8)), lambda s: _batched(texts, list(s)),
                 {"format": "open_clip", "architecture": arch, "checkpoint_sha256": file_sha256(path),
                  "input_size": list(size) if isinstance(size, (tuple, list)) else [size, size],
                  "logit_scale": float(model.logit_scale.exp())})


# -- transformers ---------------------------------------------------------------------------------------
def hf_clip_tower(folder, device="cpu") -> Tower:
    """A transformers CLIP folder (see the module docstring), read with local files only."""
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    weights, config = folder / "model.safetensors", folder / "config.json"
    for need in (config, weights, folder / "vocab.json", folder / "merges.txt"):
        if not need.is_file():
            raise UserError(f"{folder}: a transformers CLIP folder needs {need.name} (safetensors weights only: a "
                            "pytorch_model.bin is a pickle; convert it with save_pretrained(safe_serialization=True))")
    try:
        kind = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError) as e:
        raise UserError(f"{config}: not a JSON object ({e})") from None
    if kind != "clip":
        raise UserError(f"{config}: model_type {kind!r}, expected 'clip'")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' own bars; s2i-bench has its own (fileio.progress)
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                          trust_remote_code=False)
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        processor = (CLIPImageProcessorPil.from_pretrained(folder, local_files_only=True)
                     if (folder / "preprocessor_config.json").is_file() else CLIPImageProcessorPil())
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"{folder}: cannot load as a transformers CLIP folder ({type(e).__name__}: "
                        f"{(str(e).splitlines() or [''])[0][:200]})") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model = model.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def images(u8):
        pixels = processor(images=_pil(u8), return_tensors="pt")["pixel_values"].to(device)
        return model.get_image_features(pixel_values=pixels).pooler_output.float().cpu().numpy()

    @torch.no_grad()
    def texts(strings):
        tok = tokenizer(list(strings), padding=True, return_tensors="pt").to(device)
        return model.get_text_features(**tok).pooler_output.float().cpu().numpy()

    size = processor.crop_size
    return Tower(lambda u8: _batched(images, np.asarray(u8)), lambda s: _batched(texts, list(s)),
                 {"format": "transformers", "architecture": model.config.vision_config.model_type,
                  "checkpoint_sha256": file_sha256(weights), "config_sha256": file_sha256(config),
                  "tokenizer_sha256": [file_sha256(folder / "vocab.json"), file_sha256(folder / "merges.txt")],
                  "input_size": [size["height"], size["width"]],
                  "processor": {"resample": "bicubic (PIL)", "shortest_edge": processor.size.get("shortest_edge"),
                                "mean": list(processor.image_mean), "std": list(processor.image_std)},
                  "logit_scale": float(model.logit_scale.exp())})
