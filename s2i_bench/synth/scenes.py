"""Scenes: the plain-JSON description of one synthetic video, drawn from a seeded generator.

A scene is a dict that fully determines a video's frames and sound (together with the world
version): `render.render_frame(scene, t)` and `audio.render_audio(scene, sample_rate)` read
nothing else. Every scene has two latent attributes in [0, 1] that are both audible and visible:

    tone  -> the pitch or spectral centre of the sound  AND  the hue of a large region
    size  -> the loudness of the sound                  AND  the size of the main object

(rail_transport has a third: wagon length <-> the period of the wheel clacks). Everything else
(positions, secondary colours, event times) is nuisance: visible or audible, but not both, so a
translator can only guess it. The physical values (hue in degrees, f0 in Hz, dB, ...) are
derived from the latent ones by `CLASS_ATTRIBUTES` and recorded in `scenes.json`.
"""

from __future__ import annotations

import math

import numpy as np

# Bump when anything that changes rendered pixels or samples changes: recorded in scenes.json
# and in the store, and it keys the judge's bank.
WORLD_VERSION = "2"  # 2: x264 without mbtree (byte-identical files; see world.encode_mp4)

CLASS_KEYS = ("baby_cry", "dog", "rail_transport", "fireworks", "water_flowing")

ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
ID_FIRST = ID_ALPHABET[:62]  # never start an id with '-' or '_' (shell options, regex edges)

# What each class looks and sounds like, and what its audible-and-visible attributes mean.
# hue(tone) = hue0 + hue_span * tone (degrees, mod 360); pitch(tone) = lo * (hi / lo) ** tone.
CLASS_ATTRIBUTES = {
    "baby_cry": {
        "picture": "indoor: a crying baby's face in front of a coloured wall",
        "sound": "harmonic cry with vibrato in breaths of about a second",
        "hue0": 60.0, "hue_span": 240.0, "tone_lo_hz": 280.0, "tone_hi_hz": 620.0,
        "size_lo": 0.17, "size_hi": 0.31,
        "tone": {"sound": "cry fundamental f0 (Hz)", "picture": "wall hue (deg)"},
        "size": {"sound": "loudness (dB RMS)", "picture": "face radius (frame heights)"},
    },
    "dog": {
        "picture": "a dog standing on grass under a coloured sky",
        "sound": "short barks with a falling pitch over a light wind",
        "hue0": 180.0, "hue_span": 220.0, "tone_lo_hz": 220.0, "tone_hi_hz": 660.0,
        "size_lo": 0.24, "size_hi": 0.46,
        "tone": {"sound": "bark fundamental f0 (Hz)", "picture": "sky hue (deg)"},
        "size": {"sound": "loudness (dB RMS)", "picture": "dog body length (frame heights)"},
    },
    "rail_transport": {
        "picture": "a train on rails in a landscape with hills",
        "sound": "low rumble with periodic wheel clacks",
        "hue0": 180.0, "hue_span": 240.0, "tone_lo_hz": 70.0, "tone_hi_hz": 420.0,
        "size_lo": 0.22, "size_hi": 0.42,
        "tone": {"sound": "rumble band centre (Hz)", "picture": "train body hue (deg)"},
        "size": {"sound": "loudness (dB RMS)", "picture": "train height (frame heights)"},
        "wagon": {"sound": "clack period (s)", "picture": "wagon length (frame heights)"},
    },
    "fireworks": {
        "picture": "a firework burst over a dark skyline at night",
        "sound": "explosions followed by crackle",
        "hue0": 300.0, "hue_span": 240.0, "tone_lo_hz": 1200.0, "tone_hi_hz": 5000.0,
        "size_lo": 0.15, "size_hi": 0.30,
        "tone": {"sound": "crackle band centre (Hz)", "picture": "burst hue (deg)"},
        "size": {"sound": "loudness (dB RMS)", "picture": "burst radius (frame heights)"},
    },
    "water_flowing": {
        "picture": "flowing water below a green bank, with streaks moving along",
        "sound": "band-limited flowing noise with slow gurgle",
        "hue0": 150.0, "hue_span": 220.0, "tone_lo_hz": 300.0, "tone_hi_hz": 2400.0,
        "size_lo": 0.45, "size_hi": 0.80,
        "tone": {"sound": "noise band centre (Hz)", "picture": "water hue (deg)"},
        "size": {"sound": "loudness (dB RMS)", "picture": "water height (frame heights)"},
    },
}

# Loudness (dB RMS of the mono mix, full scale = 0 dB) = LOUD_LO + (LOUD_HI - LOUD_LO) * size.
LOUD_LO, LOUD_HI = -34.0, -16.0


def hue_of(class_key: str, tone: float) -> float:
    a = CLASS_ATTRIBUTES[class_key]
    return float((a["hue0"] + a["hue_span"] * tone) % 360.0)


def pitch_of(class_key: str, tone: float) -> float:
    a = CLASS_ATTRIBUTES[class_key]
    return float(a["tone_lo_hz"] * (a["tone_hi_hz"] / a["tone_lo_hz"]) ** tone)


def object_size_of(class_key: str, size: float) -> float:
    a = CLASS_ATTRIBUTES[class_key]
    return float(a["size_lo"] + (a["size_hi"] - a["size_lo"]) * size)


def loudness_of(size: float) -> float:
    return float(LOUD_LO + (LOUD_HI - LOUD_LO) * size)


def random_video_id(rng: np.random.Generator) -> str:
    """A YouTube-like id: 11 characters of [A-Za-z0-9_-], never starting with '-' or '_'."""
    first = ID_FIRST[int(rng.integers(len(ID_FIRST)))]
    rest = "".join(ID_ALPHABET[int(i)] for i in rng.integers(len(ID_ALPHABET), size=10))
    return first + rest


def _r(x: float, nd: int = 4) -> float:
    """Round what goes into JSON so scenes.json is short and exact (render reads the rounded value)."""
    return float(round(float(x), nd))


def draw_scene(class_key: str, rng: np.random.Generator, *, video_id: str, duration: float,
               tone: float | None = None, size: float | None = None) -> dict:
    """Draw one scene of `class_key`. `tone` and `size` (latent, in [0, 1]) may be fixed, e.g.
    by the judge's bank; everything else comes from `rng`. Returns a plain JSON-able dict."""
    if class_key not in CLASS_ATTRIBUTES:
        raise ValueError(f"unknown synthetic class {class_key!r} (valid: {', '.join(CLASS_KEYS)})")
    tone = float(rng.uniform()) if tone is None else float(tone)
    size = float(rng.uniform()) if size is None else float(size)
    tone, size = _r(tone), _r(size)
    nuisance = _NUISANCE[class_key](rng)
    attributes = {
        "tone": tone,
        "size": size,
        "hue_deg": _r(hue_of(class_key, tone), 2),
        "tone_hz": _r(pitch_of(class_key, tone), 2),
        "object_size": _r(object_size_of(class_key, size)),
        "loudness_db": _r(loudness_of(size), 2),
    }
    if class_key == "rail_transport":
        # Wagon length is visible (gap spacing) and audible (clack period = length / speed).
        attributes["wagon_length"] = nuisance.pop("wagon_length")
        attributes["clack_period_s"] = _r(attributes["wagon_length"] / nuisance["speed"])
    return {
        "video_id": video_id,
        "class": class_key,
        "duration_s": _r(duration, 3),
        "seed": int(rng.integers(2**31)),  # event times, noise: everything drawn while rendering
        "attributes": attributes,
        "nuisance": nuisance,
    }


# -- nuisance per class: what varies between videos but is not both audible and visible ---------
def _baby(rng):
    return {
        "x": _r(np.clip(rng.normal(0, 0.04), -0.07, 0.07)),
        "y": _r(0.47 + np.clip(rng.normal(0, 0.025), -0.04, 0.04)),
        "skin_hue": _r(rng.uniform(18, 34), 2),
        "skin_sat": _r(rng.uniform(0.28, 0.45)),
        "skin_val": _r(rng.uniform(0.85, 0.97)),
        "hair_val": _r(rng.uniform(0.15, 0.45)),
        "blanket_hue": _r(rng.uniform(0, 360), 2),
        "wall_val": _r(rng.uniform(0.74, 0.84)),
        "pan": _r(rng.uniform(-0.3, 0.3)),
    }


def _dog(rng):
    return {
        "x": _r(np.clip(rng.normal(0, 0.04), -0.07, 0.07)),
        "feet_y": _r(0.82 + np.clip(rng.normal(0, 0.02), -0.03, 0.03)),
        "horizon_y": _r(0.50 + np.clip(rng.normal(0, 0.02), -0.03, 0.03)),
        "grass_hue": _r(rng.uniform(95, 125), 2),
        "grass_val": _r(rng.uniform(0.5, 0.65)),
        "fur_hue": _r(rng.uniform(20, 40), 2),
        "fur_sat": _r(rng.uniform(0.3, 0.65)),
        "fur_val": _r(rng.uniform(0.3, 0.7)),
        "bark_rate": _r(rng.uniform(1.6, 3.2)),
        "pan": _r(rng.uniform(-0.3, 0.3)),
    }


def _rail(rng):
    return {
        "rail_y": _r(0.80 + np.clip(rng.normal(0, 0.008), -0.015, 0.015)),
        "sky_val": _r(rng.uniform(0.8, 0.95)),
        "hill_phase": _r(rng.uniform(0, 2 * math.pi)),
        "hill_height": _r(rng.uniform(0.05, 0.12)),
        "ground_hue": _r(rng.uniform(60, 100), 2),
        "speed": _r(rng.uniform(0.6, 1.0)),
        "wagon_length": _r(rng.uniform(0.35, 0.75)),
        "offset": _r(rng.uniform(0, 1)),
        "pan": _r(rng.uniform(-0.3, 0.3)),
    }


def _fireworks(rng):
    return {
        "x": _r(np.clip(rng.normal(0, 0.04), -0.07, 0.07)),
        "y": _r(0.42 + np.clip(rng.normal(0, 0.025), -0.04, 0.04)),
        "rays": int(rng.integers(10, 15)),
        "skyline_seed": int(rng.integers(2**31)),
        "sky_hue": _r(rng.uniform(215, 250), 2),
        "burst_rate": _r(rng.uniform(0.8, 1.8)),
        "pan": _r(rng.uniform(-0.3, 0.3)),
    }


def _water(rng):
    return {
        "bank_hue": _r(rng.uniform(80, 130), 2),
        "bank_val": _r(rng.uniform(0.3, 0.5)),
        "flow_speed": _r(rng.uniform(0.3, 0.8)),
        "streak_phase": _r(rng.uniform(0, 1)),
        "rock_x": _r(rng.uniform(-0.35, 0.35)),
        "rock_r": _r(rng.uniform(0.03, 0.06)),
        "gurgle_rate": _r(rng.uniform(2.0, 6.0)),
        "pan": _r(rng.uniform(-0.3, 0.3)),
    }


_NUISANCE = {"baby_cry": _baby, "dog": _dog, "rail_transport": _rail, "fireworks": _fireworks,
             "water_flowing": _water}


# -- event times shared by picture and sound (so the mouth opens when the baby cries) ------------
def scene_rng(scene: dict, stream: int) -> np.random.Generator:
    """A generator for one purpose (`stream`) of one scene: independent of how many draws the
    other purposes make."""
    return np.random.default_rng([int(scene["seed"]), int(stream)])


def events(scene: dict) -> np.ndarray:
    """Event intervals (K, 2) of start and end times in seconds, over the clip plus one second.

    baby_cry: breaths of crying; dog: barks; fireworks: explosions (end = start + decay);
    rail_transport: wheel clacks (two axles per wagon); water_flowing: none (continuous).
    """
    key, nui, dur = scene["class"], scene["nuisance"], float(scene["duration_s"]) + 1.0
    rng = scene_rng(scene, 1)
    out = []
    if key == "baby_cry":
        t = -rng.uniform(0, 0.8)
        while t < dur:
            length = rng.uniform(0.8, 1.4)
            out.append((t, t + length))
            t += length + rng.uniform(0.08, 0.2)
    elif key == "dog":
        period = 1.0 / nui["bark_rate"]
        t = rng.uniform(0, period)
        while t < dur:
            out.append((t, t + rng.uniform(0.12, 0.2)))
            t += period * rng.uniform(0.7, 1.3)
    elif key == "fireworks":
        period = 1.0 / nui["burst_rate"]
        t = rng.uniform(0, period) - period
        while t < dur:
            out.append((t, t + rng.uniform(0.6, 1.0)))
            t += period * rng.uniform(0.7, 1.3)
    elif key == "rail_transport":
        period = scene["attributes"]["clack_period_s"]
        t = (nui["offset"] % 1.0) * period
        while t < dur:
            out.append((t, t + 0.004))
            out.append((t + 0.09, t + 0.094))
            t += period
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def envelope(scene: dict, times: np.ndarray) -> np.ndarray:
    """The activity envelope in [0, 1] at `times` (s): how open the mouth is, how bright the
    burst is. Shared by `render` and `audio`."""
    times = np.asarray(times, dtype=np.float64)
    key = scene["class"]
    env = np.zeros_like(times)
    if key not in ("baby_cry", "dog", "fireworks"):
        return env
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    for start, end in events(scene):
        # each event only touches the times from its start to where it has died away
        if key == "baby_cry":
            last = end
        elif key == "dog":
            last = end + 0.1
        else:
            last = start + 8 * 0.45 * (end - start)  # exp(-8): gone
        lo, hi = np.searchsorted(sorted_times, [start, last])
        if lo >= hi:
            continue
        idx = order[lo:hi]
        t = times[idx]
        if key == "baby_cry":
            # smooth on/off over 60-80 ms: a cry is sustained
            value = np.minimum(np.minimum((t - start) / 0.06, (end - t) / 0.08), 1.0)
        elif key == "dog":
            value = np.minimum((t - start) / 0.01, 1.0) * np.exp(-(t - start) / (0.35 * (end - start)))
        else:
            value = np.minimum((t - start) / 0.01, 1.0) * np.exp(-(t - start) / (0.45 * (end - start)))
        env[idx] = np.maximum(env[idx], np.clip(value, 0.0, 1.0))
    return env
