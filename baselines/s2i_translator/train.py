"""The reference translator trained by Algorithm 1 (SPEC section 4): what `s2i-bench
train-baseline` runs through this package's plugin (`train`, called with the run folder, the
store, the protocol, the resolved options and the toolkit's hooks).

    1. the audio autoencoder (MSE, SGD lr 0.05 momentum 0.9), or one given with --autoencoder;
    2. the frozen encoder's embeddings x of every training segment, computed once (eval mode);
    3. per epoch t (from 0): when t % d_every_epochs == 0, one discriminator epoch first
       (every batch: MSE(D(Y, x), r_max) + MSE(D(G(x), x), r_min), G frozen); then one generator
       epoch: L_G = MSE(Y, G(x)) + lambda * L_G^ma, Eq. 5 with the last k-1 epochs' mean
       adversarial losses as constants (only the current batch's term carries a gradient).

It writes into the run folder the toolkit gives it (`s2i_bench.runs.RunFolder` names the files):
log.csv, checkpoints, grids, resume.pt (after every epoch: a Ctrl-C or a crash loses at most the
epoch in progress, and --resume replays it bit for bit on CPU), and its own autoencoder.pt.
After each epoch it calls `hooks.on_epoch_end(epoch, translator, d_updated)` (in-loop scoring).

Multi-GPU: launch with `torchrun --nproc_per_node N -m s2i_bench.cli train-baseline ...`; every
rank takes its share of each global batch of 64 and DistributedDataParallel averages gradients.
"""

from __future__ import annotations

import logging
import contextlib
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from s2i_bench import distributed
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_torch_save, progress, sha256_file
from s2i_bench.images import chw_uint8_to_net, resize_net, uint8_to_net
from s2i_bench.provenance import code_version
from s2i_bench.safeload import load_state_into, load_weights_only
from s2i_bench.seeding import item_seed, item_seeds
from s2i_translator.checkpoint import (
    cpu_state,
    make_autoencoder_checkpoint,
    make_checkpoint,
    model_spec_from_dict,
    read_autoencoder,
    save_checkpoint,
    translator_from_modules,
    unwrap,
)
from s2i_translator.grids import grid_indices, save_grid
from s2i_translator.models import AudioAutoencoder, DenseGenerator, Discriminator

logger = logging.getLogger(__name__)

LOG_COLUMNS = ["epoch", "d_updated", "pixel_loss", "adv_loss", "adv_loss_ma", "d_loss", "d_real_score",
               "d_fake_score", "g_batches", "d_batches", "seconds"]
RESUME_FORMAT = "s2i-train-resume"


# -- small helpers ------------------------------------------------------------------------------
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


def _normalised_spectrograms(store, indices: np.ndarray, chunk: int = 2048) -> torch.Tensor:
    """(N, 1, 128, 100) float32 network input for `indices`, read chunk by chunk from the store."""
    out = torch.empty((len(indices), *store.spectrograms.shape[1:]), dtype=torch.float32)
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        out[start:start + len(part)] = torch.from_numpy(store.normalise(np.asarray(store.spectrograms[part])))
    return out


def _target_images(store, indices: np.ndarray, size: int, chunk: int = 2048) -> torch.Tensor:
    """(N, 3, S, S) uint8 frames at the generator's image size (antialiased resize when S < 96)."""
    out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        net = resize_net(uint8_to_net(np.asarray(store.frames[part])), size)  # (n, 3, S, S) in [-1, 1]
        out[start:start + len(part)] = ((net.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return out


# -- the autoencoder -----------------------------------------------------------------------------
def train_autoencoder(spectrograms: torch.Tensor, embedding_dim: int, protocol, seed: int, device: str,
                      desc: str = "autoencoder",
                      source: str = "the training spectrograms") -> tuple[AudioAutoencoder, float]:
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
            raise UserError(f"autoencoder training on {source}: non-finite loss at epoch {epoch}; nothing was saved "
                            f"(check the store with `s2i-bench audit`)")
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
            x, y = emb[idx], chw_uint8_to_net(targets[idx])  # (B, f), (B, 3, S, S)
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
            x, y = emb[idx], chw_uint8_to_net(targets[idx])  # (B, f), (B, 3, S, S)
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


# -- the trainer --------------------------------------------------------------------------------
@dataclass
class _State:
    """Everything the epoch loop reads and updates."""

    G: nn.Module
    D: nn.Module
    opt_g: Any
    opt_d: Any
    adv_history: list[float] = field(default_factory=list)
    start_epoch: int = 0
    G_train: nn.Module | None = None  # DDP / compiled forms used for the updates
    D_train: nn.Module | None = None
    G_frozen: nn.Module | None = None  # G during D's epoch, D during G's epoch
    D_frozen: nn.Module | None = None


def train(*, run, store, protocol, options, hooks) -> Path:
    """Train on `store` into `run` (a `RunFolder` the toolkit has locked and written
    options.json into) for `options.epochs` epochs, resuming when `options.resume`."""
    # a long timeout: the other ranks wait at a barrier while rank 0 trains the autoencoder
    shard = distributed.current(options.device, timeout_s=24 * 3600) or distributed.SOLO
    try:
        return _train(run, store, protocol, options, hooks, shard)
    finally:
        if shard.enabled:
            distributed.close()


def _train(run, store, protocol, options, hooks, shard) -> Path:
    tr = protocol.training
    device = _setup_device(options.device, shard, tr.batch_size)
    train_idx = store.split_indices("train")
    if len(train_idx) < tr.batch_size:
        raise UserError(f"{store.path}: {len(train_idx)} training segments, fewer than one batch of {tr.batch_size}")
    seed = options.seed

    # 1. the autoencoder (trained once, or the one given), frozen
    encoder = _autoencoder(run, store, protocol, options, train_idx, device, shard)
    # 2. embeddings and targets of the whole training split, on the device (it fits)
    emb = encode_all(encoder, _normalised_spectrograms(store, train_idx), device)  # (N, f)
    targets = _target_images(store, train_idx, protocol.model.image_size).to(device)  # (N, 3, S, S) uint8
    grid = _grid_data(store, protocol, seed)
    # 3. G and D, fresh or resumed
    state = _models(run, protocol, options, device, shard)
    if shard.main:
        run.truncate_log(state.start_epoch - 1, LOG_COLUMNS)
    if state.start_epoch >= options.epochs:
        if shard.main:
            print(f"{run.path}: already trained for {state.start_epoch} epochs (pass a larger --epochs to go on)")
        return run.path
    # 4. the epochs
    pixel = _fit(run, store, protocol, options, hooks, shard, device, encoder, emb, targets, grid, state)
    if shard.enabled:
        _check_replicas_agree(state.G, state.D)
    if shard.main and os.environ.get("S2I_BENCH_QUIET") != "1":
        print(f"{run.path}: trained epochs {state.start_epoch}..{options.epochs - 1}; pixel loss {pixel:.4f}")
    return run.path


def _setup_device(device: str, shard, batch_size: int) -> str:
    if shard.enabled and device == "cuda":
        device = f"cuda:{shard.local_rank}"
    if batch_size % shard.world:
        raise UserError(f"batch size {batch_size} does not split over {shard.world} processes")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def _autoencoder(run, store, protocol, options, train_idx, device: str, shard) -> nn.Module:
    """The frozen encoder: RUN/autoencoder.pt, trained here (rank 0) or copied from --autoencoder."""
    f = options.embedding_dim
    ae_file = run.path / "autoencoder.pt"
    if shard.main and not ae_file.is_file():
        if options.autoencoder is not None:
            given = Path(options.autoencoder)
            model, ckpt = read_autoencoder(given)
            if model.embedding_dim != f:
                raise UserError(f"{given}: an autoencoder for f = {model.embedding_dim}, the run has f = {f}")
            if model_spec_from_dict(ckpt["model"], str(given)) != protocol.model:
                raise UserError(f"{given}: its model sizes differ from protocol {protocol.name!r}")
            if ckpt.get("store", {}).get("hash") not in (None, store.store_hash):
                logger.warning(f"{given} was trained on store {ckpt['store'].get('hash')}, "
                               f"not {store.store_hash}")
            atomic_torch_save(ae_file, ckpt)  # the run folder holds everything it used
        else:
            spectrograms = _normalised_spectrograms(store, train_idx)
            model, loss = train_autoencoder(spectrograms, f, protocol, options.seed, device,
                                            desc=f"{run.name}: autoencoder", source=str(store.path))
            atomic_torch_save(ae_file, make_autoencoder_checkpoint(
                autoencoder=model, embedding_dim=f, spec=protocol.model, protocol_ref=protocol.ref(),
                store_ref=store.ref(), normalisation=store.normalisation,
                epochs=protocol.autoencoder.epochs, loss=loss, seed=options.seed))
    shard.barrier()
    autoencoder, _ = read_autoencoder(ae_file)
    encoder = autoencoder.encoder.to(device).eval()
    encoder.requires_grad_(False)
    return encoder


def _grid_data(store, protocol, seed: int) -> dict[str, Any]:
    """Fixed validation sounds for the image grids: spectrograms, real frames, seeds."""
    idx = grid_indices(store, protocol.class_keys, protocol.training.grid_per_class)
    return {"spec": _normalised_spectrograms(store, idx),
            "real": _target_images(store, idx, protocol.model.image_size),
            "seeds": torch.from_numpy(item_seeds(seed, store.segment_ids[idx], draw=0)),
            "per_class": protocol.training.grid_per_class}


def _models(run, protocol, options, device: str, shard) -> _State:
    """G, D and their optimisers, fresh from the seed or restored from resume.pt (weights,
    optimiser momenta, the adversarial-loss history and the RNG state: the run continues as if
    never stopped, D-update cadence and all)."""
    tr, f = protocol.training, options.embedding_dim
    torch.manual_seed(item_seed(options.seed, "gan-init"))
    G = DenseGenerator(f, protocol.model).to(device)
    D = Discriminator(f, protocol.model).to(device)
    if device.startswith("cuda"):
        G = G.to(memory_format=torch.channels_last)
        D = D.to(memory_format=torch.channels_last)
    state = _State(G, D, torch.optim.SGD(G.parameters(), lr=tr.lr_g, momentum=tr.momentum_g),
                   torch.optim.SGD(D.parameters(), lr=tr.lr_d, momentum=tr.momentum_d))
    resume_file = run.resume_path
    if options.resume and resume_file.is_file():
        saved = load_weights_only(resume_file, "resume state")
        if not isinstance(saved, dict) or saved.get("format") != RESUME_FORMAT:
            raise UserError(f"{resume_file}: not a resume state of s2i-bench")
        load_state_into(G, saved["generator"], str(resume_file), "generator")
        load_state_into(D, saved["discriminator"], str(resume_file), "discriminator")
        state.opt_g.load_state_dict(saved["opt_g"])
        state.opt_d.load_state_dict(saved["opt_d"])
        state.adv_history = [float(v) for v in saved["adv_history"]]
        state.start_epoch = int(saved["epoch"]) + 1
        torch.set_rng_state(saved["rng_cpu"])
        if device.startswith("cuda") and saved.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(saved["rng_cuda"])
        if saved.get("world_size", 1) != shard.world and shard.main:
            logger.warning(f"{resume_file} was written with {saved.get('world_size')} processes, now "
                           f"{shard.world}: the run continues but is not bit-identical")
    else:
        # the dropout masks of the run: from the seed, not from whatever ran before
        torch.manual_seed(item_seed(options.seed, "gan-dropout", shard.rank))
    state.G_train, state.D_train, state.G_frozen, state.D_frozen = G, D, G, D
    if shard.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [shard.local_rank] if device.startswith("cuda") else None
        state.G_train, state.D_train = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if options.use_compile:  # after DDP, so that compiled graphs break at its gradient buckets
        state.G_train, state.D_train = torch.compile(state.G_train), torch.compile(state.D_train)
        state.G_frozen, state.D_frozen = torch.compile(G), torch.compile(D)
    return state


def _fit(run, store, protocol, options, hooks, shard, device, encoder, emb, targets, grid, state: _State) -> float:
    """Algorithm 1 from `state.start_epoch` to `options.epochs - 1`; returns the last pixel loss."""
    tr = protocol.training
    n, epoch, pixel = len(emb), state.start_epoch, float("nan")
    try:
        epoch_bar = progress(range(state.start_epoch, options.epochs), desc=f"{run.name} (f={options.embedding_dim})",
                             unit="epoch")
        for epoch in epoch_bar:
            started = time.perf_counter()
            d_updated = epoch % tr.d_every_epochs == 0
            d_stats, d_batches = None, 0
            if d_updated:
                perm = epoch_permutation(n, options.seed, "d-epoch", epoch).to(device)
                d_stats, d_batches = discriminator_epoch(
                    state.G_frozen, state.D_train, state.opt_d, emb, targets, perm, batch=tr.batch_size,
                    rank=shard.rank, world=shard.world, r_max=tr.r_max, r_min=tr.r_min, device=device,
                    desc=f"epoch {epoch} D")
            past = state.adv_history[-(tr.adv_ma_k - 1):] if tr.adv_ma_k > 1 else []
            perm = epoch_permutation(n, options.seed, "g-epoch", epoch).to(device)
            g_stats, g_batches = generator_epoch(
                state.G_train, state.D_frozen, state.opt_g, emb, targets, perm, batch=tr.batch_size, rank=shard.rank,
                world=shard.world, r_max=tr.r_max, adv_lambda=tr.adv_lambda, past_adv=past, device=device,
                desc=f"epoch {epoch} G")
            # One host sync per epoch: the losses were summed on the device.
            pixel, adv, adv_ma = g_stats.tolist()
            d_loss, d_real, d_fake = d_stats.tolist() if d_stats is not None else (float("nan"),) * 3
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if not all(math.isfinite(v) for v in (pixel, adv, adv_ma)) or (d_updated and not math.isfinite(d_loss)):
                kept = run.checkpoints()
                raise UserError(
                    f"{run.path}: non-finite loss at epoch {epoch} (pixel {pixel}, adversarial {adv}, D {d_loss}); "
                    f"training stopped; last good checkpoint: {kept[-1] if kept else 'none'}; resume.pt holds "
                    f"epoch {epoch - 1}")
            state.adv_history.append(adv)
            if shard.main:
                _save_epoch(run, store, protocol, options, hooks, device, encoder, grid, state, epoch, d_updated, {
                    "epoch": epoch, "d_updated": int(d_updated), "pixel_loss": pixel, "adv_loss": adv,
                    "adv_loss_ma": adv_ma, "d_loss": d_loss, "d_real_score": d_real, "d_fake_score": d_fake,
                    "g_batches": g_batches, "d_batches": d_batches}, started)
            if hasattr(epoch_bar, "set_postfix"):
                epoch_bar.set_postfix(pixel=f"{pixel:.4f}", adv=f"{adv:.3f}")
            shard.barrier()
    except KeyboardInterrupt:
        if shard.main:
            logger.info(f"\ninterrupted during epoch {epoch}; {run.path} is resumable from epoch {epoch} "
                        f"(repeat the command with --resume)")
        raise
    return pixel


def _save_epoch(run, store, protocol, options, hooks, device, encoder, grid, state: _State, epoch: int,
                d_updated: bool, row: dict[str, Any], started: float) -> None:
    """After epoch `epoch` (rank 0): checkpoint, grid, the hook, the log row, then resume.pt,
    in that order, so that what resume.pt holds is always covered by the log and checkpoints."""
    last = epoch == options.epochs - 1
    f = options.embedding_dim
    saved = None
    if epoch % options.save_every == 0 or last:
        saved = save_checkpoint(run.checkpoint_path(epoch), make_checkpoint(
            epoch=epoch, embedding_dim=f, spec=protocol.model, protocol_ref=protocol.ref(), store_ref=store.ref(),
            normalisation=store.normalisation, encoder=encoder, generator=state.G, run=run.name))
    if epoch % options.grid_every == 0 or last:
        save_grid(run.grid_path(epoch), encoder, state.G, grid["spec"], grid["real"], grid["seeds"],
                  grid["per_class"], device)
    if hooks is not None and hooks.on_epoch_end is not None:
        if saved is not None:
            path, sha, kind = str(saved), sha256_file(saved), "checkpoint"
        else:  # not saved this epoch: the weights are identified by their hash
            path, sha, kind = f"{run.path}@epoch{epoch}", _state_hash(state.G), "live"
        info = {"path": path, "sha256": sha, "kind": kind, "epoch": epoch, "embedding_dim": f, "run": run.name}
        hooks.on_epoch_end(epoch, translator_from_modules(encoder, unwrap(state.G), info, device), d_updated)
    run.append_log({**row, "seconds": round(time.perf_counter() - started, 4)}, LOG_COLUMNS)
    atomic_torch_save(run.resume_path, {
        "format": RESUME_FORMAT, "epoch": epoch, "generator": cpu_state(state.G), "discriminator": cpu_state(state.D),
        "opt_g": state.opt_g.state_dict(), "opt_d": state.opt_d.state_dict(), "adv_history": list(state.adv_history),
        "rng_cpu": torch.get_rng_state(), "rng_cuda": torch.cuda.get_rng_state() if device.startswith("cuda") else None,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")), "seed": options.seed, "embedding_dim": f,
        "code_version": code_version()})


def _state_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in unwrap(module).state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _check_replicas_agree(G, D) -> None:
    """Every rank must end with the same weights (DDP keeps them in step); a cheap checksum."""
    sums = torch.stack([sum(p.detach().double().sum() for p in unwrap(m).parameters()) for m in (G, D)])
    gathered = [torch.zeros_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, sums)
    if any(not torch.allclose(g, gathered[0], rtol=0, atol=1e-6) for g in gathered):
        raise RuntimeError(f"data-parallel replicas disagree after training: {[g.tolist() for g in gathered]}")
