"""Image conventions shared by every part: stored frames are uint8 (N, S, S, 3); networks see
float (N, 3, S, S) in [-1, 1] (`x / 127.5 - 1`, SPEC section 3)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def uint8_to_net(frames, device=None) -> torch.Tensor:
    """(N, S, S, 3) uint8 (numpy or torch) -> (N, 3, S, S) float32 tensor in [-1, 1], on `device`
    if given (moved while still uint8: a quarter of the bytes)."""
    if isinstance(frames, torch.Tensor):
        t = frames
    else:
        a = np.asarray(frames)
        # memory-mapped store arrays are read-only; torch wants a writable buffer
        t = torch.from_numpy(a if a.flags.writeable else a.copy())
    if device is not None:
        t = t.to(device)
    return t.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def chw_uint8_to_net(images_u8):
    """(N, 3, S, S) uint8 tensor (frames already in network layout) -> float32 in [-1, 1]."""
    return images_u8.float().div_(127.5).sub_(1.0)


def net_to_uint8(images) -> np.ndarray:
    """(N, 3, S, S) float in [-1, 1] -> (N, S, S, 3) uint8 numpy (rounded, clipped)."""
    t = images.detach().float().cpu() if isinstance(images, torch.Tensor) else torch.as_tensor(images).float()
    return ((t.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def resize_net(images, size: int):
    """Bilinear (antialiased when shrinking) resize of (N, 3, H, W) float images to size x size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > size)
