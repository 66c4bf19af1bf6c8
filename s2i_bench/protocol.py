"""Protocols: the one reader of ``protocols/*.toml``.

A protocol fixes every number a study depends on (classes, features, splits, model widths,
training schedule, metric windows). It is a TOML file loaded into a frozen dataclass, recorded
in every result, and compared when one step reads another's output. Nothing else in the
project reads TOML.

``extends = "<name or path>"`` starts from another protocol; tables are merged key by key,
everything else (numbers, arrays, the ``[[classes]]`` list) is replaced whole. An unknown key
fails with the key, the file and the nearest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.resources
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from s2i_bench.errors import UserError
from s2i_bench.protocol_ranges import VGGSOUND_CHOICES, check_ranges

# The shipped protocols: `protocols/` in the repository, package data `s2i_bench.protocols` when
# installed (editable or not).
PROTOCOLS_DIR = Path(str(importlib.resources.files("s2i_bench.protocols")))


@dataclass(frozen=True)
class ClassSpec:
    key: str  # snake_case, used in file names, CSV columns and JSON keys
    name: str  # display name, as in the paper
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataSpec:
    video_id_pattern: str
    video_extensions: tuple[str, ...]
    segment_seconds: float
    # A segment is kept when audio and video both cover it up to this slack (encoders round a
    # clip's end to their frame size); the uncovered audio, at most this much, is zero.
    coverage_tolerance_s: float = 0.05


@dataclass(frozen=True)
class AudioSpec:
    sample_rate: int
    frame_length: int
    hop_length: int
    n_fft: int
    n_mels: int
    f_min: float
    f_max: float
    log_floor: float
    frames_per_segment: int
    store_dtype: str


@dataclass(frozen=True)
class ImageSpec:
    size: int
    frame_offset_s: float


@dataclass(frozen=True)
class SplitSpec:
    policy: str
    seed: int
    train: float
    val: float
    test: float
    balance: str
    phash_max_distance: int
    spectrogram_max_distance: float


@dataclass(frozen=True)
class AutoencoderSpec:
    epochs: int
    batch_size: int
    lr: float
    momentum: float


@dataclass(frozen=True)
class ModelSpec:
    profile: str
    image_size: int
    encoder_channels: tuple[int, ...]
    decoder_channels: tuple[int, ...]
    decoder_dropout: tuple[float, ...]
    generator_transition0: int
    generator_blocks: tuple[tuple[int, ...], ...]
    generator_dropout: tuple[float, ...]
    discriminator_channels: tuple[int, ...]
    discriminator_dropout: float
    # Kernels, strides and paddings of every layer (defaults: the paper's, SPEC section 4). A
    # profile with another image size changes these; the constructors check that the shapes
    # still close: encoder -> (f, 1, 1), generator -> (3, S, S), discriminator -> (C, 2, 2).
    encoder_kernels: tuple[tuple[int, ...], ...] = ((7, 5), (5, 3), (5, 3), (5, 3), (5, 3)) + ((3, 3),) * 8
    encoder_strides: tuple[int, ...] = (2, 2) + (1,) * 11
    decoder_kernels: tuple[tuple[int, ...], ...] = ((3, 3),) * 8 + ((5, 3),) * 3 + ((5, 4), (8, 6))
    decoder_strides: tuple[int, ...] = (1,) * 11 + (2, 2)
    generator_transition_kernels: tuple[int, ...] = (3, 3, 4, 4, 4, 4)
    generator_transition_strides: tuple[int, ...] = (1, 1, 2, 2, 2, 2)
    generator_transition_paddings: tuple[int, ...] = (0, 0, 1, 1, 1, 1)
    discriminator_kernels: tuple[int, ...] = (5,) + (3,) * 11
    discriminator_strides: tuple[int, ...] = (2, 2) + (1,) * 10
    discriminator_paddings: tuple[int, ...] = (0,) * 12


@dataclass(frozen=True)
class TrainingSpec:
    embedding_dims: tuple[int, ...]
    embedding_dim: int
    epochs: int
    batch_size: int
    lr_g: float
    momentum_g: float
    lr_d: float
    momentum_d: float
    adv_lambda: float
    adv_ma_k: int
    d_every_epochs: int
    r_max: float
    r_min: float
    save_every: int
    grid_every: int
    seed: int
    grid_per_class: int = 4     # fixed validation sounds per class in the image grids


@dataclass(frozen=True)
class ClassifierSpec:
    informative_per_class: int
    non_informative_per_class: int
    num_models: int
    train_per_class: int
    test_per_class: int
    val_fraction: float
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    dropout: tuple[float, ...]
    fc_dropout: float
    pool_per_model: int
    class_match_epochs: int
    fingerprint_warn_ratio: float
    # When a class has fewer pool sounds than pool_per_model, each sound is translated up to
    # this many times (different test-time dropout draws) before a shortfall is reported.
    pool_draws_per_sound: int = 1
    # Which split's sounds the pool translates. The paper: validation (1,115 sounds per class);
    # a small store may have too few validation videos for classifiers that generalise.
    pool_split: str = "val"
    # The training recipe beyond the paper's (informativity/recipe.py; defaults: the paper's,
    # bit for bit): real training frames of the class added to the informative training images,
    # and augmentation of the training batches ("none", "flip", "flip-crop-jitter").
    real_frames_per_class: int = 0
    augment: str = "none"


@dataclass(frozen=True)
class MetricsSpec:
    window_start: int
    window_end: int
    moving_average: int
    skip_after_d_update: int
    skip_fill: int
    bootstrap_samples: int
    confidence: float
    # the per-class interval of the corrected share that records call `corrected_ci`
    corrected_interval: str = "lang-reiczigel"  # or "bootstrap" (both are always recorded)
    image_metrics_bootstrap: int = 100  # replicates of the FID / KID / PRDC / IIS intervals


@dataclass(frozen=True)
class ScoringSpec:
    split: str
    seed: int
    samples: int
    batch_size: int
    selection_split: str = "val"  # where epochs and windows are chosen ("" = nowhere: the paper's max MA only)

    @property
    def scored_splits(self) -> tuple[str, ...]:
        """Every split a series scores, the reported one first: `split`, then `selection_split`
        (where epochs and windows are chosen) when there is one."""
        return (self.split,) + ((self.selection_split,) if self.selection_split else ())


@dataclass(frozen=True)
class SynthSpec:
    videos_per_class: int
    seed: int
    width: int
    height: int
    fps: int
    min_seconds: float
    max_seconds: float
    # not 16 kHz mono on purpose: `prepare` must resample and down-mix (SPEC section 3)
    sample_rate: int = 22050
    channels: int = 2


@dataclass(frozen=True)
class VGGSoundSpec:
    """VGGSound's CSV gated by VGGSounder's tags (`data/vggsound.py`); only protocols with a [vggsound]
    table have one (None, and absent from `to_dict`, elsewhere: their fingerprints stay as they were)."""
    labels: str  # VGGSounder's tag file: a file of the installed `vggsounder` wheel's data, or a path
    visible: tuple[str, ...] = ("V", "AV")  # the modality tags that make a label a target
    exclude: tuple[str, ...] = ("static_image", "voice_over")  # clips flagged so are left out
    gated_splits: tuple[str, ...] = ("test",)  # every clip of these splits must have tags


@dataclass(frozen=True)
class Protocol:
    name: str
    version: str
    description: str
    classes: tuple[ClassSpec, ...]
    data: DataSpec
    audio: AudioSpec
    image: ImageSpec
    split: SplitSpec
    autoencoder: AutoencoderSpec
    model: ModelSpec
    training: TrainingSpec
    classifiers: ClassifierSpec
    metrics: MetricsSpec
    scoring: ScoringSpec
    synth: SynthSpec
    extends: str | None = None
    vggsound: VGGSoundSpec | None = None
    # Where it came from; not part of the identity (see `fingerprint`).
    source: str = field(default="", compare=False)

    # -- convenience -------------------------------------------------------------------------
    @property
    def class_keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def class_index(self, key: str) -> int:
        try:
            return self.class_keys.index(key)
        except ValueError:
            raise UserError(_unknown(key, self.class_keys, f"class of protocol {self.name!r}")) from None

    def match_class(self, label: str) -> str | None:
        """The class key that a folder name or manifest value means, or None."""
        wanted = _norm_alias(label)
        for c in self.classes:
            if wanted == _norm_alias(c.key) or wanted == _norm_alias(c.name):
                return c.key
            if any(wanted == _norm_alias(a) for a in c.aliases):
                return c.key
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, recorded in every result (`source` left out)."""
        d = dataclasses.asdict(self)
        d.pop("source", None)
        if d.get("vggsound") is None:
            d.pop("vggsound", None)
        for (table, key), neutral in NEUTRAL_WHEN_ABSENT.items():  # absent = neutral (see there)
            if d.get(table, {}).get(key, neutral) == neutral:
                d[table].pop(key, None)
        return d

    @property
    def fingerprint(self) -> str:
        """Short hash of the resolved protocol: two results agree on protocol iff equal."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def ref(self) -> dict[str, str]:
        """What a result records about its protocol."""
        return {"name": self.name, "version": self.version, "fingerprint": self.fingerprint}


# Keys added after protocols were first recorded, with the value that does what the code did
# before them: at that value a key is left out of `to_dict` (and so of the fingerprint), so the
# stores, pools, bundles and records made before it keep their identity and the same training
# gives the same bytes; `protocol_from_dict` puts the default back.
NEUTRAL_WHEN_ABSENT: dict[tuple[str, str], Any] = {
    ("classifiers", "real_frames_per_class"): 0,
    ("classifiers", "augment"): "none",
}
CLASSIFIER_AUGMENTATIONS = ("none", "flip", "flip-crop-jitter")  # classifiers.augment


# -------------------------------------------------------------------------------------------
def available_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOLS_DIR.glob("*.toml"))


def load_protocol(name_or_path: str | Path | Protocol) -> Protocol:
    """Load a protocol by name (``protocols/<name>.toml``) or by path to a TOML file."""
    if isinstance(name_or_path, Protocol):
        return name_or_path
    raw, source = _load_raw(str(name_or_path), chain=())
    return _build(raw, source)


def protocol_from_dict(d: dict[str, Any]) -> Protocol:
    """Rebuild a protocol recorded by `Protocol.to_dict` (e.g. in options.json, store.json)."""
    d = dict(d)
    d.pop("source", None)
    return _build(d, "<recorded>")


def _resolve_path(name_or_path: str, relative_to: Path | None) -> Path:
    p = Path(name_or_path)
    # a bare name is a shipped protocol unless such a file is here (not a folder: one's `vggsound/` clips)
    if p.suffix == ".toml" or "/" in name_or_path or p.is_file():
        if not p.is_absolute() and relative_to is not None and not p.exists():
            p = relative_to / p
        if not p.is_file():
            raise UserError(f"protocol file not found: {name_or_path}")
        return p
    candidate = PROTOCOLS_DIR / f"{name_or_path}.toml"
    if not candidate.is_file():
        raise UserError(_unknown(name_or_path, available_protocols(), "protocol"))
    return candidate


def _load_raw(name_or_path: str, chain: tuple[str, ...], relative_to: Path | None = None) -> tuple[dict, str]:
    path = _resolve_path(name_or_path, relative_to).resolve()
    if str(path) in chain:
        raise UserError(f"protocol {path} extends itself (chain: {' -> '.join(chain)})")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    _check_keys(raw, Protocol, str(path), prefix="", partial=True)
    base_name = raw.get("extends")
    if base_name:
        base, _ = _load_raw(str(base_name), chain + (str(path),), relative_to=path.parent)
        raw = _merge(base, raw)
        raw["extends"] = str(base_name)
    return raw, str(path)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _norm_alias(s: str) -> str:
    return " ".join(str(s).lower().replace("_", " ").replace("-", " ").split())


def _unknown(name: str, valid, what: str) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}{hint} (valid: {', '.join(valid)})"


def _check_keys(raw: dict, cls, source: str, prefix: str, partial: bool) -> None:
    hints = get_type_hints(cls)
    valid = [f.name for f in fields(cls) if f.name != "source"]
    for key, value in raw.items():
        if key not in valid:
            raise UserError(f"{source}: " + _unknown(prefix + key, [prefix + v for v in valid], "key"))
        sub = _dataclass_of(hints[key])
        if sub is not None and key != "classes":
            if not isinstance(value, dict):
                raise UserError(f"{source}: [{prefix + key}] must be a table")
            _check_keys(value, sub, source, prefix=f"{prefix}{key}.", partial=partial)
        if key == "classes":
            if not isinstance(value, (list, tuple)) or not all(isinstance(c, dict) for c in value):
                raise UserError(f"{source}: classes must be an array of tables ([[classes]])")
            for i, c in enumerate(value):
                _check_keys(c, ClassSpec, source, prefix=f"classes[{i}].", partial=partial)


def _dataclass_of(tp):
    """The dataclass a field holds (`X` or `X | None`), else None."""
    options = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) in (Union, UnionType) else [tp]
    return options[0] if len(options) == 1 and dataclasses.is_dataclass(options[0]) else None


def _coerce(value: Any, tp, where: str) -> Any:
    origin = get_origin(tp)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected an array, got {value!r}")
        inner = args[0]
        return tuple(_coerce(v, inner, where) for v in value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    if tp == (str | None):
        return None if value is None else str(value)
    return value


def _build_dc(cls, raw: dict, source: str, prefix: str):
    hints = get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name == "source":
            continue
        where = f"{source}: {prefix}{f.name}"
        if f.name not in raw:
            if f.default is not dataclasses.MISSING:
                continue
            raise UserError(f"{source}: missing key {prefix}{f.name}")
        value = raw[f.name]
        sub = _dataclass_of(hints[f.name])
        if f.name == "classes":
            kwargs[f.name] = tuple(_build_dc(ClassSpec, c, source, f"classes[{i}].") for i, c in enumerate(value))
        elif sub is not None:
            kwargs[f.name] = None if value is None else _build_dc(sub, value, source, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(value, hints[f.name], where)
    return cls(**kwargs)


def _build(raw: dict, source: str) -> Protocol:
    _check_keys(raw, Protocol, source, prefix="", partial=False)
    proto: Protocol = _build_dc(Protocol, raw, source, "")
    proto = dataclasses.replace(proto, source=source)
    _validate(proto)
    return proto


def _validate(p: Protocol) -> None:
    src = p.source
    check_ranges(p)
    keys = p.class_keys
    if len(set(keys)) != len(keys) or not keys:
        raise UserError(f"{src}: class keys must be unique and non-empty: {keys}")
    s = p.split
    if s.policy not in ("video", "random"):
        raise UserError(f"{src}: " + _unknown(s.policy, ["video", "random"], "split.policy"))
    if abs(s.train + s.val + s.test - 1.0) > 1e-6:
        raise UserError(f"{src}: split ratios must sum to 1 (got {s.train} + {s.val} + {s.test})")
    if s.balance not in ("min_class", "none"):
        raise UserError(f"{src}: " + _unknown(s.balance, ["min_class", "none"], "split.balance"))
    if p.audio.store_dtype not in ("float16", "float32"):
        raise UserError(f"{src}: audio.store_dtype must be float16 or float32")
    m = p.metrics
    if m.window_start > m.window_end:
        raise UserError(f"{src}: metrics.window_start > metrics.window_end")
    if p.scoring.split not in ("train", "val", "test"):
        raise UserError(f"{src}: " + _unknown(p.scoring.split, ["train", "val", "test"], "scoring.split"))
    if p.metrics.corrected_interval not in ("lang-reiczigel", "bootstrap"):
        raise UserError(f"{src}: " + _unknown(p.metrics.corrected_interval, ["lang-reiczigel", "bootstrap"],
                                              "metrics.corrected_interval"))
    if p.scoring.selection_split not in ("", "train", "val") or p.scoring.selection_split == p.scoring.split:
        raise UserError(f"{src}: scoring.selection_split must be \"val\", \"train\" or \"\" and not the scored split "
                        f"{p.scoring.split!r} (a choice made on the test sounds is what it is meant to avoid)")
    if p.classifiers.augment not in CLASSIFIER_AUGMENTATIONS:
        raise UserError(f"{src}: " + _unknown(p.classifiers.augment, CLASSIFIER_AUGMENTATIONS, "classifiers.augment"))
    if p.classifiers.pool_split not in ("train", "val"):
        # never the test split: the classifiers would then be trained on the sounds they score
        raise UserError(f"{src}: " + _unknown(p.classifiers.pool_split, ["train", "val"], "classifiers.pool_split"))
    for low, high, what in ((p.audio.f_min, p.audio.f_max, "audio.f_min < audio.f_max"),
                            (p.training.r_min, p.training.r_max, "training.r_min < training.r_max"),
                            (p.synth.min_seconds, p.synth.max_seconds + 1e-9,
                             "synth.min_seconds <= synth.max_seconds")):
        if not low < high:
            raise UserError(f"{src}: {what} is required (got {low:g} and {high:g})")
    for key, allowed in VGGSOUND_CHOICES.items() if p.vggsound is not None else ():
        bad = [v for v in getattr(p.vggsound, key) if v not in allowed]
        if bad or not getattr(p.vggsound, key) and key != "exclude":
            raise UserError(f"{src}: vggsound.{key} {bad or '[]'} (valid: {', '.join(allowed)})")
    if p.training.embedding_dim % 4:
        raise UserError(f"{src}: training.embedding_dim must be a multiple of 4 "
                        "(the discriminator views x as (f/4, 2, 2))")
