"""Pictures of the synthetic world: a scene and a time -> an RGB frame.

Scene coordinates are resolution-free: y runs from 0 (top) to 1 (bottom) of the frame, x is
measured from the frame's vertical centre line in the same unit (frame heights), so a 4:3 frame
spans x in [-2/3, 2/3] and its centre square crop spans x in [-0.5, 0.5]. Shapes have soft edges
one pixel wide, so a frame rendered small is close to a large one shrunk with antialiasing.

    render_frame(scene, t, width=160, height=120)             -> (120, 160, 3) uint8
    render_frames(scene, times, width, height)                -> (T, H, W, 3) uint8
    render_crop(scene, t, size=96)                            -> (96, 96, 3) uint8, the centre
        square as `prepare` sees it (rendered straight into the square, 2x supersampled)
"""

from __future__ import annotations

import colorsys
import math
from functools import lru_cache

import numpy as np

from s2i_bench.synth.scenes import envelope


def hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v), dtype=np.float32)


@lru_cache(maxsize=32)
def _grid(width: int, height: int, window: tuple[float, float, float, float]):
    x0, y0, x1, y1 = window
    xs = (x0 + (np.arange(width, dtype=np.float32) + 0.5) * (x1 - x0) / width).astype(np.float32)
    ys = (y0 + (np.arange(height, dtype=np.float32) + 0.5) * (y1 - y0) / height).astype(np.float32)
    return xs, ys


class Canvas:
    """A float RGB image over a window of scene coordinates, with soft-edged shapes that only
    touch the pixels inside their bounding box (drawing stays cheap for small shapes)."""

    def __init__(self, width: int, height: int, window: tuple[float, float, float, float]):
        self.w, self.h = width, height
        self.x0, self.y0, self.x1, self.y1 = window
        self.xs, self.ys = _grid(width, height, tuple(float(v) for v in window))
        self.px = (self.y1 - self.y0) / height  # one pixel in scene units
        self.img = np.zeros((height, width, 3), dtype=np.float32)

    def _cols(self, a: float, b: float) -> slice:
        pw = (self.x1 - self.x0) / self.w
        lo = max(0, int(math.floor((a - self.x0) / pw)) - 1)
        hi = min(self.w, int(math.ceil((b - self.x0) / pw)) + 1)
        return slice(lo, max(lo, hi))

    def _rows(self, a: float, b: float) -> slice:
        lo = max(0, int(math.floor((a - self.y0) / self.px)) - 1)
        hi = min(self.h, int(math.ceil((b - self.y0) / self.px)) + 1)
        return slice(lo, max(lo, hi))

    def _blend(self, rows: slice, cols: slice, mask: np.ndarray, colour, alpha: float = 1.0):
        if mask.size == 0:
            return
        m = (mask * alpha)[..., None]
        region = self.img[rows, cols]
        region += m * (np.asarray(colour, dtype=np.float32) - region)

    def fill(self, colour) -> None:
        self.img[:] = np.asarray(colour, dtype=np.float32)

    def vgradient(self, top, bottom, y_top: float = 0.0, y_bottom: float = 1.0, rows: tuple | None = None):
        """Vertical colour gradient from `top` at y_top to `bottom` at y_bottom (clamped)."""
        f = np.clip((self.ys - y_top) / max(y_bottom - y_top, 1e-6), 0, 1)[:, None, None]
        top, bottom = np.asarray(top, np.float32), np.asarray(bottom, np.float32)
        grad = top + f * (bottom - top)  # (H, 1, 3)
        if rows is None:
            self.img[:] = grad
        else:
            r = self._rows(*rows)
            below = np.clip((self.ys[r] - rows[0]) / self.px + 0.5, 0, 1)[:, None, None]
            self.img[r] += below * (grad[r] - self.img[r])

    def below(self, y_of_x, colour, alpha: float = 1.0, y_min: float = 0.0):
        """Paint everything below the curve y = y_of_x(x) (y_of_x takes the column xs)."""
        r = self._rows(y_min, self.y1)
        edge = y_of_x(self.xs)[None, :]  # (1, W)
        mask = np.clip((self.ys[r][:, None] - edge) / self.px + 0.5, 0, 1)
        self._blend(r, slice(None), mask, colour, alpha)

    def ellipse(self, cx, cy, rx, ry, colour, alpha: float = 1.0):
        rx, ry = max(rx, 1e-4), max(ry, 1e-4)
        rows, cols = self._rows(cy - ry, cy + ry), self._cols(cx - rx, cx + rx)
        dx = (self.xs[cols][None, :] - cx) / rx
        dy = (self.ys[rows][:, None] - cy) / ry
        # signed distance approximated in scene units through the smaller radius
        d = (1.0 - np.sqrt(dx * dx + dy * dy)) * min(rx, ry)
        self._blend(rows, cols, np.clip(d / self.px + 0.5, 0, 1), colour, alpha)

    def glow(self, cx, cy, r, colour, alpha: float = 1.0):
        """A soft disc whose opacity falls off smoothly to zero at radius r."""
        rows, cols = self._rows(cy - r, cy + r), self._cols(cx - r, cx + r)
        dx = self.xs[cols][None, :] - cx
        dy = self.ys[rows][:, None] - cy
        mask = np.clip(1.0 - (dx * dx + dy * dy) / (r * r), 0, 1) ** 2
        self._blend(rows, cols, mask, colour, alpha)

    def rect(self, xa, ya, xb, yb, colour, alpha: float = 1.0):
        rows, cols = self._rows(ya, yb), self._cols(xa, xb)
        mx = np.minimum(self.xs[cols] - xa, xb - self.xs[cols])[None, :]
        my = np.minimum(self.ys[rows] - ya, yb - self.ys[rows])[:, None]
        self._blend(rows, cols, np.clip(np.minimum(mx, my) / self.px + 0.5, 0, 1), colour, alpha)

    def to_uint8(self) -> np.ndarray:
        return (np.clip(self.img, 0, 1) * 255.0 + 0.5).astype(np.uint8)


# -- the five pictures --------------------------------------------------------------------------
# Each class has `_static` (drawn once per video) and `_dynamic` (drawn per frame on a copy).
def _baby_static(c: Canvas, s: dict):
    a, n = s["attributes"], s["nuisance"]
    wall = hsv(a["hue_deg"], 0.5, n["wall_val"])
    c.vgradient(wall * 1.05, wall * 0.8)
    # blanket along the bottom edge
    c.rect(-2, 0.86, 2, 2, hsv(n["blanket_hue"], 0.25, 0.9))
    r, cx, cy = a["object_size"], n["x"], n["y"]
    skin = hsv(n["skin_hue"], n["skin_sat"], n["skin_val"])
    c.ellipse(cx, cy - 0.55 * r, 0.75 * r, 0.5 * r, hsv(30, 0.6, n["hair_val"]))  # hair
    c.ellipse(cx - 0.98 * r, cy, 0.16 * r, 0.24 * r, skin * 0.92)  # ears
    c.ellipse(cx + 0.98 * r, cy, 0.16 * r, 0.24 * r, skin * 0.92)
    c.ellipse(cx, cy, r, 1.08 * r, skin)
    c.ellipse(cx - 0.5 * r, cy + 0.22 * r, 0.2 * r, 0.14 * r, hsv(355, 0.45, 0.95), 0.5)  # cheeks
    c.ellipse(cx + 0.5 * r, cy + 0.22 * r, 0.2 * r, 0.14 * r, hsv(355, 0.45, 0.95), 0.5)
    eye = np.array([0.2, 0.12, 0.1], np.float32)
    c.ellipse(cx - 0.36 * r, cy - 0.12 * r, 0.2 * r, 0.055 * r, eye)  # squeezed-shut eyes
    c.ellipse(cx + 0.36 * r, cy - 0.12 * r, 0.2 * r, 0.055 * r, eye)


def _baby_dynamic(c: Canvas, s: dict, t: float, opening: float):
    a, n = s["attributes"], s["nuisance"]
    r, cx, cy = a["object_size"], n["x"], n["y"]
    c.ellipse(cx, cy + 0.45 * r, 0.3 * r, (0.07 + 0.2 * opening) * r, np.array([0.45, 0.08, 0.1], np.float32))


def _dog_body(c: Canvas, s: dict):
    a, n = s["attributes"], s["nuisance"]
    length, cx, feet = a["object_size"], n["x"], n["feet_y"]
    fur = hsv(n["fur_hue"], n["fur_sat"], n["fur_val"])
    leg_h, body_h = 0.32 * length, 0.42 * length
    body_y = feet - leg_h - 0.4 * body_h
    for lx in (-0.36, -0.2, 0.22, 0.36):
        c.rect(cx + lx * length - 0.045 * length, body_y, cx + lx * length + 0.045 * length, feet, fur * 0.85)
    c.ellipse(cx, body_y, 0.5 * length, 0.5 * body_h, fur)
    return fur, length, cx, body_y, body_h


def _dog_static(c: Canvas, s: dict):
    a, n = s["attributes"], s["nuisance"]
    sky = hsv(a["hue_deg"], 0.55, 0.92)
    c.vgradient(sky * 0.85, sky * 1.08, 0.0, n["horizon_y"])
    grass = hsv(n["grass_hue"], 0.6, n["grass_val"])
    c.vgradient(grass * 1.1, grass * 0.85, n["horizon_y"], 1.0, rows=(n["horizon_y"], 1.0))
    _dog_body(c, s)


def _dog_dynamic(c: Canvas, s: dict, t: float, bark: float):
    fur, length, cx, body_y, body_h = _dog_body_geometry(s)
    # tail wags, head lifts and the jaw drops while barking
    wag = 0.08 * length * math.sin(2 * math.pi * 3.0 * t)
    c.ellipse(cx - 0.55 * length, body_y - 0.25 * body_h + wag, 0.05 * length, 0.2 * length, fur * 0.9)
    hx, hy = cx + 0.5 * length, body_y - 0.55 * body_h - 0.05 * length * bark
    c.ellipse(hx - 0.08 * length, hy - 0.18 * length, 0.07 * length, 0.13 * length, fur * 0.7)  # ear
    c.ellipse(hx, hy, 0.2 * length, 0.18 * length, fur)
    c.ellipse(hx + 0.2 * length, hy + 0.04 * length, 0.12 * length, 0.07 * length, fur * 0.95)  # snout
    c.ellipse(hx + 0.17 * length, hy + (0.1 + 0.06 * bark) * length, 0.1 * length, (0.02 + 0.05 * bark) * length,
              np.array([0.35, 0.1, 0.1], np.float32))
    c.ellipse(hx + 0.04 * length, hy - 0.05 * length, 0.03 * length, 0.03 * length, np.zeros(3, np.float32))


def _dog_body_geometry(s: dict):
    a, n = s["attributes"], s["nuisance"]
    length, cx, feet = a["object_size"], n["x"], n["feet_y"]
    fur = hsv(n["fur_hue"], n["fur_sat"], n["fur_val"])
    leg_h, body_h = 0.32 * length, 0.42 * length
    return fur, length, cx, feet - leg_h - 0.4 * body_h, body_h


def _rail_static(c: Canvas, s: dict):
    n = s["nuisance"]
    c.vgradient(hsv(210, 0.45, n["sky_val"]), hsv(200, 0.2, n["sky_val"]), 0.0, 0.6)
    hill = hsv(n["ground_hue"] + 20, 0.45, 0.5)
    hh, ph = n["hill_height"], n["hill_phase"]
    c.below(lambda x: 0.6 - hh * (0.6 + 0.4 * np.sin(4.0 * x + ph)), hill, y_min=0.6 - hh)
    ground = hsv(n["ground_hue"], 0.45, 0.6)
    c.vgradient(ground, ground * 0.8, 0.6, 1.0, rows=(0.6, 1.0))
    ry = n["rail_y"]
    c.rect(-2, ry - 0.005, 2, ry + 0.045, np.array([0.42, 0.36, 0.3], np.float32))  # ballast
    c.rect(-2, ry - 0.002, 2, ry + 0.012, np.array([0.62, 0.62, 0.65], np.float32))  # rail


def _rail_dynamic(c: Canvas, s: dict, t: float, env: float):
    a, n = s["attributes"], s["nuisance"]
    height, ry = a["object_size"], n["rail_y"]
    top, bottom = ry - height, ry - 0.012
    body = hsv(a["hue_deg"], 0.65, 0.78)
    c.rect(-2, top, 2, bottom, body)
    c.rect(-2, top, 2, top + 0.12 * height, body * 0.7)  # roof
    # windows and wagon gaps move with the train; a gap passes x = 0 at every clack
    wagon = a["wagon_length"]
    offset = n["speed"] * t - n["offset"] * wagon
    cols = c._cols(-2, 2)
    phase = ((c.xs[cols] + offset) / wagon) % 1.0  # 0 at a gap
    gap_w = 0.016 / wagon
    gap = np.clip((np.minimum(phase, 1 - phase) - gap_w / 2) * wagon / c.px, 0, 1)  # 0 in the gap
    win_phase = (phase * 4.0) % 1.0
    window = np.clip((0.25 - np.abs(win_phase - 0.5)) * wagon / 4.0 / c.px, 0, 1) * gap
    rows_w = c._rows(top + 0.25 * height, top + 0.5 * height)
    c._blend(rows_w, cols, np.broadcast_to(window[None, :], (rows_w.stop - rows_w.start, window.size)),
             np.array([0.95, 0.92, 0.7], np.float32), 0.45)
    rows_b = c._rows(top, bottom)
    c._blend(rows_b, cols, np.broadcast_to(1 - gap[None, :], (rows_b.stop - rows_b.start, gap.size)),
             np.array([0.1, 0.1, 0.12], np.float32))
    for wx in (-0.35, 0.35):  # wheels
        c.ellipse(wx, bottom, 0.035, 0.025, np.array([0.15, 0.15, 0.15], np.float32))


def _fireworks_static(c: Canvas, s: dict):
    a, n = s["attributes"], s["nuisance"]
    c.vgradient(hsv(n["sky_hue"], 0.8, 0.05), hsv(n["sky_hue"], 0.6, 0.22))
    # the smoke around the burst is lit in the burst's colour
    c.glow(n["x"], n["y"], 0.45 + 1.5 * a["object_size"], hsv(a["hue_deg"], 0.8, 0.45), 0.9)
    rng = np.random.default_rng(n["skyline_seed"])
    x = -0.75
    while x < 0.75:  # a skyline of dark buildings
        w = rng.uniform(0.06, 0.16)
        c.rect(x, 0.84 - rng.uniform(0.0, 0.1), x + w, 2, np.array([0.03, 0.03, 0.05], np.float32))
        x += w


def _fireworks_dynamic(c: Canvas, s: dict, t: float, flash: float):
    a, n = s["attributes"], s["nuisance"]
    r, cx, cy = a["object_size"], n["x"], n["y"]
    bright = 0.8 + 0.2 * flash  # the burst glows between explosions (smoke lit from below)
    colour = hsv(a["hue_deg"], 0.85, bright)
    c.glow(cx, cy, 1.3 * r, colour, 0.9)
    # two rings of sparks, slowly turning: each pixel looks only at its nearest spark per ring
    rays, turn = int(n["rays"]), 0.3 * t
    rows, cols = c._rows(cy - 0.95 * r, cy + 0.95 * r), c._cols(cx - 0.95 * r, cx + 0.95 * r)
    dx, dy = c.xs[cols][None, :] - cx, c.ys[rows][:, None] - cy
    theta = np.arctan2(dy, dx)
    step = 2 * math.pi / rays
    spark_angle = turn + np.round((theta - turn) / step) * step
    mask = np.zeros(dx.shape, np.float32)
    for ring, dot in ((0.55, 0.07), (0.85, 0.085)):
        ex, ey = dx - ring * r * np.cos(spark_angle), dy - ring * r * np.sin(spark_angle)
        mask = np.maximum(mask, np.clip((dot * r - np.sqrt(ex * ex + ey * ey)) / c.px + 0.5, 0, 1))
    c._blend(rows, cols, mask, hsv(a["hue_deg"], 0.5, min(1.0, bright + 0.15)))
    c.glow(cx, cy, 0.3 * r, np.array([1.0, 1.0, 0.95], np.float32), 0.6 * bright)


def _water_static(c: Canvas, s: dict):
    a, n = s["attributes"], s["nuisance"]
    bank_y = 1.0 - a["object_size"]
    bank = hsv(n["bank_hue"], 0.55, n["bank_val"])
    c.vgradient(bank * 1.2, bank * 0.8, 0.0, bank_y)
    water = hsv(a["hue_deg"], 0.6, 0.75)
    c.vgradient(water * 0.85, water * 1.1, bank_y, 1.0, rows=(bank_y, 1.0))


def _water_dynamic(c: Canvas, s: dict, t: float, env: float):
    a, n = s["attributes"], s["nuisance"]
    bank_y = 1.0 - a["object_size"]
    rows, cols = c._rows(bank_y, 1.0), c._cols(-2, 2)
    xs, ys = c.xs[cols][None, :], c.ys[rows][:, None]
    # light streaks drifting downstream (to the right), wavier further from the bank
    u = (xs - n["flow_speed"] * t) * 7.0 + 1.5 * np.sin(ys * 23.0 + n["streak_phase"] * 6.28) + n["streak_phase"]
    streak = np.clip(np.sin(u * 2 * math.pi) * 0.5 + 0.5, 0, 1) ** 6
    inside = np.clip((ys - bank_y) / c.px + 0.5, 0, 1)
    c._blend(rows, cols, streak * inside * 0.45, np.array([0.95, 0.97, 1.0], np.float32))
    rr = n["rock_r"]
    c.ellipse(n["rock_x"], bank_y + 0.5 * a["object_size"], 1.4 * rr, rr, np.array([0.4, 0.38, 0.36], np.float32))


_DRAW = {
    "baby_cry": (_baby_static, _baby_dynamic),
    "dog": (_dog_static, _dog_dynamic),
    "rail_transport": (_rail_static, _rail_dynamic),
    "fireworks": (_fireworks_static, _fireworks_dynamic),
    "water_flowing": (_water_static, _water_dynamic),
}


def full_window(width: int, height: int) -> tuple[float, float, float, float]:
    half = 0.5 * width / height
    return (-half, 0.0, half, 1.0)


CROP_WINDOW = (-0.5, 0.0, 0.5, 1.0)  # the centre square of any landscape frame


def render_frames(scene: dict, times, width: int = 160, height: int = 120,
                  window: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Frames of `scene` at `times` (s): (T, height, width, 3) uint8. `window` (x0, y0, x1, y1)
    in scene units; default the whole landscape frame."""
    window = full_window(width, height) if window is None else window
    static, dynamic = _DRAW[scene["class"]]
    base = Canvas(width, height, window)
    static(base, scene)
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    env = envelope(scene, times)  # (T,) mouth opening / burst flash, as in the sound
    out = np.empty((len(times), height, width, 3), dtype=np.uint8)
    for i, t in enumerate(times):
        c = Canvas.__new__(Canvas)
        c.__dict__.update(base.__dict__)
        c.img = base.img.copy()
        dynamic(c, scene, float(t), float(env[i]))
        out[i] = c.to_uint8()
    return out


def render_frame(scene: dict, t: float, width: int = 160, height: int = 120,
                 window: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """One frame (height, width, 3) uint8 of `scene` at time t (s)."""
    return render_frames(scene, [t], width, height, window)[0]


def render_crop(scene: dict, t: float, size: int = 96, supersample: int = 2) -> np.ndarray:
    """The centre square crop at time t as `prepare` stores it, (size, size, 3) uint8, rendered
    straight into the square (no encoding) with `supersample`^2 samples per pixel."""
    big = render_frames(scene, [t], size * supersample, size * supersample, CROP_WINDOW)[0]
    k = supersample
    return big.reshape(size, k, size, k, 3).mean(axis=(1, 3)).round().astype(np.uint8)
