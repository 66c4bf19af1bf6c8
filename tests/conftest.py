"""Shared fixtures: tiny seeded synthetic data made in the tests, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import make_fake_store  # noqa: F401 (tests import it from here too)

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
    from faults import run_cli
    from s2i_bench.protocol import load_protocol
    from s2i_bench.training import train_baseline
    from test_scoring import write_bundle

    root = tmp_path_factory.mktemp("scored")
    run = root / "runs" / "a"
    train_baseline(fake_store, run, epochs=2, save_every=1, seed=0)
    bundle = write_bundle(root / "bundle.pt", load_protocol("tiny"))
    run_cli("score", run, "--data", fake_store, "--classifiers", bundle).ok()
    return {"root": root, "store": fake_store, "run": run, "bundle": bundle}
