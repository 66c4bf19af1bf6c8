"""Probe sounds beyond a store's test sounds: two sources at once, and sounds outside the protocol.

    probe_set(seed) -> [Probe]                   the probes, a pure function of (seed, PROBE_VERSION)
    probe_audio(probe, sample_rate) -> (n,)      mono float32 in [-1, 1], PROBE_SECONDS long
    probe_picture(probe) -> (96, 96, 3) uint8    what a camera would see at the probe segment's
                                                 centre (the louder source), or None

Kinds (`Probe.kind`):
    single       one source of a class alone, rendered like the mixtures: the control that says
                 how often a translator shows a source heard through this path (no AAC codec)
    mixture      two sources of two classes: the louder at its own scene's loudness, the quieter
                 `MIX_LEVELS_DB` (6 or 12) dB below it; `classes` = (louder, quieter). The picture
                 shows the louder one: no layout of the world holds two scenes
    silence      digital silence (every silence probe is the same sound: only the seeds differ)
    white_noise  white noise at -30 to -20 dB RMS
    unknown      a sound the protocol does not know: a siren (a pure tone gliding up and down a
                 fifth to an octave around 700-1400 Hz, 0.3-1 sweeps per second) at -30 to -20 dB

The probes are rendered from scenes like the world's videos (`scenes.draw_scene`,
`audio.render_audio`), never written into the world: the world's files and their bytes stay
what `synth` writes. `scoring.attributes` turns a probe's audio into the store's features (the
segment [PROBE_SEGMENT_S, PROBE_SEGMENT_S + 1) s, resampled and log-Mel'd as `prepare` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from s2i_bench.synth.audio import render_audio
from s2i_bench.synth.render import render_crop
from s2i_bench.synth.scenes import CLASS_KEYS, draw_scene

PROBE_VERSION = "1"
PROBE_SECONDS = 3.0  # rendered length; the probe segment is the middle second
PROBE_SEGMENT_S = 1.0  # the segment [1, 2) s: no clip edge inside the log-Mel's frames
PROBE_STREAM = 2_000_003  # the probes' random stream: independent of the world's videos
MIX_LEVELS_DB = (6.0, 12.0)  # how far below the louder source the quieter one is
COUNTS = {"single": 4, "mixture": 2, "silence": 8, "white_noise": 16, "unknown": 16}  # single: per class;
# mixture: per ordered pair of classes and level (5 x 4 x 2 x 2 = 80)
OUT_OF_PROTOCOL = ("silence", "white_noise", "unknown")


@dataclass(frozen=True)
class Probe:
    id: str  # "mixture-003", unique in the set
    kind: str  # one of COUNTS
    classes: tuple[str, ...] = ()  # the sources' classes, the louder first
    level_db: float | None = None  # mixture: the quieter source's level below the louder
    scenes: tuple[dict, ...] = ()  # the sources' scenes (louder first)
    params: dict = field(default_factory=dict)  # noise and siren: their level, frequencies and seed

    @property
    def louder(self) -> str | None:
        return self.classes[0] if self.classes else None


def _scene(key: str, rng: np.random.Generator, probe_id: str) -> dict:
    return draw_scene(key, rng, video_id=probe_id, duration=PROBE_SECONDS)


def probe_set(seed: int) -> list[Probe]:
    """Every probe (see the module docstring), in a fixed order; probe i's draws come from its own
    generator, so the set's bytes depend only on the seed and PROBE_VERSION."""
    out: list[Probe] = []

    def rng_of() -> np.random.Generator:
        return np.random.default_rng([int(seed), PROBE_STREAM, len(out)])

    for key in CLASS_KEYS:
        for _ in range(COUNTS["single"]):
            pid = f"single-{len(out):03d}"
            out.append(Probe(pid, "single", (key,), None, (_scene(key, rng_of(), pid),)))
    for louder in CLASS_KEYS:
        for quieter in CLASS_KEYS:
            if quieter == louder:
                continue
            for level in MIX_LEVELS_DB:
                for _ in range(COUNTS["mixture"]):
                    pid, rng = f"mixture-{len(out):03d}", rng_of()
                    scenes = (_scene(louder, rng, pid), _scene(quieter, rng, pid))
                    out.append(Probe(pid, "mixture", (louder, quieter), level, scenes))
    for kind in OUT_OF_PROTOCOL:
        for _ in range(COUNTS[kind]):
            rng = rng_of()
            params = {"level_db": round(float(rng.uniform(-30.0, -20.0)), 2), "seed": int(rng.integers(2**31))}
            if kind == "unknown":
                params |= {"centre_hz": round(float(rng.uniform(700.0, 1400.0)), 1),
                           "depth_octaves": round(float(rng.uniform(0.3, 0.5)), 3),
                           "sweeps_per_s": round(float(rng.uniform(0.3, 1.0)), 3)}
            out.append(Probe(f"{kind}-{len(out):03d}", kind, params=params))
    return out


def _at_level(x: np.ndarray, level_db: float) -> np.ndarray:
    return x * (10.0 ** (level_db / 20.0) / (np.sqrt(np.mean(x * x)) + 1e-12))


def probe_audio(probe: Probe, sample_rate: int) -> np.ndarray:
    """The probe's sound, mono float32 (round(PROBE_SECONDS * sample_rate),) in [-1, 1]."""
    n = int(round(PROBE_SECONDS * sample_rate))
    if probe.kind in ("single", "mixture"):
        sources = [render_audio(s, sample_rate, channels=1, duration=PROBE_SECONDS)[0].astype(np.float64)
                   for s in probe.scenes]
        mono = sources[0]
        if len(sources) > 1:
            # the quieter source `level_db` below the louder one's own loudness
            louder_db = float(probe.scenes[0]["attributes"]["loudness_db"])
            mono = mono + _at_level(sources[1], louder_db - float(probe.level_db))
    elif probe.kind == "silence":
        mono = np.zeros(n)
    elif probe.kind == "white_noise":
        mono = _at_level(np.random.default_rng(probe.params["seed"]).standard_normal(n), probe.params["level_db"])
    elif probe.kind == "unknown":
        p, t = probe.params, np.arange(n) / sample_rate
        # a siren: log-frequency glides sinusoidally around the centre; the phase integrates it
        freq = p["centre_hz"] * 2.0 ** (p["depth_octaves"] * np.sin(2 * math.pi * p["sweeps_per_s"] * t))
        mono = _at_level(np.sin(2 * math.pi * np.cumsum(freq) / sample_rate), p["level_db"])
    else:
        raise ValueError(f"unknown probe kind {probe.kind!r}")
    return np.clip(mono, -1.0, 1.0).astype(np.float32)


def probe_picture(probe: Probe, size: int = 96) -> np.ndarray | None:
    """The louder source's frame at the centre of the probe segment, (size, size, 3) uint8, as
    `prepare` would store it; None for a probe without a picture (outside the protocol)."""
    if not probe.scenes:
        return None
    return render_crop(probe.scenes[0], PROBE_SEGMENT_S + 0.5, size=size)
