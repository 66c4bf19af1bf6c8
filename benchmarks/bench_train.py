"""Training speed of the reference translator (issue 4): images/second of the G and D steps as
`train-baseline` runs them (the same `generator_epoch` / `discriminator_epoch` functions, on
random data of the right shapes), seconds per epoch, and counted FLOPs.

    .venv/bin/python -m benchmarks.bench_train                 # small profile on CPU (+ paper on CUDA if present)
    .venv/bin/python -m benchmarks.bench_train --device cuda --compile

CPU: the `synth` protocol's small profile (f = 64) on ~1,000 training segments (the demo's size).
CUDA: the paper profile at f = 512 (bf16 autocast, channels_last, cuDNN benchmark), seconds per
epoch on 48,945 segments, projected hours for 4000 epochs, and the model FLOP utilisation from
the counted FLOPs (torch.utils.flop_counter) against the device's dense bf16 peak.

Writes results/benchmarks/bench_train-<date>.json and .md with the machine it ran on. Numbers
taken on a shared machine are upper bounds on time: re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import torch

from s2i_bench.fileio import atomic_write_json, atomic_write_text
from s2i_bench.provenance import machine_info
from s2i_bench.protocol import load_protocol
from s2i_translator.models import AudioAutoencoder, DenseGenerator, Discriminator, count_parameters
from s2i_translator.train import discriminator_epoch, generator_epoch

ROOT = Path(__file__).resolve().parent.parent
# Progress bars read it when they start, not at import (s2i_bench.fileio.progress): here is early enough.
os.environ.setdefault("S2I_BENCH_QUIET", "1")

PAPER_SEGMENTS = 48_945  # Table 1, training
PAPER_EPOCHS = 4000
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), by device-name substring.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}


def count_flops(build, run) -> float:
    """FLOPs of run(model) counted by torch.utils.flop_counter (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build()
    with FlopCounterMode(display=False) as counter:
        run(model)
    return float(counter.get_total_flops())


def g_flops_per_image(f: int, spec, batch: int = 2) -> float:
    """Generator forward + backward FLOPs per image (the discriminator's part not included)."""
    def run(g):
        out = g(torch.rand(batch, f) * 2 - 1)
        out.float().mean().backward()

    return count_flops(lambda: DenseGenerator(f, spec), run) / batch


def g_step_flops_per_image(f: int, spec, batch: int = 2) -> float:
    """A whole G step: G forward + backward and D forward + backward to the image (D frozen)."""
    g, d = DenseGenerator(f, spec), Discriminator(f, spec).eval().requires_grad_(False)
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, f) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        fake = g(x)
        (fake.float().mean() + d(fake, x).float().mean()).backward()
    return counter.get_total_flops() / batch


def d_step_flops_per_image(f: int, spec, batch: int = 2) -> float:
    """A D step per real/synthetic pair: G forward (no grad) and D forward + backward on both."""
    g, d = DenseGenerator(f, spec), Discriminator(f, spec)
    from torch.utils.flop_counter import FlopCounterMode

    x, y = torch.rand(batch, f) * 2 - 1, torch.rand(batch, 3, spec.image_size, spec.image_size) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            fake = g(x)
        d(torch.cat((y, fake)), torch.cat((x, x))).float().mean().backward()
    return counter.get_total_flops() / batch


def time_steps(proto, f: int, device: str, batches: int, repeats: int, use_compile: bool) -> dict:
    """Seconds per G batch and per D batch through the training loop's own epoch functions."""
    tr, spec = proto.training, proto.model
    batch, size = tr.batch_size, spec.image_size
    torch.manual_seed(0)
    G = DenseGenerator(f, spec).to(device)
    D = Discriminator(f, spec).to(device)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g = torch.optim.SGD(G.parameters(), lr=tr.lr_g, momentum=tr.momentum_g)
    opt_d = torch.optim.SGD(D.parameters(), lr=tr.lr_d, momentum=tr.momentum_d)
    n = batches * batch
    emb = (torch.rand(n, f, device=device) * 2 - 1)
    targets = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, device=device)
    perm = torch.arange(n, device=device)
    G_train, D_train, G_frozen, D_frozen = G, D, G, D
    if use_compile:
        G_train, D_train, G_frozen, D_frozen = (torch.compile(m) for m in (G, D, G, D))

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def g_epoch():
        stats, _ = generator_epoch(G_train, D_frozen, opt_g, emb, targets, perm, batch=batch, rank=0, world=1,
                                   r_max=tr.r_max, adv_lambda=tr.adv_lambda, past_adv=[0.5] * 3, device=device)
        return stats

    def d_epoch():
        stats, _ = discriminator_epoch(G_frozen, D_train, opt_d, emb, targets, perm, batch=batch, rank=0, world=1,
                                       r_max=tr.r_max, r_min=tr.r_min, device=device)
        return stats

    out = {}
    for name, fn in (("g", g_epoch), ("d", d_epoch)):
        fn()  # warm-up: cuDNN autotuning, compilation, allocator
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            stats = fn()
            stats.tolist()  # the loop's one host sync per epoch
            sync()
            times.append((time.perf_counter() - start) / batches)
        out[f"{name}_seconds_per_batch"] = min(times)
        out[f"{name}_seconds_per_batch_all"] = times
        out[f"{name}_images_per_second"] = batch / min(times)
    return out


def time_autoencoder(proto, f: int, device: str, batches: int) -> dict:
    spec = proto.autoencoder
    torch.manual_seed(0)
    ae = AudioAutoencoder(f, proto.model).to(device)
    opt = torch.optim.SGD(ae.parameters(), lr=spec.lr, momentum=spec.momentum)
    s = torch.rand(spec.batch_size, 1, 128, 100, device=device) * 2 - 1

    def step():
        loss = torch.nn.functional.mse_loss(ae(s), s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    per_batch = (time.perf_counter() - start) / batches
    return {"ae_seconds_per_batch": per_batch, "ae_images_per_second": spec.batch_size / per_batch}


def epoch_seconds(steps: dict, segments: int, batch: int, d_every: int) -> float:
    """One G epoch plus 1/d_every of a D epoch (the D cadence), full batches only."""
    batches = segments // batch
    return batches * (steps["g_seconds_per_batch"] + steps["d_seconds_per_batch"] / d_every)


def small_profile(args) -> dict:
    proto = load_protocol("synth")
    f = proto.training.embedding_dim
    steps = time_steps(proto, f, "cpu", args.batches, args.repeats, use_compile=False)
    ae = time_autoencoder(proto, f, "cpu", max(2, args.batches // 2))
    segments = args.segments
    batch = proto.training.batch_size
    per_epoch = epoch_seconds(steps, segments, batch, proto.training.d_every_epochs)
    ae_seconds = proto.autoencoder.epochs * (segments // proto.autoencoder.batch_size) * ae["ae_seconds_per_batch"]
    flops_g = g_flops_per_image(f, proto.model)
    n_dims = len(proto.training.embedding_dims)
    return {
        "protocol": proto.ref(), "profile": proto.model.profile, "embedding_dim": f, "device": "cpu",
        "batch_size": batch, "threads": torch.get_num_threads(),
        "parameters": {"generator": count_parameters(DenseGenerator(f, proto.model)),
                       "discriminator": count_parameters(Discriminator(f, proto.model)),
                       "autoencoder": count_parameters(AudioAutoencoder(f, proto.model))},
        **steps, **ae,
        "training_segments": segments,
        "seconds_per_epoch": per_epoch,
        "autoencoder_seconds": ae_seconds,
        "epochs": proto.training.epochs,
        "seconds_per_translator": ae_seconds + proto.training.epochs * per_epoch,
        "seconds_demo_translators": n_dims * (ae_seconds + proto.training.epochs * per_epoch),
        "g_forward_backward_flops_per_image": flops_g,
        "g_step_flops_per_image": g_step_flops_per_image(f, proto.model),
        "d_step_flops_per_image": d_step_flops_per_image(f, proto.model),
    }


def paper_flops(f: int = 512) -> dict:
    spec = load_protocol("vegas5").model
    return {"embedding_dim": f,
            "g_forward_backward_flops_per_image": g_flops_per_image(f, spec, batch=1),
            "g_step_flops_per_image": g_step_flops_per_image(f, spec, batch=1),
            "d_step_flops_per_image": d_step_flops_per_image(f, spec, batch=1)}


def paper_profile_cuda(args, flops: dict) -> dict:
    proto = load_protocol("vegas5")
    f = 512
    steps = time_steps(proto, f, "cuda", args.batches, args.repeats, use_compile=args.compile)
    batch, d_every = proto.training.batch_size, proto.training.d_every_epochs
    per_epoch = epoch_seconds(steps, PAPER_SEGMENTS, batch, d_every)
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    achieved = (flops["g_step_flops_per_image"] * steps["g_images_per_second"]) / 1e12
    achieved_d = (flops["d_step_flops_per_image"] * steps["d_images_per_second"]) / 1e12
    return {"protocol": proto.ref(), "profile": "paper", "embedding_dim": f, "device": name,
            "compile": args.compile, "autocast": "bf16", "channels_last": True, **steps,
            "training_segments": PAPER_SEGMENTS, "seconds_per_epoch": per_epoch,
            "projected_hours_4000_epochs": per_epoch * PAPER_EPOCHS / 3600,
            "g_step_tflops_achieved": achieved, "d_step_tflops_achieved": achieved_d,
            "peak_bf16_tflops": peak,
            "g_step_mfu": achieved / peak if peak else None, "d_step_mfu": achieved_d / peak if peak else None}


def write(results: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    m = results["machine"]
    # a GPU result carries the GPU's name in its file name (e.g. bench_train-nvidia-h200-<date>)
    device = "".join(c if c.isalnum() else "-" for c in m["gpu"].lower()).strip("-") + "-" if m.get("gpu") else ""
    json_path = out_dir / f"bench_train-{device}{stamp}.json"
    md_path = json_path.with_suffix(".md")
    atomic_write_json(json_path, results)
    lines = [f"# bench_train ({stamp})", "",
             f"Machine: {m['cpu_count']} CPU cores ({m['cpu_model']}), torch {m['torch']} with {m['torch_threads']} "
             f"threads, load average {m.get('load_average')}" + (f", {m['gpu']}" if m.get("gpu") else "")
             + ".", ""]
    s = results.get("small_cpu")
    if s:
        lines += ["## Small profile on CPU (synth protocol, f = %d)" % s["embedding_dim"], "",
                  "| measure | value |", "| --- | --- |",
                  f"| G step | {s['g_images_per_second']:.0f} images/s "
                  f"({1000 * s['g_seconds_per_batch']:.0f} ms per batch of {s['batch_size']}) |",
                  f"| D step (G forward + D on the balanced real + synthetic batch) | "
                  f"{s['d_images_per_second']:.0f} pairs/s ({1000 * s['d_seconds_per_batch']:.0f} ms per batch) |",
                  f"| autoencoder step | {s['ae_images_per_second']:.0f} images/s |",
                  f"| seconds per epoch ({s['training_segments']} segments, G + D/5) | {s['seconds_per_epoch']:.2f} |",
                  f"| autoencoder ({load_protocol('synth').autoencoder.epochs} epochs) | "
                  f"{s['autoencoder_seconds']:.1f} s |",
                  f"| one translator ({s['epochs']} epochs + autoencoder) | {s['seconds_per_translator']:.0f} s |",
                  f"| the demo's translators (all embedding sizes) | {s['seconds_demo_translators']:.0f} s |",
                  f"| G forward+backward FLOPs per image | {s['g_forward_backward_flops_per_image'] / 1e6:.1f} MFLOP |",
                  ""]
    p = results["paper_flops"]
    lines += ["## Paper profile (f = 512): counted FLOPs", "",
              f"- G forward + backward: {p['g_forward_backward_flops_per_image'] / 1e9:.2f} GFLOP per image",
              f"- G step (G and frozen D, forward + backward): {p['g_step_flops_per_image'] / 1e9:.2f} GFLOP per image",
              f"- D step (G forward, D on real and synthetic): {p['d_step_flops_per_image'] / 1e9:.2f} GFLOP per pair",
              ""]
    c = results.get("paper_cuda")
    if c:
        mfu = f"{100 * c['g_step_mfu']:.1f}%" if c.get("g_step_mfu") else "n/a"
        lines += [f"## Paper profile on {c['device']} (bf16, channels_last, compile={c['compile']})", "",
                  f"- G step: {c['g_images_per_second']:.0f} images/s; D step: {c['d_images_per_second']:.0f} images/s",
                  f"- seconds per epoch on {c['training_segments']} segments: {c['seconds_per_epoch']:.1f}",
                  f"- projected hours for 4000 epochs: {c['projected_hours_4000_epochs']:.2f}",
                  f"- G-step model FLOP utilisation: {mfu} of {c['peak_bf16_tflops']} TFLOP/s", ""]
    else:
        lines += ["No CUDA device: the paper profile's timing was not measured.", ""]
    lines += ["Measured on a shared machine the times are upper bounds; re-run on a quiet one. With other",
              "processes on the cores, two torch threads can be many times slower than one (OpenMP",
              "threads spin-waiting on each other): compare --threads 1 and --threads 2.", ""]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return json_path, md_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="cpu: the small profile only; cuda: the paper profile only; auto: both where possible")
    ap.add_argument("--batches", type=int, default=6, help="batches per timed epoch")
    ap.add_argument("--repeats", type=int, default=2, help="timed epochs per measure (the fastest is kept)")
    ap.add_argument("--segments", type=int, default=1000, help="training segments for the CPU per-epoch figure")
    ap.add_argument("--compile", action="store_true", help="torch.compile G and D (CUDA)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device bf16 dense peak for the MFU")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        sys.exit("--device cuda: no CUDA device")
    results = {"benchmark": "bench_train", "created": dt.datetime.now(dt.timezone.utc).isoformat(),
               "machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}}
    if args.device in ("auto", "cpu"):
        results["small_cpu"] = small_profile(args)
    results["paper_flops"] = paper_flops()
    if args.device in ("auto", "cuda") and cuda:
        results["paper_cuda"] = paper_profile_cuda(args, results["paper_flops"])
    json_path, md_path = write(results, args.out)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
