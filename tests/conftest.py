"""Shared fixtures: tiny seeded synthetic data made in the tests, never downloaded. The fakes
they are made of live in fakes.py; a fixture that two test files use lives here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fakes import make_fake_store, run_cli, write_bundle

os.environ.setdefault("S2I_BENCH_QUIET", "1")
# Bare commands fall back on the embedded default (demo-work/ of the current folder): a test must
# never pick up a developer's real one, so the default points nowhere unless a test sets it.
os.environ["S2I_BENCH_DEMO_WORK"] = os.path.join(os.path.dirname(__file__), ".no-embedded-default")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread for the whole suite: the tests' tensors are tiny, and on a shared or
    busy machine (CI) two spinning threads per process were measured 5-40x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fake_store(tmp_path_factory) -> Path:
    """A tiny store (5 classes x 12/6/6 segments) shared by the session; treat as read-only."""
    return make_fake_store(tmp_path_factory.mktemp("fake_store") / "store")


@pytest.fixture(scope="module")
def scored_tiny_run(tmp_path_factory, fake_store) -> dict:
    """A tiny run trained for two epochs and scored into its folder, with a bundle in the real
    format: {root, store, run, bundle}."""
    from s2i_bench.protocol import load_protocol
    from s2i_bench.training import train_baseline

    root = tmp_path_factory.mktemp("scored")
    run = root / "runs" / "a"
    train_baseline(fake_store, run, epochs=2, save_every=1, seed=0)
    bundle = write_bundle(root / "bundle.pt", load_protocol("tiny"))
    run_cli("score", run, "--data", fake_store, "--classifiers", bundle).ok()
    return {"root": root, "store": fake_store, "run": run, "bundle": bundle}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, fake_store):
    """A run folder with two real (random-weight) checkpoints of the tiny profile, its log.csv,
    and a bundle in the real format: (run, bundle, store)."""
    import torch

    from s2i_bench.data.store import open_store
    from s2i_bench.protocol import load_protocol
    from s2i_translator.checkpoint import make_checkpoint, save_checkpoint
    from s2i_translator.models import AudioEncoder, DenseGenerator

    protocol = load_protocol("tiny")
    tmp = tmp_path_factory.mktemp("chain")
    store = open_store(fake_store)
    f = protocol.training.embedding_dim
    torch.manual_seed(0)
    encoder, generator = AudioEncoder(f, protocol.model), DenseGenerator(f, protocol.model)
    run = tmp / "run-f16"
    for epoch in (0, 2):
        with torch.no_grad():  # a different generator at every epoch
            for p in generator.parameters():
                p.add_(0.05 * torch.randn_like(p))
        ckpt = make_checkpoint(epoch=epoch, embedding_dim=f, spec=protocol.model, protocol_ref=protocol.ref(),
                               store_ref=store.ref(), normalisation=store.meta["normalisation"], encoder=encoder,
                               generator=generator, run=run.name)
        save_checkpoint(run / "checkpoints" / f"generator-{epoch:06d}.pt", ckpt)
    # log.csv marks the D update before epoch 2 (not the protocol's cadence, on purpose).
    (run / "log.csv").write_text("epoch,d_updated,pixel_loss\n" + "".join(
        f"{e},{int(e == 2)},0.1\n" for e in range(3)))
    return run, write_bundle(tmp / "bundle.pt", protocol), fake_store


class NetworkBlocked(RuntimeError):
    """A test tried to reach another machine."""


@pytest.fixture
def no_network(monkeypatch):
    """Nothing reaches another machine: a connection to anything but this machine, a name lookup
    of another host, raises NetworkBlocked (so urllib, torch.hub, requests and huggingface_hub all
    fail), and the libraries' offline switches are on. Yields the list of attempts, which a test
    can check is empty. The tests of the feature presets use it: nothing is ever fetched."""
    import socket

    attempts: list = []
    local = {"localhost", "127.0.0.1", "::1", "", None}
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def host_of(address):
        return address[0] if isinstance(address, tuple) and address else address

    def guard(address):
        if host_of(address) not in local:
            attempts.append(address)
            raise NetworkBlocked(f"a test tried to reach {address!r}")

    def connect(self, address, *a, **k):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            guard(address)
        return real_connect(self, address, *a, **k)

    def connect_ex(self, address, *a, **k):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            guard(address)
        return real_connect_ex(self, address, *a, **k)

    def getaddrinfo(host, *a, **k):
        guard((host,))
        return real_getaddrinfo(host, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    yield attempts
