"""One prepared GPU check (issue 18): run it whenever a CUDA device is at hand.

    python3 -m benchmarks.gpu_check                 # on the GPU machine, under 8 minutes
    .venv/bin/python -m benchmarks.gpu_check --cpu-plumbing --out /tmp/gpu-check   # the plumbing, here

In order, each step in its own process with its own time limit (a step that fails or runs out
of time is recorded as such and the next one still runs):

1. the CUDA checks: the tests marked `cuda` when pytest is installed, and in any case the same
   checks inline (training 2 epochs on CUDA with bf16 autocast and channels_last; one
   checkpoint scored on CUDA and on the CPU, the per-image decisions compared; the classifier
   bundle's predictions on both devices);
2. `bench_train --device cuda` at f = 512, without and with `torch.compile` (images/s of the G
   and D steps, seconds per epoch on 48,945 segments, projected hours for 4000 epochs, model
   FLOP utilisation from counted FLOPs);
3. `bench_score --device cuda` on the full test split's size (6,825 sounds = 5 x 1365, five
   classifiers);
4. a 1-process DDP smoke run (torchrun, NCCL) of `train-baseline` for 2 epochs;

and writes one result file, results/benchmarks/gpu_check-<date>-<gpu>.json and .md. The aims
on one H200: 4000 epochs in under 6 hours, the test split scored in under 5 s.

The GPU machine has no PyAV and no internet: nothing here decodes a video; the stores are made
from random tensors of the paper's shapes. Install there with
`pip install --no-deps --no-build-isolation -e .` and run with its own python3.
`--cpu-plumbing` runs every step on the CPU with tiny sizes (gloo for the DDP step), to check
the script itself where no GPU is lent; its numbers mean nothing and it writes where --out says.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The tests' fakes (tests/fakes.py: make_fake_store, no PyAV) and the other benchmarks import from the
# repository root, as every benchmark runs (python -m benchmarks.<name>); also when run as a file.
sys.path.insert(0, str(ROOT))
os.environ.setdefault("S2I_BENCH_QUIET", "1")

# Seconds per step: the sum stays under 8 minutes.
LIMITS_S = {"cuda_checks": 45, "cuda_tests": 60, "bench_train": 75, "bench_train_compile": 150, "bench_score": 75,
            "ddp_smoke": 60}
PLUMBING_SLACK = 3  # the CPU is slower at all of it: --cpu-plumbing allows this many times the limits
SCORE_AIM_S, TRAIN_AIM_H = 5.0, 6.0
TEST_PER_CLASS = 1365  # the paper's test split: 6,825 sounds over 5 classes


# -- step 1: the CUDA checks inline (the same as the tests marked cuda) -------------------------------
def cuda_checks(device: str, work: Path) -> dict:
    """Training, scoring and the classifiers on `device`, compared with the CPU where they must agree."""
    import numpy as np
    import torch

    from s2i_bench.data.store import open_store
    from s2i_bench.protocol import load_protocol
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.translators import load_translator
    from s2i_bench.training import train_baseline

    from benchmarks.bench_score import make_bundle
    from tests.fakes import make_fake_store

    out: dict = {}
    protocol = load_protocol("tiny")
    store_path = make_fake_store(work / "store")
    t0 = time.perf_counter()
    run = work / "run"
    train_baseline(store=store_path, run_dir=run, device=device, epochs=2, protocol=protocol)
    log = (run / "log.csv").read_text().splitlines()
    losses = [float(dict(zip(log[0].split(","), line.split(",")))["pixel_loss"]) for line in log[1:]]
    out["train_2_epochs"] = {"seconds": round(time.perf_counter() - t0, 2), "epochs": len(losses),
                             "pixel_loss": losses, "ok": len(losses) == 2 and all(np.isfinite(losses))}

    # one checkpoint scored on the device and on the CPU: the decisions may differ only where a
    # classifier's score sits at its threshold (bf16 / TF32 rounding), so a few, not many
    ckpt = sorted((run / "checkpoints").glob("generator-*.pt"))[-1]
    store = open_store(store_path)
    decisions = {}
    for dev in ("cpu", device):
        bundle = make_bundle(work / f"bundle-{dev}.pt", protocol, dev)
        translator = load_translator(ckpt, device=dev)
        rec = score_translator(translator, store, bundle, protocol=protocol, split="test", seed=0, samples=1,
                               batch_size=protocol.scoring.batch_size, device=dev)
        decisions[dev] = rec.decisions()["informative"]
    agree = float((decisions["cpu"] == decisions[device]).mean())
    out["score_device_vs_cpu"] = {"images": int(decisions["cpu"].size), "decisions_agree": round(agree, 4),
                                  "ok": agree >= 0.95}

    # the classifiers alone on identical images
    images = torch.rand(64, 3, protocol.image.size, protocol.image.size)
    cpu_b, dev_b = make_bundle(work / "b-cpu.pt", protocol, "cpu"), make_bundle(work / "b-dev.pt", protocol, device)
    agree_c = float(np.mean([np.mean(np.asarray(cpu_b.predict_informative(images, k)) ==
                                     np.asarray(dev_b.predict_informative(images.to(device), k)))
                             for k in protocol.class_keys]))
    out["classifiers_device_vs_cpu"] = {"images": 64, "decisions_agree": round(agree_c, 4), "ok": agree_c >= 0.95}
    if device.startswith("cuda"):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = torch.nn.functional.conv2d(
                torch.randn(8, 64, 32, 32, device=device).to(memory_format=torch.channels_last),
                torch.randn(64, 64, 3, 3, device=device))
        out["bf16_channels_last_conv"] = {"dtype": str(y.dtype), "finite": bool(torch.isfinite(y).all()),
                                          "ok": y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())}
    out["ok"] = all(v["ok"] for v in out.values() if isinstance(v, dict))
    return out


# -- steps as child processes ------------------------------------------------------------------------
def _run(cmd: list[str], limit_s: float, env=None) -> dict:
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s, env=env, cwd=ROOT)
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        stdout = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    return {"cmd": " ".join(map(str, cmd)), "rc": rc, "seconds": round(time.perf_counter() - t0, 1),
            "ok": rc == 0, "stdout_tail": stdout[-1500:], "stderr_tail": stderr[-1500:]}


def _newest_json(folder: Path, prefix: str) -> dict | None:
    found = sorted(folder.glob(f"{prefix}*.json"))
    return json.loads(found[-1].read_text()) if found else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-plumbing", action="store_true", help="every step on the CPU, tiny sizes (checks the script)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    ap.add_argument("--child-cuda-checks", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    plumbing = args.cpu_plumbing
    device = "cpu" if plumbing else "cuda"
    if args.child_cuda_checks:
        result = cuda_checks(device, args.child_cuda_checks)
        print("CUDA_CHECKS " + json.dumps(result))
        return 0 if result["ok"] else 1

    import torch

    if not plumbing and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --cpu-plumbing to check the script on the CPU", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.timezone.utc)
    gpu = torch.cuda.get_device_name(0) if not plumbing else "cpu-plumbing"
    py = sys.executable
    env = dict(os.environ, S2I_BENCH_QUIET="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "4"))
    steps: dict = {}
    limits = {k: v * (PLUMBING_SLACK if plumbing else 1) for k, v in LIMITS_S.items()}
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    try:
        # 1. the CUDA checks
        (work / "checks").mkdir()
        r = _run([py, "-m", "benchmarks.gpu_check", "--child-cuda-checks", str(work / "checks")]
                 + (["--cpu-plumbing"] if plumbing else []), limits["cuda_checks"], env)
        line = next((x for x in r["stdout_tail"].splitlines() if x.startswith("CUDA_CHECKS ")), None)
        r["checks"] = json.loads(line[len("CUDA_CHECKS "):]) if line else None
        steps["cuda_checks"] = r
        try:
            import pytest  # noqa: F401
            marker = "cuda" if not plumbing else "cuda or not cuda"
            tests = ["tests/translators/test_train_baseline.py", "tests/informativity/test_classifiers.py",
                     "tests/scoring/test_scoring.py"]
            if plumbing:
                tests = ["tests/translators/test_train_baseline.py::test_refusals"]
            steps["cuda_tests"] = _run([py, "-m", "pytest", "-q", "-m", marker, "-p", "no:cacheprovider", *tests],
                                       limits["cuda_tests"], env)
        except ImportError:
            steps["cuda_tests"] = {"ok": None, "skipped": "pytest is not installed here: the inline checks stand in"}

        # 2. training speed at f = 512, without and with torch.compile
        for name, extra in (("bench_train", []), ("bench_train_compile", ["--compile"])):
            folder = work / name
            cmd = [py, "-m", "benchmarks.bench_train", "--out", str(folder)]
            cmd += ["--device", "cpu", "--batches", "1", "--repeats", "1", "--segments", "64"] if plumbing else \
                   ["--device", "cuda", *extra]
            r = _run(cmd, limits[name], env)
            r["result"] = _newest_json(folder, "bench_train")
            steps[name] = r
            if plumbing:
                break  # torch.compile on the CPU is not what this checks

        # 3. scoring throughput on the test split's size
        folder = work / "bench_score"
        cmd = [py, "-m", "benchmarks.bench_score", "--out", str(folder), "--repeats", "2"]
        cmd += ["--device", "cpu", "--skip-paper", "--synth-per-class", "4"] if plumbing else \
               ["--device", "cuda", "--paper-per-class", str(TEST_PER_CLASS), "--synth-per-class", "30"]
        r = _run(cmd, limits["bench_score"], env)
        r["result"] = _newest_json(folder, "bench_score")
        steps["bench_score"] = r

        # 4. a 1-process DDP smoke run
        from tests.fakes import make_fake_store

        store = make_fake_store(work / "ddp-store")
        cli = shutil.which("s2i-bench", path=str(Path(py).parent)) or "s2i-bench"
        r = _run([py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", cli, "train-baseline",
                  "--data", str(store), "--out", str(work / "ddp-run"), "--protocol", "tiny", "--epochs", "2",
                  "--device", device], limits["ddp_smoke"], env)
        options = work / "ddp-run" / "options.json"
        r["world_size"] = json.loads(options.read_text()).get("world_size") if options.is_file() else None
        r["checkpoints"] = len(list((work / "ddp-run" / "checkpoints").glob("generator-*.pt"))) \
            if (work / "ddp-run" / "checkpoints").is_dir() else 0
        r["ok"] = r["ok"] and r["checkpoints"] >= 1
        steps["ddp_smoke"] = r
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {"benchmark": "gpu_check", "date": started.isoformat(timespec="seconds"), "gpu": gpu,
              "cpu_plumbing": plumbing, "torch": torch.__version__, "cuda": torch.version.cuda,
              "limits_s": limits, "steps": steps, "summary": summary(steps)}
    write(result, args.out, started)
    return 0 if all(s.get("ok") in (True, None) for s in steps.values()) else 1


def summary(steps: dict) -> dict:
    """The headline numbers against the aims (None where a step gave none)."""
    out: dict = {"score_aim_s": SCORE_AIM_S, "train_aim_hours": TRAIN_AIM_H}
    for name in ("bench_train", "bench_train_compile"):
        res = (steps.get(name) or {}).get("result") or {}
        paper = res.get("paper_cuda") or {}
        out[name] = ({k: paper.get(k) for k in ("g_images_per_second", "d_images_per_second", "seconds_per_epoch",
                                                 "projected_hours_4000_epochs", "g_step_mfu", "d_step_mfu")}
                     if paper else None)
    res = (steps.get("bench_score") or {}).get("result") or {}
    paper = next((r for r in res.get("results", []) if r.get("protocol") == "vegas5"), None)
    if paper:
        out["score_test_split_s"] = round(6825 / paper["sounds_per_second"], 2)
        out["score_meets_aim"] = out["score_test_split_s"] < SCORE_AIM_S
    hours = [v.get("projected_hours_4000_epochs") for v in (out["bench_train"], out["bench_train_compile"])
             if v and v.get("projected_hours_4000_epochs") is not None]
    if hours:
        out["train_best_hours"] = min(hours)
        out["train_meets_aim"] = min(hours) < TRAIN_AIM_H
    return out


def write(result: dict, folder: Path, started: dt.datetime) -> None:
    from s2i_bench.fileio import atomic_write_json, atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", result["gpu"]).strip("-")
    stem = folder / f"gpu_check-{started:%Y%m%d-%H%M%S}-{gpu}"
    atomic_write_json(stem.with_suffix(".json"), result)
    s = result["summary"]
    md = [f"# GPU check, {result['date']}, {result['gpu']}", "",
          f"torch {result['torch']}, CUDA {result['cuda']}" + (" (CPU plumbing run: numbers mean nothing)"
                                                                if result["cpu_plumbing"] else ""), "",
          "| step | ok | seconds | limit s |", "| --- | --- | --- | --- |"]
    for name, st in result["steps"].items():
        md.append(f"| {name} | {st.get('ok')} | {st.get('seconds', '-')} | {result['limits_s'].get(name, '-')} |")
    md += ["", f"Scoring the test split (6,825 sounds x 5 classifiers): {s.get('score_test_split_s')} s "
               f"(aim under {SCORE_AIM_S:g} s).",
           f"Training 4000 epochs at f = 512, best of without/with torch.compile: {s.get('train_best_hours')} h "
           f"(aim under {TRAIN_AIM_H:g} h).", ""]
    for name in ("bench_train", "bench_train_compile"):
        if s.get(name):
            md.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in s[name].items()))
    checks = (result["steps"].get("cuda_checks") or {}).get("checks")
    if checks:
        md += ["", "CUDA checks: " + ", ".join(f"{k} {'ok' if v.get('ok') else 'FAILED'}" for k, v in checks.items()
                                               if isinstance(v, dict))]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
