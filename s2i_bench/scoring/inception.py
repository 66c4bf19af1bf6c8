"""The FID Inception-v3, as the field computes FID and KID: offline, from weights the user has.

    model = load_inception(find_weights(path_or_None)); check_weights(path)
    f = features(model, quantise(images), resize="pytorch-fid")   # (B, 3, S, S) in [-1, 1] -> (B, 2048)

`scoring.presets` wraps this as the `inception-*` feature presets.

The network is TensorFlow's 2015-12-05 Inception graph as pytorch-fid ports it (its
`FIDInceptionA/C/E_1/E_2` blocks: average pools that leave the zero padding out of the mean, a
max pool in the last block) and as torch-fidelity rebuilds it; both read the same weights file
layout (torchvision's key names, 566 entries with the 1008-way `fc`). The features are the
2048-d output of the final average pool ("pool3").

Weights: the file the user names, else the torch hub cache where both libraries keep it
(`torch.hub.get_dir()/checkpoints/`, under either library's file name). They are read with
`weights_only=True` (`safeload`) and their sha256 is checked against the published one; a
different file is said in a warning and in the record (`check`), never silently used as if it
were the published network. s2i-bench never downloads: without a file, one line says what to
fetch and where to put it.

Resizing to 299 x 299, the way each reference implementation does it (the record names which):

    pytorch-fid     uint8 / 255, bilinear without antialiasing (F.interpolate, align_corners
                    False), then 2x - 1 (pytorch-fid 0.3 `InceptionV3(resize_input=True,
                    normalize_input=True)` on images read from PNG)
    torch-fidelity  uint8 as float, TensorFlow 1.x's bilinear resize (source pixel = output
                    pixel x in/out, no half-pixel offset), then (x - 128) / 128
    torchmetrics    uint8 as float, bilinear with antialiasing, then (x - 128) / 128
                    (torchmetrics 1.9 `FrechetInceptionDistance`, whose default is
                    antialias=True)

Why it matters: Parmar, Zhang and Zhu (CVPR 2022, "On Aliased Resizing and Surprising
Subtleties in GAN Evaluation", the clean-fid paper) show that resizing without antialiasing
aliases, and that the choice of resize and of JPEG compression alone moves FID by amounts
comparable to the differences papers report; FIDs computed with different resizes are not
comparable. s2i-bench upsamples its 96-px images to 299, where aliasing is small, but the resize
is still part of the recipe (`scoring.presets`).

Images are quantised to uint8 first (as a PNG of them would hold them), so real frames, stored as
uint8, are exactly the bytes the reference libraries would read. The network runs on fixed
chunks of CHUNK images (the last one zero-padded), so an image's features never depend on the
batch size it came in (torchmetrics#1620, torch-fidelity#43: FID moved with batch size).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s2i_bench.errors import UserError
from s2i_bench.fileio import file_sha256
from s2i_bench.safeload import check_state_dict, load_state_into, load_weights_only

logger = logging.getLogger(__name__)

# The two file names the reference libraries cache the weights under (the same bytes).
WEIGHTS_NAMES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_NAMES[0]
# The sha256 of both files. The maintainers publish its first 8 hex digits in the file names (torch
# hub's naming rule: `-<sha256 prefix>.pth`); the full value is not on their release pages. The
# full value below is the one independent projects pin for both files (95,628,359 bytes, 566
# entries; found in public code with the `search` tool, 2026-12), and it agrees with the prefix.
PUBLISHED_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
PUBLISHED_SOURCE = ("prefix 6726825d in the maintainers' file names (pytorch-fid, torch-fidelity); full value as "
                    "independent projects pin it")
SIZE = 299
DIMS = 2048
CHUNK = 4  # images per forward pass, whatever the caller's batch (padded with zeros)
RESIZES = ("pytorch-fid", "torch-fidelity", "torchmetrics")
# torch hub's own sub-folder for downloaded weights (torch.hub.load_state_dict_from_url): torch's
# name, not a run folder's, so it is spelled once here
TORCH_HUB_WEIGHTS_FOLDER = "checkpoints"


# -- the network ----------------------------------------------------------------------------------------
class _Conv(nn.Module):
    """Convolution without bias, batch norm (eps 0.001, TensorFlow's) and ReLU."""

    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    # TensorFlow's 3x3 average pool leaves the zero padding out of the mean
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):  # Mixed_5b..5d, 35 x 35
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, kernel_size=1)
        self.branch5x5_1 = _Conv(cin, 48, kernel_size=1)
        self.branch5x5_2 = _Conv(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = _Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, kernel_size=3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class _BlockB(nn.Module):  # Mixed_6a: 35 -> 17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = _Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _BlockC(nn.Module):  # Mixed_6b..6e, 17 x 17, factorised 7x7
    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = _Conv(cin, 192, kernel_size=1)
        self.branch7x7_1 = _Conv(cin, c7, kernel_size=1)
        self.branch7x7_2 = _Conv(c7, c7, **row)
        self.branch7x7_3 = _Conv(c7, 192, **col)
        self.branch7x7dbl_1 = _Conv(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = _Conv(c7, c7, **col)
        self.branch7x7dbl_3 = _Conv(c7, c7, **row)
        self.branch7x7dbl_4 = _Conv(c7, c7, **col)
        self.branch7x7dbl_5 = _Conv(c7, 192, **row)
        self.branch_pool = _Conv(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))], 1)


class _BlockD(nn.Module):  # Mixed_7a: 17 -> 8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _Conv(cin, 192, kernel_size=1)
        self.branch3x3_2 = _Conv(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = _Conv(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _BlockE(nn.Module):  # Mixed_7b (average pool), Mixed_7c (max pool: the TF graph's quirk), 8 x 8
    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = _Conv(cin, 320, kernel_size=1)
        self.branch3x3_1 = _Conv(cin, 384, kernel_size=1)
        self.branch3x3_2a = _Conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = _Conv(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """(B, 3, 299, 299) in [-1, 1] -> (B, 2048): the pool3 features. `fc` is kept so that the
    published file loads strictly (every key checked); it is not used."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _BlockA(192, 32), _BlockA(256, 64), _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b, self.Mixed_6c = _BlockC(768, 128), _BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _BlockC(768, 160), _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b, self.Mixed_7c = _BlockE(1280, "avg"), _BlockE(2048, "max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)  # ... (B, 2048, 8, 8)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 2048)


# -- the weights ----------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where torch hub (and so pytorch-fid and torch-fidelity) keeps downloaded weights."""
    return Path(torch.hub.get_dir()) / TORCH_HUB_WEIGHTS_FOLDER


def find_weights(path=None) -> Path:
    """The weights file: `path`, else either library's file in the torch hub cache; else one line
    saying what to fetch and where to put it (nothing is downloaded)."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: FID Inception weights not found")
        return path
    for name in WEIGHTS_NAMES:
        candidate = cache_dir() / name
        if candidate.is_file():
            return candidate
    raise UserError(f"no FID Inception weights: s2i-bench downloads nothing; fetch {WEIGHTS_URL} and put it in "
                    f"{cache_dir()}/ (where pytorch-fid and torch-fidelity keep it), or pass --feature-weights FILE")


def check_weights(path: Path) -> dict:
    """{sha256, published_sha256, check}: "published" when the file is the published one, else
    "differs" (and a warning): features of other weights are not comparable to published FIDs."""
    sha = file_sha256(Path(path))
    if sha == PUBLISHED_SHA256:
        return {"sha256": sha, "published_sha256": PUBLISHED_SHA256, "check": "published"}
    logger.warning(f"{path}: sha256 {sha[:16]}... is not the published FID Inception weights "
                   f"({PUBLISHED_SHA256[:16]}...): its FID and KID are not comparable to published ones")
    return {"sha256": sha, "published_sha256": PUBLISHED_SHA256, "check": "differs"}


def load_inception(path: Path, device="cpu") -> FIDInception:
    """The network with the file's weights (weights_only, every key and shape checked), eval mode."""
    state = load_weights_only(path, "FID Inception weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    check_state_dict(state, str(path), "FID Inception weights")
    model = load_state_into(FIDInception(), state, str(path), "FID Inception weights")
    return model.eval().requires_grad_(False).to(device)


# -- the resizes ----------------------------------------------------------------------------------------
def _tf1_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1.x's bilinear resize (align_corners False): output pixel i reads input
    position i * in / out, no half-pixel offset, the last pixel repeated at the edge."""
    def axis(n_in: int):
        pos = torch.arange(size, dtype=x.dtype, device=x.device) * torch.tensor(n_in / size, dtype=torch.float32)
        lo = pos.long()
        return lo, (lo + 1).clamp_max(n_in - 1), pos - lo.to(x.dtype)

    ylo, yhi, dy = axis(x.shape[2])
    xlo, xhi, dx = axis(x.shape[3])
    top, bottom = x[:, :, ylo, :], x[:, :, yhi, :]
    t0, t1 = top[:, :, :, xlo], top[:, :, :, xhi]
    b0, b1 = bottom[:, :, :, xlo], bottom[:, :, :, xhi]
    upper = t0 + (t1 - t0) * dx.view(1, 1, 1, size)
    lower = b0 + (b1 - b0) * dx.view(1, 1, 1, size)
    return upper + (lower - upper) * dy.view(1, 1, size, 1)


def to_network_input(u8: torch.Tensor, resize: str) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, 299, 299) float32 in the network's range, as `resize` says."""
    x = u8.float()
    if resize == "pytorch-fid":
        x = F.interpolate(x / 255, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1
    if resize == "torch-fidelity":
        return (_tf1_bilinear(x, SIZE) - 128) / 128
    if resize == "torchmetrics":
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
        return (x - 128) / 128
    raise UserError(f"unknown Inception resize {resize!r} (known: {', '.join(RESIZES)})")


def quantise(images) -> torch.Tensor:
    """(B, 3, S, S) float in [-1, 1] -> uint8, rounded as `images.net_to_uint8` (and a PNG) does."""
    t = torch.as_tensor(images).detach().float().cpu()
    return ((t.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def features(model: FIDInception, u8: torch.Tensor, resize: str, device="cpu") -> np.ndarray:
    """(B, 3, H, W) uint8 -> (B, 2048) float32, CHUNK images per pass whatever B is."""
    out = []
    with torch.no_grad():
        for start in range(0, len(u8), CHUNK):
            part = u8[start:start + CHUNK]
            n = len(part)
            if n < CHUNK:  # the same shape on every pass: the same kernels, so batch size never matters
                part = torch.cat([part, part.new_zeros((CHUNK - n, *part.shape[1:]))])
            x = to_network_input(part.to(device), resize)
            out.append(model(x)[:n].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, DIMS), np.float32)
