"""CLAP audio towers for AIS from a laion_clap checkpoint, offline: the audio side of AIS by name.

    fn, ref = clap_audio_encoder("clap-htsat-tiny", "630k-audioset-best.pt", segment_seconds=1.0)
    fn(waveforms)      # (B, T) float32 at 48 kHz, T <= 480,000 -> (B, 512) L2-normalised embeddings
    fn.sample_rate     # 48000: the store's high-rate copy (`prepare --audio-rate 48000|native`)
    ref["recipe"]      # what the record's recipe pins (checkpoint sha256, input, padding, pooling, ...)

A laion_clap release (`630k-audioset-best.pt`, `630k-best.pt`, `music_audioset_epoch_15_esc_90.14.pt`)
is a torch file holding `{"state_dict": ...}` of the whole CLAP model, its keys sometimes prefixed
`module.`. It is read with `torch.load(weights_only=True)` (`clip_towers.read_state_dict`: a pickle
that would run code is refused) and only the audio side is built, from laion_clap's own modules:
HTS-AT (`clap_module.htsat.create_htsat_model` with the audio config laion_clap ships,
`model_configs/HTSAT-*.json`) and the audio projection (Linear, ReLU, Linear, as `CLAP.__init__`
builds it). Their keys (`audio_branch.*`, `audio_projection.*`) load strictly, every key and shape;
the text branch, which `CLAP_Module()` would build by downloading roberta-base, is never built and
its keys are ignored.

Waveforms go the way `CLAP_Module.get_audio_embedding_from_data` takes them for a non-fusion model:
quantised float32 -> int16 -> float32 (laion_clap `training/data.py`: clip to [-1, 1], x 32767,
truncated), repeated floor(480,000 / T) times and zero-padded to 480,000 samples ("repeatpad"),
HTS-AT's `embedding` (the mean of its last stage's tokens), the audio projection, L2 normalisation.
Longer clips laion_clap crops at random, so they are refused here. `tests/scoring/test_clap_preset.py`
checks the embeddings against laion_clap's own `get_audio_embedding_from_data`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s2i_bench.errors import UserError
from s2i_bench.fileio import file_sha256
from s2i_bench.safeload import load_state_into
from s2i_bench.scoring.clip_towers import read_state_dict

RATE = 48_000  # every laion_clap audio config's sample_rate (checked when one is built)
CHUNK = 8  # clips per forward pass: 8 x 480,000 samples through HTS-AT fits a small machine
FILLING = "repeatpad"  # laion_clap's get_audio_embedding_from_data: data_filling='repeatpad'
FUSION_KEYS = ("fusion_model", "mel_conv")  # audio_branch keys only the fusion models have


@dataclass(frozen=True)
class AudioPreset:
    name: str
    config: str  # laion_clap's model config (clap_module/model_configs/NAME.json)
    mirrors: str  # the published recipe it stands for
    fetch: str  # what to get, for the one-line refusal without weights


PRESETS = {p.name: p for p in (
    AudioPreset("clap-htsat-tiny", "HTSAT-tiny", "LAION-CLAP HTSAT-tiny, non-fusion (laion_clap's CLAP_Module "
                "default): 630k-audioset-best.pt / 630k-best.pt",
                "a laion_clap non-fusion HTSAT-tiny checkpoint (hub lukewys/laion_clap, 630k-audioset-best.pt)"),
    AudioPreset("clap-htsat-base", "HTSAT-base", "LAION-CLAP HTSAT-base, non-fusion (amodel='HTSAT-base'): "
                "music_audioset_epoch_15_esc_90.14.pt and the other HTSAT-base releases",
                "a laion_clap non-fusion HTSAT-base checkpoint (hub lukewys/laion_clap, "
                "music_audioset_epoch_15_esc_90.14.pt)"),
)}


def clap_module():
    """laion_clap's `clap_module` package under the top-level name its own hook imports it by,
    without running `laion_clap/__init__.py`: that imports laion_clap's training code, which parses
    sys.argv when imported (laion_clap/training/data.py, `args = parse_args()`) and so exits under
    any other command line."""
    spec = importlib.util.find_spec("laion_clap")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the CLAP presets need laion_clap (pip install laion_clap); s2i-bench downloads nothing")
    root = Path(list(spec.submodule_search_locations)[0]) / "clap_module"
    loaded = sys.modules.get("clap_module")
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").parent != root:
            raise UserError(f"another package named clap_module is imported ({loaded.__file__}), not laion_clap's")
        return loaded
    mod_spec = importlib.util.spec_from_file_location("clap_module", root / "__init__.py",
                                                      submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules["clap_module"] = module
    try:
        mod_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["clap_module"]
        raise
    return module


def _audio_state(path: Path, preset: AudioPreset, embed_dim: int) -> dict:
    """The checkpoint's audio branch and audio projection (text keys ignored), checked."""
    state = read_state_dict(path, "laion_clap checkpoint")
    audio = {k: v for k, v in state.items() if k.startswith(("audio_branch.", "audio_projection."))}
    if not any(k.startswith("audio_branch.") for k in audio):
        raise UserError(f"{path}: not a laion_clap CLAP checkpoint (no audio_branch.* keys in its state_dict)")
    if any(part in k for k in audio for part in FUSION_KEYS):
        raise UserError(f"{path}: a laion_clap fusion checkpoint (audio_branch.fusion_model ...); the CLAP presets "
                        "are the non-fusion models (630k-audioset-best.pt, 630k-best.pt)")
    width = audio.get("audio_projection.0.weight")
    if width is not None and width.ndim == 2 and width.shape[1] != embed_dim:
        other = {768: "clap-htsat-tiny", 1024: "clap-htsat-base"}.get(int(width.shape[1]), "another model")
        raise UserError(f"{path}: audio embeddings of width {width.shape[1]}, {preset.name} has {embed_dim} "
                        f"({preset.config}); is this a checkpoint of {other}?")
    return audio


def build_tower(preset: AudioPreset, path: Path, device="cpu"):
    """HTS-AT and the audio projection as laion_clap builds them, with the checkpoint's values.
    Returns (module with .audio_branch and .audio_projection, the model config)."""
    clap = clap_module()  # its __init__ imports .model, which imports .htsat
    config_file = Path(clap.__file__).parent / "model_configs" / f"{preset.config}.json"
    cfg = json.loads(config_file.read_text(encoding="utf-8"))
    audio = _audio_state(path, preset, int(cfg["embed_dim"]))
    tower = torch.nn.Module()
    # non-fusion, as CLAP(enable_fusion=False); joint width 512 and ReLU: CLAP.__init__'s defaults
    tower.audio_branch = clap.htsat.create_htsat_model(clap.model.CLAPAudioCfp(**cfg["audio_cfg"]), False, "None")
    tower.audio_projection = torch.nn.Sequential(torch.nn.Linear(cfg["embed_dim"], 512), torch.nn.ReLU(),
                                                 torch.nn.Linear(512, 512))
    load_state_into(tower, audio, str(path), "laion_clap checkpoint (audio branch and projection)")
    return tower.eval().to(device), cfg


def laion_input(waveforms: np.ndarray, clip_samples: int) -> torch.Tensor:
    """(B, T) float -> (B, clip_samples) float32: laion_clap's quantisation and "repeatpad"."""
    w = np.asarray(waveforms, dtype=np.float32)
    q = (np.clip(w, -1.0, 1.0) * 32767.0).astype(np.int16)  # float32_to_int16: truncated, not rounded
    x = torch.from_numpy((q / 32767.0).astype(np.float32))  # int16_to_float32
    x = x.repeat(1, int(clip_samples / x.shape[1]))  # (B, k T), k = floor(clip / T)
    return F.pad(x, (0, clip_samples - x.shape[1]), mode="constant", value=0)  # (B, clip_samples)


def _recipe(preset: AudioPreset, cfg: dict, sha: str, seconds: float) -> dict:
    a = cfg["audio_cfg"]
    return {"preset": preset.name, "family": "laion_clap", "architecture": preset.config, "checkpoint_sha256": sha,
            "weights_check": "unconfirmed", "published_sha256": None,
            "audio_cfg": {k: a[k] for k in ("sample_rate", "clip_samples", "window_size", "hop_size", "mel_bins",
                                            "fmin", "fmax")},
            "input": f"the store's {seconds:g}-s segment at {a['sample_rate']} Hz (int16 / 32767)",
            "quantise": "float32 -> int16 (clip to [-1, 1], x 32767, truncated) -> / 32767",
            "filling": f"{FILLING}: repeated floor({a['clip_samples']} / T) times, zero-padded to {a['clip_samples']}",
            "truncation": "none (clips longer than 10 s refused)", "fusion": False,
            "pooling": "HTS-AT embedding (mean of the last stage's tokens) -> audio_projection (Linear, ReLU, Linear)",
            "tiling": f"the {seconds:g}-s segment, repeated to {a['clip_samples'] / a['sample_rate']:g} s",
            "embedding": "L2-normalised", "precision": "float32"}


def clap_audio_encoder(name: str, weights, *, segment_seconds: float, device="cpu"):
    """The audio encoder of CLAP preset `name` with the checkpoint `weights`: (fn, ref), as
    `features.audio_encoder` returns them (fn.sample_rate, fn.wants_context, fn.samples)."""
    if name not in PRESETS:
        raise UserError(f"--ais-audio-preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    preset = PRESETS[name]
    if weights is None:
        raise UserError(f"--ais-audio-preset {name} needs --ais-audio-weights: {preset.fetch}; s2i-bench downloads "
                        "nothing")
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"{path}: laion_clap checkpoint not found")
    sha = file_sha256(path)
    tower, cfg = build_tower(preset, path, device)
    rate, clip = int(cfg["audio_cfg"]["sample_rate"]), int(cfg["audio_cfg"]["clip_samples"])
    assert rate == RATE, f"laion_clap's {preset.config} listens at {rate} Hz, not {RATE}"
    n = int(round(segment_seconds * rate))
    if not 0 < n <= clip:
        raise UserError(f"--ais-audio-preset {name}: segments of {segment_seconds:g} s; CLAP takes at most "
                        f"{clip / rate:g} s without laion_clap's random crop")

    @torch.no_grad()
    def fn(waveforms: np.ndarray) -> np.ndarray:  # (B, T) float at `rate` -> (B, 512), unit length
        if waveforms.ndim != 2 or not 0 < waveforms.shape[1] <= clip:
            raise UserError(f"{name}: waveforms of shape {waveforms.shape}; expected (B, T) with T <= {clip}")
        out = []
        for i in range(0, len(waveforms), CHUNK):
            x = laion_input(waveforms[i:i + CHUNK], clip).to(device)
            emb = tower.audio_branch({"waveform": x}, mixup_lambda=None, device=device)["embedding"]  # (b, 768)
            out.append(F.normalize(tower.audio_projection(emb), dim=-1).float().cpu().numpy())  # (b, 512)
        return np.concatenate(out) if out else np.zeros((0, 512), np.float32)

    fn.sample_rate = rate  # the store's high-rate copy (`Store.audio_at`)
    fn.wants_context = False  # the segment itself, repeated to 10 s
    fn.samples = n
    return fn, {"name": f"{name} (laion_clap {preset.config}, 512-d)", "sha256": sha, "sample_rate": rate,
                "seconds": float(segment_seconds), "samples": n, "preset": name, "path": str(path),
                "recipe": _recipe(preset, cfg, sha, segment_seconds)}
