"""Train the example waveform translator on a store's training waveforms (L1 to each segment's
centre frame at 64 x 64). Seeded: the same store, seed and steps give the same weights on one
machine.

    python examples/train_waveform_translator.py --data demo-work/store --steps 600
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from waveform_translator import IMAGE_SIDE, WaveformTranslator, weights_path


def train(store_path: str, out: Path, steps: int = 600, batch_size: int = 32, seed: int = 0, lr: float = 2e-3) -> Path:
    from s2i_bench.data.store import open_store

    store = open_store(store_path)
    store.require_waveforms("the example waveform translator")
    rows = store.split_indices("train")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = WaveformTranslator()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        idx = np.sort(rng.choice(rows, size=min(batch_size, len(rows)), replace=False))
        wave = torch.from_numpy(store.waveforms_of(idx))  # (B, 16000) in [-1, 1]
        # (B, 3, 96, 96) in [-1, 1]
        frames = torch.from_numpy(np.asarray(store.frames[idx])).permute(0, 3, 1, 2).float() / 127.5 - 1
        target = F.interpolate(frames, size=(IMAGE_SIDE, IMAGE_SIDE), mode="bilinear", antialias=True,
                               align_corners=False)
        loss = F.l1_loss(model(wave), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:4d}  L1 {loss.item():.4f}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, out)  # never a half-written weights file
    print(f"weights -> {out}; score with: s2i-bench score examples/waveform_translator.py:make --data {store_path}")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a store with waveforms (s2i-bench prepare)")
    ap.add_argument("--out", type=Path, default=weights_path())
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train(args.data, args.out, steps=args.steps, seed=args.seed)
