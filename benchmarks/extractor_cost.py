"""What each feature extractor costs: seconds per 1,000 images, on this machine.

Every extractor of `score --metrics` is timed on the protocol's images ((B, 3, 96, 96) in
[-1, 1], what scoring hands them), after one warm-up call: the bundle's domain CNN, the three
FID Inception presets and the CLIP presets (open_clip ViT-B/32 and ViT-L/14, transformers
ViT-B/32). The networks have their real architectures with random weights written here in each
library's format (the cost does not depend on the values; nothing is downloaded), so the CLIP
files are large (0.6 and 1.7 GB, in a temporary folder).

    .venv/bin/python -m benchmarks.extractor_cost [--images 32] [--threads N] [--device cpu] [--skip-large]

Writes results/benchmarks/extractor-cost-<date>.json and .md with the machine. Numbers from a
shared or busy machine are upper bounds: re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.results import machine, write
from s2i_bench.provenance import code_version

os.environ.setdefault("S2I_BENCH_QUIET", "1")


def _domain(tmp: Path):
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.protocol import load_protocol
    from s2i_bench.scoring.features import domain_extractor
    from tests.fakes import write_bundle  # the tests' bundle in the real format, random weights

    return domain_extractor(load_bundle(write_bundle(tmp / "bundle.pt", load_protocol("tiny"))))


def _inception_weights(tmp: Path) -> Path:
    from s2i_bench.scoring.inception import FIDInception

    path = tmp / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(FIDInception().state_dict(), path)  # torch's initial values: the cost is the same
    return path


def _open_clip_weights(tmp: Path, arch: str) -> Path:
    import open_clip
    from safetensors.torch import save_file

    path = tmp / f"{arch}.safetensors"
    model = open_clip.create_model(arch, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _hf_folder(tmp: Path) -> Path:
    from transformers import CLIPConfig, CLIPModel

    folder = tmp / "hf-clip-vit-b-32"
    CLIPModel(CLIPConfig()).save_pretrained(folder)  # the default config is ViT-B/32's
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def _time(extractor, images: torch.Tensor, repeats: int) -> tuple[float, int]:
    extractor(images[:2])  # warm-up: allocations, lazy imports
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        out = extractor(images)
        best = min(best, time.perf_counter() - started)
    return best, int(out.shape[1])


def extractors(tmp: Path, device: str, skip_large: bool):
    """(name, what it is, a function building the extractor) for every extractor."""
    from s2i_bench.scoring.presets import load_preset

    inception = _inception_weights(tmp)
    out = [("domain", "the bundle's class-match CNN, fc2 (32-d)", lambda: _domain(tmp))]
    out += [(f"inception-{r}", f"FID Inception-v3 pool3, {r} resize",
             lambda r=r: load_preset(f"inception-{r}", inception, device=device))
            for r in ("pytorch-fid", "torch-fidelity", "torchmetrics")]
    out.append(("clip-vit-b-32", "open_clip ViT-B/32 (OpenAI architecture)",
                lambda: load_preset("clip-vit-b-32", _open_clip_weights(tmp, "ViT-B-32-quickgelu"), device=device)))
    out.append(("hf-clip-vit-b-32", "transformers CLIP ViT-B/32",
                lambda: load_preset("hf-clip-vit-b-32", _hf_folder(tmp), device=device)))
    if not skip_large:
        out.append(("clip-vit-l-14", "open_clip ViT-L/14 (OpenAI architecture)",
                    lambda: load_preset("clip-vit-l-14", _open_clip_weights(tmp, "ViT-L-14-quickgelu"),
                                        device=device)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=32, help="images per timed call (ViT-L/14: a quarter)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-large", action="store_true", help="leave out ViT-L/14 (a 1.7 GB file, slow on a CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = dt.datetime.now()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, what, build in extractors(Path(tmp), args.device, args.skip_large):
            n = max(4, args.images // 4) if name == "clip-vit-l-14" else args.images
            images = torch.from_numpy(rng.uniform(-1, 1, size=(n, 3, 96, 96)).astype(np.float32))
            seconds, dims = _time(build(), images, args.repeats)
            rows.append({"extractor": name, "what": what, "dims": dims, "images_timed": n,
                         "seconds_per_1000": round(seconds / n * 1000, 2), "images_per_second": round(n / seconds, 2)})
            print(f"{name}: {rows[-1]['seconds_per_1000']} s per 1,000 images", flush=True)
    result = {"benchmark": "extractor-cost", "started": started.isoformat(timespec="seconds"),
              "device": args.device, "threads": args.threads, "image_size": 96, "repeats": args.repeats,
              "machine": machine(), "code_version": code_version(), "extractors": rows,
              "note": "best of the repeats after one warm-up call; random weights of the real architectures"}
    md = [f"# Feature extractor cost ({args.device}, {args.threads} threads, {started:%Y-%m-%d})", "",
          f"Machine: {result['machine']['cpu_model']}, {result['machine']['cores']} cores. Images: 96 px, "
          "in [-1, 1], as scoring hands them; best of the repeats after a warm-up call.", "",
          "| extractor | what | dims | s per 1,000 images | images / s |", "| --- | --- | --- | --- | --- |"]
    md += [f"| {r['extractor']} | {r['what']} | {r['dims']} | {r['seconds_per_1000']} | {r['images_per_second']} |"
           for r in rows]
    write("extractor-cost", started, result, md)


if __name__ == "__main__":
    main()
