"""`s2i-bench train-baseline`: the reference translator trained by Algorithm 1 (SPEC section 4).

    1. the audio autoencoder (MSE, SGD lr 0.05 momentum 0.9), or one given with --autoencoder;
    2. the frozen encoder's embeddings x of every training segment, computed once (eval mode);
    3. per epoch t (from 0): when t % d_every_epochs == 0, one discriminator epoch first
       (every batch: MSE(D(Y, x), r_max) + MSE(D(G(x), x), r_min), G frozen); then one generator
       epoch: L_G = MSE(Y, G(x)) + lambda * L_G^ma, Eq. 5 with the last k-1 epochs' mean
       adversarial losses as constants (only the current batch's term carries a gradient).

The run folder (docs/architecture.md): options.json (first), log.csv, autoencoder.pt,
checkpoints/generator-EEEEEE.pt, grids/grid-EEEEEE.png, metric-informativity.jsonl (with
--classifiers), resume.pt (after every epoch: a Ctrl-C or a crash loses at most the epoch in
progress, and --resume replays it bit for bit on CPU).

Multi-GPU: launch with `torchrun --nproc_per_node N -m s2i_bench.cli train-baseline ...`; every
rank takes its share of each global batch of 64 and DistributedDataParallel averages gradients.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from s2i_bench.errors import UserError
from s2i_bench.fileio import append_jsonl, atomic_torch_save, atomic_write_json, atomic_write_text, progress, read_jsonl
from s2i_bench.provenance import code_version, library_versions, now_iso
from s2i_bench.seeding import item_seed, item_seeds
from s2i_translator.checkpoint import (load_state_into, load_weights_only, make_autoencoder_checkpoint,
                                       make_checkpoint, model_spec_from_dict, read_autoencoder, save_checkpoint,
                                       unwrap)
from s2i_translator.models import AudioAutoencoder, DenseGenerator, Discriminator

LOG_COLUMNS = ["epoch", "d_updated", "pixel_loss", "adv_loss", "adv_loss_ma", "d_loss", "d_real_score",
               "d_fake_score", "g_batches", "d_batches", "seconds"]
RESUME_FORMAT = "s2i-train-resume"
GRID_MIN_CELL = 64  # pixels of one image in the grids


# -- small helpers ------------------------------------------------------------------------------
class Dist:
    """Who we are under torchrun (world_size 1 without it)."""

    def __init__(self, device: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled:
            import torch.distributed as dist

            import datetime

            if device == "cuda":
                torch.cuda.set_device(self.local_rank)
            # A long timeout: the other ranks wait at a barrier while rank 0 trains the autoencoder.
            dist.init_process_group(backend="nccl" if device == "cuda" else "gloo",
                                    timeout=datetime.timedelta(hours=24))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def epoch_permutation(n: int, seed: int, tag: str, epoch: int) -> torch.Tensor:
    """The batch order of one epoch, from (seed, tag, epoch) alone: no generator state to resume."""
    g = torch.Generator().manual_seed(item_seed(seed, tag, epoch))
    return torch.randperm(n, generator=g)


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: nn.Module):
    """Run `model` in train mode (batch statistics, dropout) without changing its BN buffers:
    during the discriminator's epoch G is frozen, but D should see the images G's own training
    step produces (train-mode BN), not the eval-mode ones of an early, unsettled G."""
    saved = [(b, b.detach().clone()) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _autocast(device: str):
    # bf16 on CUDA (no loss scaling needed); full precision on CPU, where the tests check
    # bit-exact resume and bf16 convolutions are slow.
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_store_against_protocol(store, protocol) -> None:
    """Refuse a store whose features or classes differ from the protocol's, naming the first
    difference (training on other features would make the run's protocol a lie)."""
    meta = store.meta
    recorded = meta.get("features") or {}
    full = meta.get("protocol_full") or {}
    proto = protocol.to_dict()
    for section in ("audio", "image"):
        theirs = recorded.get(section) or full.get(section) or {}
        for key, ours in proto[section].items():
            if key == "store_dtype":  # how values are stored, not what they are
                continue
            if key in theirs and theirs[key] != ours and not (
                    isinstance(ours, (int, float)) and isinstance(theirs[key], (int, float))
                    and math.isclose(float(theirs[key]), float(ours))):
                raise UserError(f"{store.path}: made with {section}.{key} = {theirs[key]!r}, but protocol "
                                f"{protocol.name!r} has {ours!r}; prepare the store with this protocol or pass "
                                f"--protocol {meta.get('protocol', {}).get('name', '<the store protocol>')}")
    store_classes = sorted(set(store.manifest["class"]))
    if store_classes != sorted(protocol.class_keys):
        raise UserError(f"{store.path}: classes {store_classes} differ from protocol {protocol.name!r} "
                        f"classes {sorted(protocol.class_keys)}")
    side = store.frames.shape[1]
    if side != protocol.image.size:
        raise UserError(f"{store.path}: frames are {side}x{side}, protocol {protocol.name!r} has image.size "
                        f"{protocol.image.size}")
    if tuple(store.spectrograms.shape[1:]) != (1, protocol.audio.n_mels, protocol.audio.frames_per_segment):
        raise UserError(f"{store.path}: spectrograms of shape {store.spectrograms.shape[1:]} do not fit protocol "
                        f"{protocol.name!r}")


def _normalised_spectrograms(store, indices: np.ndarray, chunk: int = 2048) -> torch.Tensor:
    """(N, 1, 128, 100) float32 network input for `indices`, read chunk by chunk from the store."""
    out = torch.empty((len(indices), *store.spectrograms.shape[1:]), dtype=torch.float32)
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        out[start:start + len(part)] = torch.from_numpy(store.normalise(np.asarray(store.spectrograms[part])))
    return out


def _target_images(store, indices: np.ndarray, size: int, chunk: int = 2048) -> torch.Tensor:
    """(N, 3, S, S) uint8 frames at the generator's image size (antialiased resize when S < 96)."""
    from s2i_bench.images import resize_net, uint8_to_net

    out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        net = resize_net(uint8_to_net(np.asarray(store.frames[part])), size)  # (n, 3, S, S) in [-1, 1]
        out[start:start + len(part)] = ((net.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return out


def _to_net(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div_(127.5).sub_(1.0)


# -- run folder -----------------------------------------------------------------------------------
def _read_options(run_dir: Path) -> dict[str, Any]:
    import json

    path = run_dir / "options.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None


def _truncate_log(path: Path, last_epoch: int) -> None:
    """Keep the log rows of epochs <= last_epoch (a crash may have left a row that resume.pt
    does not cover)."""
    if not path.is_file():
        return
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    kept = [r for r in rows if int(r["epoch"]) <= last_epoch]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(kept)
    atomic_write_text(path, buf.getvalue())


def _truncate_records(path: Path, last_epoch: int) -> None:
    if not path.is_file():
        return
    import json

    kept = [r for r in read_jsonl(path) if r.get("epoch") is None or int(r["epoch"]) <= last_epoch]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()})
        f.flush()
        os.fsync(f.fileno())


# -- the autoencoder -----------------------------------------------------------------------------
def train_autoencoder(spectrograms: torch.Tensor, embedding_dim: int, protocol, seed: int, device: str,
                      desc: str = "autoencoder") -> tuple[AudioAutoencoder, float]:
    """Train the audio autoencoder on (N, 1, 128, 100) normalised spectrograms (Eq. 1)."""
    spec = protocol.autoencoder
    torch.manual_seed(item_seed(seed, "autoencoder-init"))
    model = AudioAutoencoder(embedding_dim, protocol.model).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)
    data = spectrograms.to(device)
    n, batch = len(data), min(spec.batch_size, len(data))
    num_batches = n // batch  # the incomplete last batch is dropped (a new order every epoch)
    loss_mean = float("nan")
    model.train()
    for epoch in progress(range(spec.epochs), desc=desc, unit="epoch"):
        perm = epoch_permutation(n, seed, "autoencoder", epoch).to(device)
        total = torch.zeros((), device=device)
        for b in range(num_batches):
            s = data[perm[b * batch:(b + 1) * batch]]  # (B, 1, 128, 100)
            with _autocast(device):
                loss = F.mse_loss(model(s).float(), s)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.detach()
        loss_mean = (total / max(num_batches, 1)).item()  # one host sync per epoch
        if not math.isfinite(loss_mean):
            raise UserError(f"autoencoder training: non-finite loss at epoch {epoch}; nothing was saved")
    return model.eval(), loss_mean


@torch.no_grad()
def encode_all(encoder: nn.Module, spectrograms: torch.Tensor, device: str, chunk: int = 512) -> torch.Tensor:
    """(N, f) embeddings of the frozen encoder, eval mode (BN running statistics)."""
    encoder.eval()
    parts = [encoder(spectrograms[i:i + chunk].to(device)).float() for i in range(0, len(spectrograms), chunk)]
    return torch.cat(parts)


# -- Algorithm 1: one D epoch and one G epoch ----------------------------------------------------
def discriminator_epoch(G, D, opt_d, emb, targets, perm, *, batch, rank, world, r_max, r_min, device,
                        desc="D"):
    """One epoch of discriminator updates, G frozen; returns device tensors (loss, real, fake).

    Every step shows D one balanced batch: the b real images and their b translations together
    (the paper's "balanced batches of real and synthetic images", section 4.1). With BatchNorm
    before D's TanH this matters: an all-real and an all-synthetic batch would each be normalised
    to the same mean score, and D could not learn to tell them apart.
    `G` is the bare generator (or its compiled form), never the DDP wrapper: it is not trained here.
    """
    G.train()
    D.train()
    per_rank = batch // world
    num_batches = len(perm) // batch
    sums = torch.zeros(3, device=device)
    with frozen_batchnorm_statistics(unwrap(G)):
        for b in progress(range(num_batches), desc=desc, unit="batch"):
            idx = perm[b * batch + rank * per_rank: b * batch + (rank + 1) * per_rank]
            x, y = emb[idx], _to_net(targets[idx])  # (B, f), (B, 3, S, S)
            if device.startswith("cuda"):
                y = y.contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                with torch.no_grad():
                    fake = G(x)  # (B, 3, S, S), no graph: G is frozen
                scores = D(torch.cat((y, fake.to(y.dtype))), torch.cat((x, x)))  # (2B, 1, 1, 1)
            real_score, fake_score = scores[:len(x)], scores[len(x):]  # (B, 1, 1, 1) each
            loss = F.mse_loss(real_score.float(), torch.full_like(real_score, r_max, dtype=torch.float32)) + \
                F.mse_loss(fake_score.float(), torch.full_like(fake_score, r_min, dtype=torch.float32))
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
            sums += torch.stack([loss.detach(), real_score.detach().float().mean(), fake_score.detach().float().mean()])
    return sums / max(num_batches, 1), num_batches


def generator_epoch(G, D, opt_g, emb, targets, perm, *, batch, rank, world, r_max, adv_lambda, past_adv,
                    device, desc="G"):
    """One epoch of generator updates, D frozen (eval mode, no gradient to its weights).

    Eq. 5: L_G^ma = (L_G(r_max, r) + sum of the past epochs' mean adversarial losses) / (1 + n_past),
    n_past = min(k - 1, epochs so far); the past terms are constants, so the gradient of the
    adversarial term is lambda / (1 + n_past) times that of the current batch's loss.
    Returns device tensors (pixel, adv, adv_ma) averaged over the epoch.
    """
    G.train()
    D.eval()
    D.requires_grad_(False)
    past_sum, denominator = float(sum(past_adv)), 1.0 + len(past_adv)
    per_rank = batch // world
    num_batches = len(perm) // batch
    sums = torch.zeros(3, device=device)
    try:
        for b in progress(range(num_batches), desc=desc, unit="batch"):
            idx = perm[b * batch + rank * per_rank: b * batch + (rank + 1) * per_rank]
            x, y = emb[idx], _to_net(targets[idx])  # (B, f), (B, 3, S, S)
            if device.startswith("cuda"):
                y = y.contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                fake = G(x)  # (B, 3, S, S)
                score = D(fake, x)  # (B, 1, 1, 1)
            pixel = F.mse_loss(fake.float(), y)  # Eq. 3
            adv = F.mse_loss(score.float(), torch.full_like(score, r_max, dtype=torch.float32))  # Eq. 4
            adv_ma = (adv + past_sum) / denominator  # Eq. 5
            loss = pixel + adv_lambda * adv_ma  # Eq. 6
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            sums += torch.stack([pixel.detach(), adv.detach(), adv_ma.detach()])
    finally:
        D.requires_grad_(True)
    return sums / max(num_batches, 1), num_batches


# -- grids ------------------------------------------------------------------------------------------
def grid_indices(store, class_keys, per_class: int) -> np.ndarray:
    """Fixed sounds for the grids: per class, the first validation segment of each of the first
    `per_class` videos in store order (more segments of the same videos when there are fewer
    videos; training segments when a class has no validation segment)."""
    chosen = []
    manifest = store.manifest
    classes, splits, videos = (manifest[c].to_numpy() for c in ("class", "split", "video_id"))
    for key in class_keys:
        for split in ("val", "train"):
            rows = np.flatnonzero((classes == key) & (splits == split))
            if len(rows):
                break
        seen, first, rest = set(), [], []
        for r in rows.tolist():
            (rest if videos[r] in seen else first).append(r)
            seen.add(videos[r])
        chosen.extend((first + rest)[:per_class])
    return np.array(chosen, dtype=np.int64)


@torch.no_grad()
def save_grid(path: Path, encoder, G, grid_spec: torch.Tensor, grid_real: torch.Tensor, grid_seeds: torch.Tensor,
              per_class: int, device: str) -> None:
    """One row per class: the real frames, then their translations (test-time dropout seeded per
    sound, so grids of different epochs differ only by the weights)."""
    from torchvision.utils import save_image

    G_raw = unwrap(G)
    was = G_raw.training
    G_raw.eval()
    try:
        fake = G_raw(encoder(grid_spec.to(device)), dropout_seeds=grid_seeds).float().cpu()  # (N, 3, S, S)
    finally:
        G_raw.train(was)
    real = _to_net(grid_real)
    rows = []
    for start in range(0, len(fake), per_class):
        rows.extend([real[start:start + per_class], fake[start:start + per_class]])
    tiles = torch.cat(rows)  # per class: per_class real, then per_class generated
    if tiles.shape[-1] < GRID_MIN_CELL:  # small-profile images: enlarge (nearest) so they can be seen
        tiles = F.interpolate(tiles, size=(GRID_MIN_CELL, GRID_MIN_CELL), mode="nearest")
    buf = io.BytesIO()
    save_image((tiles + 1) / 2, buf, nrow=2 * per_class, padding=2, format="png")
    from s2i_bench.fileio import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())


# -- the command --------------------------------------------------------------------------------
def train_baseline(store, run_dir, protocol=None, embedding_dim=None, epochs=None, device="cpu", resume=False,
                   autoencoder=None, classifiers=None, save_every=None, seed=None, use_compile=False,
                   grid_every=None) -> Path:
    """Train the reference translator on `store` into `run_dir` (see the module docstring)."""
    from s2i_bench.protocol import load_protocol, protocol_from_dict
    from s2i_bench.data.store import open_store

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    run_dir = Path(run_dir)
    store_obj = open_store(store)
    options_path = run_dir / "options.json"

    # -- resolve the settings: a resumed run keeps its own unless the user repeats them --------
    previous = None
    if resume:
        if not options_path.is_file():
            raise UserError(f"{run_dir}: nothing to resume (no options.json); start it without --resume")
        previous = _read_options(run_dir)
        recorded = protocol_from_dict(previous["protocol_full"])
        proto = load_protocol(protocol) if protocol else recorded
        if proto.fingerprint != recorded.fingerprint:
            raise UserError(f"{run_dir}: was started with protocol {recorded.name!r} "
                            f"({recorded.fingerprint}); --protocol gives {proto.name!r} ({proto.fingerprint})")
        if store_obj.store_hash != previous["store"]["hash"]:
            raise UserError(f"{run_dir}: was started on store {previous['store']['hash']}, "
                            f"{store_obj.path} is {store_obj.store_hash}")
        for name, given in (("embedding_dim", embedding_dim), ("seed", seed)):
            if given is not None and given != previous[name]:
                raise UserError(f"{run_dir}: was started with {name} {previous[name]}, not {given}")
        embedding_dim, seed = previous["embedding_dim"], previous["seed"]
        epochs = epochs or previous["epochs"]
        save_every = save_every or previous["save_every"]
        grid_every = grid_every or previous["grid_every"]
    else:
        if options_path.is_file():
            raise UserError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
        proto = load_protocol(protocol) if protocol else store_obj.protocol
    _check_store_against_protocol(store_obj, proto)
    tr = proto.training
    f = int(embedding_dim or tr.embedding_dim)
    if f <= 0 or f % 4:
        raise UserError(f"--embedding-dim {f}: must be a positive multiple of 4 (D views x as (f/4, 2, 2))")
    epochs = int(epochs or tr.epochs)
    seed = int(tr.seed if seed is None else seed)
    save_every = int(save_every or tr.save_every)
    grid_every = int(grid_every or tr.grid_every)

    dist = Dist(device)
    try:
        return _train(store_obj, run_dir, proto, f, epochs, device, dist, previous, autoencoder, classifiers,
                      save_every, grid_every, seed, use_compile)
    finally:
        dist.close()


def _train(store, run_dir, proto, f, epochs, device, dist, previous, autoencoder_path, classifiers, save_every,
           grid_every, seed, use_compile) -> Path:
    tr = proto.training
    if dist.enabled and device == "cuda":
        device = f"cuda:{dist.local_rank}"
    if tr.batch_size % dist.world_size:
        raise UserError(f"batch size {tr.batch_size} does not split over {dist.world_size} processes")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    run_name = run_dir.name
    train_idx = store.split_indices("train")
    if len(train_idx) < tr.batch_size:
        raise UserError(f"{store.path}: {len(train_idx)} training segments, fewer than one batch of {tr.batch_size}")

    # -- options.json before any work ----------------------------------------------------------
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "grids").mkdir(exist_ok=True)
        if previous is None:
            options = {
                "kind": "s2i-train-baseline",
                "protocol": proto.ref(), "protocol_full": proto.to_dict(), "profile": proto.model.profile,
                "embedding_dim": f, "seed": seed, "epochs": epochs, "save_every": save_every,
                "grid_every": grid_every, "batch_size": tr.batch_size, "device": device,
                "world_size": dist.world_size, "compile": bool(use_compile),
                "store": store.ref(), "autoencoder": str(autoencoder_path) if autoencoder_path else None,
                "classifiers": str(classifiers) if classifiers else None,
                "code_version": code_version(), "libraries": library_versions(),
                "command_line": sys.argv, "created": now_iso(), "resumed": [],
            }
        else:
            options = dict(previous)
            options["epochs"] = epochs
            options["resumed"] = list(previous.get("resumed", [])) + [
                {"at": now_iso(), "command_line": sys.argv, "code_version": code_version(), "epochs": epochs}]
        atomic_write_json(run_dir / "options.json", options)

    # -- 1. the autoencoder --------------------------------------------------------------------
    ae_file = run_dir / "autoencoder.pt"
    if dist.main and not ae_file.is_file():
        if autoencoder_path is not None:
            model, ckpt = read_autoencoder(autoencoder_path)
            if model.embedding_dim != f:
                raise UserError(f"{autoencoder_path}: an autoencoder for f = {model.embedding_dim}, the run has f = {f}")
            if model_spec_from_dict(ckpt["model"], str(autoencoder_path)) != proto.model:
                raise UserError(f"{autoencoder_path}: its model sizes differ from protocol {proto.name!r}")
            if ckpt.get("store", {}).get("hash") not in (None, store.store_hash):
                print(f"warning: {autoencoder_path} was trained on store {ckpt['store'].get('hash')}, "
                      f"not {store.store_hash}", file=sys.stderr)
            atomic_torch_save(ae_file, ckpt)  # the run folder holds everything it used
        else:
            spectrograms = _normalised_spectrograms(store, train_idx)
            model, loss = train_autoencoder(spectrograms, f, proto, seed, device, desc=f"{run_name}: autoencoder")
            atomic_torch_save(ae_file, make_autoencoder_checkpoint(
                autoencoder=model, embedding_dim=f, spec=proto.model, protocol_ref=proto.ref(),
                store_ref=store.ref(), normalisation=store.meta["normalisation"],
                epochs=proto.autoencoder.epochs, loss=loss, seed=seed))
    dist.barrier()
    autoencoder_model, _ = read_autoencoder(ae_file)
    encoder = autoencoder_model.encoder.to(device).eval()
    encoder.requires_grad_(False)

    # -- 2. cached embeddings and targets, on the device (the whole training split fits) -------
    emb = encode_all(encoder, _normalised_spectrograms(store, train_idx), device)  # (N, f)
    targets = _target_images(store, train_idx, proto.model.image_size).to(device)  # (N, 3, S, S) uint8
    grid_idx = grid_indices(store, proto.class_keys, tr.grid_per_class)
    grid_spec = _normalised_spectrograms(store, grid_idx)
    grid_real = _target_images(store, grid_idx, proto.model.image_size)
    grid_seeds = torch.from_numpy(item_seeds(seed, store.segment_ids[grid_idx], draw=0))

    # -- 3. G and D, fresh or resumed ----------------------------------------------------------
    torch.manual_seed(item_seed(seed, "gan-init"))
    G = DenseGenerator(f, proto.model).to(device)
    D = Discriminator(f, proto.model).to(device)
    if device.startswith("cuda"):
        G = G.to(memory_format=torch.channels_last)
        D = D.to(memory_format=torch.channels_last)
    opt_g = torch.optim.SGD(G.parameters(), lr=tr.lr_g, momentum=tr.momentum_g)
    opt_d = torch.optim.SGD(D.parameters(), lr=tr.lr_d, momentum=tr.momentum_d)
    adv_history: list[float] = []
    start_epoch = 0
    resume_file = run_dir / "resume.pt"
    if previous is not None and resume_file.is_file():
        state = load_weights_only(resume_file, "resume state")
        if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
            raise UserError(f"{resume_file}: not a resume state of s2i-bench")
        load_state_into(G, state["generator"], str(resume_file), "generator")
        load_state_into(D, state["discriminator"], str(resume_file), "discriminator")
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        adv_history = [float(v) for v in state["adv_history"]]
        start_epoch = int(state["epoch"]) + 1
        torch.set_rng_state(state["rng_cpu"])
        if device.startswith("cuda") and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])
        if state.get("world_size", 1) != dist.world_size and dist.main:
            print(f"warning: {resume_file} was written with {state.get('world_size')} processes, now "
                  f"{dist.world_size}: the run continues but is not bit-identical", file=sys.stderr)
    else:
        # the dropout masks of the run: from the seed, not from whatever ran before
        torch.manual_seed(item_seed(seed, "gan-dropout", dist.rank))
    if dist.main:
        _truncate_log(run_dir / "log.csv", start_epoch - 1)
        _truncate_records(run_dir / "metric-informativity.jsonl", start_epoch - 1)
    if start_epoch >= epochs:
        if dist.main:
            print(f"{run_dir}: already trained for {start_epoch} epochs (pass a larger --epochs to go on)")
        return run_dir

    D_train: nn.Module = D
    G_train: nn.Module = G
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dist.local_rank] if device.startswith("cuda") else None
        G_train = DDP(G_train, device_ids=ids)
        D_train = DDP(D_train, device_ids=ids)
    G_frozen, D_frozen = G, D  # G during D's epoch, D during G's epoch
    if use_compile:  # after DDP, so that compiled graphs break at its gradient buckets
        G_train, D_train = torch.compile(G_train), torch.compile(D_train)
        G_frozen, D_frozen = torch.compile(G), torch.compile(D)

    bundle = None
    if classifiers is not None and dist.main:
        from s2i_bench.informativity.classifiers import load_bundle

        bundle = load_bundle(classifiers, device=device)

    # -- 4. the epochs -------------------------------------------------------------------------
    n = len(train_idx)
    epoch = start_epoch
    try:
        epoch_bar = progress(range(start_epoch, epochs), desc=f"{run_name} (f={f})", unit="epoch")
        for epoch in epoch_bar:
            started = time.perf_counter()
            d_updated = epoch % tr.d_every_epochs == 0
            d_stats, d_batches = None, 0
            if d_updated:
                perm = epoch_permutation(n, seed, "d-epoch", epoch).to(device)
                d_stats, d_batches = discriminator_epoch(
                    G_frozen, D_train, opt_d, emb, targets, perm, batch=tr.batch_size, rank=dist.rank,
                    world=dist.world_size, r_max=tr.r_max, r_min=tr.r_min, device=device, desc=f"epoch {epoch} D")
            past = adv_history[-(tr.adv_ma_k - 1):] if tr.adv_ma_k > 1 else []
            perm = epoch_permutation(n, seed, "g-epoch", epoch).to(device)
            g_stats, g_batches = generator_epoch(
                G_train, D_frozen, opt_g, emb, targets, perm, batch=tr.batch_size, rank=dist.rank, world=dist.world_size,
                r_max=tr.r_max, adv_lambda=tr.adv_lambda, past_adv=past, device=device, desc=f"epoch {epoch} G")
            # One host sync per epoch: the losses were summed on the device.
            pixel, adv, adv_ma = g_stats.tolist()
            d_loss, d_real, d_fake = d_stats.tolist() if d_stats is not None else (float("nan"),) * 3
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if not all(math.isfinite(v) for v in (pixel, adv, adv_ma)) or (d_updated and not math.isfinite(d_loss)):
                kept = list_saved(run_dir)
                raise UserError(
                    f"{run_dir}: non-finite loss at epoch {epoch} (pixel {pixel}, adversarial {adv}, D {d_loss}); "
                    f"training stopped; last good checkpoint: {kept[-1] if kept else 'none'}; resume.pt holds "
                    f"epoch {epoch - 1}")
            adv_history.append(adv)
            last = epoch == epochs - 1
            if dist.main:
                if epoch % save_every == 0 or last:
                    save_checkpoint(run_dir / "checkpoints" / f"generator-{epoch:06d}.pt", make_checkpoint(
                        epoch=epoch, embedding_dim=f, spec=proto.model, protocol_ref=proto.ref(),
                        store_ref=store.ref(), normalisation=store.meta["normalisation"], encoder=encoder,
                        generator=G, run=run_name))
                if epoch % grid_every == 0 or last:
                    save_grid(run_dir / "grids" / f"grid-{epoch:06d}.png", encoder, G, grid_spec, grid_real,
                              grid_seeds, tr.grid_per_class, device)
                if bundle is not None:
                    _score_epoch(run_dir, run_name, store, bundle, proto, encoder, G, f, epoch, d_updated, device)
                _append_log(run_dir / "log.csv", {
                    "epoch": epoch, "d_updated": int(d_updated), "pixel_loss": pixel, "adv_loss": adv,
                    "adv_loss_ma": adv_ma, "d_loss": d_loss, "d_real_score": d_real, "d_fake_score": d_fake,
                    "g_batches": g_batches, "d_batches": d_batches,
                    "seconds": round(time.perf_counter() - started, 4)})
                # Last: what resume.pt holds is always covered by the log and the checkpoints.
                atomic_torch_save(resume_file, {
                    "format": RESUME_FORMAT, "epoch": epoch, "generator": _cpu(G), "discriminator": _cpu(D),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "adv_history": list(adv_history),
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state() if device.startswith("cuda") else None,
                    "world_size": dist.world_size, "seed": seed, "embedding_dim": f, "code_version": code_version()})
            if hasattr(epoch_bar, "set_postfix"):
                epoch_bar.set_postfix(pixel=f"{pixel:.4f}", adv=f"{adv:.3f}")
            dist.barrier()
    except KeyboardInterrupt:
        if dist.main:
            print(f"\ninterrupted during epoch {epoch}; {run_dir} is resumable from epoch {epoch} "
                  f"(repeat the command with --resume)", file=sys.stderr)
        raise
    if dist.enabled:
        _check_replicas_agree(G, D)
    if dist.main and os.environ.get("S2I_BENCH_QUIET") != "1":
        print(f"{run_dir}: trained epochs {start_epoch}..{epochs - 1}; pixel loss {pixel:.4f}")
    return run_dir


def list_saved(run_dir: Path) -> list[Path]:
    from s2i_bench.translators.base import list_checkpoints

    return list_checkpoints(run_dir)


def _cpu(module) -> dict[str, torch.Tensor]:
    from s2i_translator.checkpoint import cpu_state

    return cpu_state(module)


def _score_epoch(run_dir, run_name, store, bundle, proto, encoder, G, f, epoch, d_updated, device) -> None:
    """Informativity of this epoch's generator through the one scoring function."""
    import hashlib

    from s2i_bench.translators.base import Translator
    from s2i_bench.scoring.score import score_translator

    saved = run_dir / "checkpoints" / f"generator-{epoch:06d}.pt"
    if saved.is_file():
        from s2i_bench.fileio import sha256_file

        path, sha, kind = str(saved), sha256_file(saved), "checkpoint"
    else:  # not saved this epoch: identify the weights by their hash
        h = hashlib.sha256()
        for k, v in unwrap(G).state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        path, sha, kind = f"{run_dir}@epoch{epoch}", h.hexdigest(), "live"
    info = {"path": path, "sha256": sha, "kind": kind, "epoch": epoch, "embedding_dim": f, "run": run_name}
    translator = Translator.from_modules(encoder, unwrap(G), info, device)
    sc = proto.scoring
    record = score_translator(translator, store, bundle, protocol=proto, split=sc.split, seed=sc.seed, samples=1,
                              batch_size=sc.batch_size, device=device, epoch=epoch, d_update=d_updated, run=run_name)
    append_jsonl(run_dir / "metric-informativity.jsonl", record)


def _check_replicas_agree(G, D) -> None:
    """Every rank must end with the same weights (DDP keeps them in step); a cheap checksum."""
    import torch.distributed as dist

    sums = torch.stack([sum(p.detach().double().sum() for p in unwrap(m).parameters()) for m in (G, D)])
    gathered = [torch.zeros_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, sums)
    if any(not torch.allclose(g, gathered[0], rtol=0, atol=1e-6) for g in gathered):
        raise RuntimeError(f"data-parallel replicas disagree after training: {[g.tolist() for g in gathered]}")
