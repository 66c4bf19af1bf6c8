"""A small waveform-input sound-to-image translator: the example of an s2i-bench plugin.

    python examples/train_waveform_translator.py --data demo-work/store     # ~1 min on a CPU
    s2i-bench score examples/waveform_translator.py:make                    # scores it

It listens to the raw 16 kHz waveform (a 1-D convolutional front end, no spectrogram) and paints
a 64 x 64 image (the toolkit resizes it to the protocol's 96 x 96 for the classifiers). It is
deterministic; a stochastic system would draw its noise from `batch.seeds`, one seed per image.
Weights: $S2I_EXAMPLE_WEIGHTS, else waveform_translator.pt beside this file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

IMAGE_SIDE = 64


class WaveformTranslator(nn.Module):
    def __init__(self, width: int = 32, embedding: int = 64):
        super().__init__()
        # 16000 samples -> 995 -> 123 -> 30 frames; then a mean over time
        self.front = nn.Sequential(
            nn.Conv1d(1, width, kernel_size=64, stride=16), nn.ReLU(),
            nn.Conv1d(width, width, kernel_size=16, stride=8), nn.ReLU(),
            nn.Conv1d(width, embedding, kernel_size=8, stride=4), nn.ReLU())
        self.to_grid = nn.Linear(embedding, 64 * 4 * 4)
        layers = []
        for cin, cout in ((64, 48), (48, 32), (32, 16), (16, 8)):  # 4 -> 8 -> 16 -> 32 -> 64
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
        self.paint = nn.Sequential(*layers, nn.Conv2d(8, 3, 3, padding=1), nn.Tanh())

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.front(waveform[:, None, :])  # (B, 1, 16000) -> (B, E, 30)
        x = x.mean(dim=2)  # (B, E)
        x = self.to_grid(x).view(-1, 64, 4, 4)  # (B, 64, 4, 4)
        return self.paint(x)  # (B, 3, 64, 64) in [-1, 1]


class Plugin:
    """What s2i-bench calls: translate(batch) -> float (B, 3, H, W) in [-1, 1]."""

    name = "example-waveform-translator"
    version = "1"
    inputs = ("waveform",)

    def __init__(self, model: WaveformTranslator, device: str):
        self.model, self.device = model.to(device).eval(), device

    @torch.no_grad()
    def translate(self, batch):
        return self.model(batch.waveform.to(self.device))  # (B, 16000) -> (B, 3, 64, 64)


def weights_path() -> Path:
    return Path(os.environ.get("S2I_EXAMPLE_WEIGHTS") or Path(__file__).with_name("waveform_translator.pt"))


def make(protocol, device):
    """The plugin's factory: s2i-bench passes the protocol and the device."""
    path = weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path}: train them with "
                                f"`python examples/train_waveform_translator.py --data STORE --out {path}`")
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, never code
    model = WaveformTranslator()
    model.load_state_dict(state)
    return Plugin(model, device)
