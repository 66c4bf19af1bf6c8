"""The FID Inception presets against the reference libraries, on one weights file of random values
written here in pytorch-fid's own layout (its network, built by its own code, with random
numbers): features and FID equal to pytorch-fid's, torch-fidelity's and torchmetrics', batch size
never matters, the sha256 check speaks, and nothing is ever fetched (`no_network`)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from s2i_bench.errors import UserError
from s2i_bench.images import chw_uint8_to_net
from s2i_bench.scoring import inception as INC
from s2i_bench.scoring.image_metrics import fid, kid
from s2i_bench.scoring.presets import load_preset

pytestmark = pytest.mark.usefixtures("no_network")
REL = 1e-6  # the acceptance margin: relative to the largest value compared
N = 4  # images per set


def _pytorch_fid_network():
    """pytorch-fid's FID Inception built by pytorch-fid's code (without its download)."""
    import pytorch_fid.inception as PI

    net = PI._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b, net.Mixed_5c = PI.FIDInceptionA(192, pool_features=32), PI.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = PI.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b, net.Mixed_6c = PI.FIDInceptionC(768, channels_7x7=128), PI.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d, net.Mixed_6e = PI.FIDInceptionC(768, channels_7x7=160), PI.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b, net.Mixed_7c = PI.FIDInceptionE_1(1280), PI.FIDInceptionE_2(2048)
    return net


def _random_state(net, seed: int = 0) -> dict:
    """The network's state dict with random values scaled so activations stay of order one."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in net.state_dict().items():
        if k.endswith("conv.weight"):
            out[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        elif k.endswith(("bn.weight", "running_var")):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith(("bn.bias", "running_mean")):
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(0)
        else:  # fc
            out[k] = 0.01 * torch.randn(v.shape, generator=g)
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / INC.WEIGHTS_NAMES[0]
    torch.save(_random_state(_pytorch_fid_network()), path)
    return path


@pytest.fixture(scope="module")
def images():
    """Two sets of N uint8 (N, 3, 96, 96) images: smooth colour fields plus noise (N small: the
    network costs a few hundred ms per image on one CPU thread)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 96)[None, None, None, :] * np.linspace(0, 1, 96)[None, None, :, None]

    def one(shift):
        base = rng.uniform(0, 255, size=(N, 3, 1, 1)) * ramp + shift
        return torch.from_numpy(np.clip(base + rng.normal(0, 20, size=(N, 3, 96, 96)), 0, 255).astype(np.uint8))
    return one(0), one(60)


@pytest.fixture(scope="module")
def ours(weights, images):
    """Our features per resize: (N, 2048) float64 of each set (both sets in one call; torch-fidelity's
    resize: the first set only)."""
    out = {}
    for resize in ("pytorch-fid", "torch-fidelity", "torchmetrics"):
        ex = load_preset(f"inception-{resize}", weights)
        both = ex(chw_uint8_to_net(torch.cat(images) if resize != "torch-fidelity" else images[0]))
        out[resize] = (both[:N].astype(np.float64), both[N:].astype(np.float64))
    return out


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def pytorch_fids(weights, images):
    """pytorch-fid's own features of both sets: its model, its resize_input and normalize_input,
    on images as its loader reads a PNG (to_tensor: uint8 / 255)."""
    import pytorch_fid.inception as PI

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PI, "load_state_dict_from_url", lambda *a, **k: torch.load(weights, weights_only=True))
        net = PI.InceptionV3([3]).eval()
    with torch.no_grad():
        return [net(x.float() / 255)[0].flatten(1).double().numpy() for x in images]


def test_features_equal_pytorch_fids(ours, pytorch_fids):
    a, b = ours["pytorch-fid"]
    assert _rel(a, pytorch_fids[0]) <= REL and _rel(b, pytorch_fids[1]) <= REL
    # the three resizes are three feature spaces: a recipe names which
    assert _rel(ours["torch-fidelity"][0], a) > 1e-3 and _rel(ours["torchmetrics"][0], a) > 1e-3


def _in_their_span(x, y):
    """Both (N, 2048) sets in an orthonormal basis of the span of their centred union (k <= 2N - 1
    coordinates). The Frechet distance does not change under that rotation (the means differ
    inside the span, both covariances live in it, and sqrt(S1 S2) only gains zero eigenvalues
    outside it), so this is the same distance, computed without the rank-deficient 2048 x 2048
    square root (45 s of scipy on one CPU thread, and rounding noise in its null space)."""
    both = np.concatenate([x, y])
    _, s, vt = np.linalg.svd(both - both.mean(0), full_matrices=False)
    basis = vt[s > s[0] * 1e-12].T  # (2048, k)
    return x @ basis, y @ basis


def test_fid_equals_pytorch_fids(ours, pytorch_fids):
    from pytorch_fid.fid_score import calculate_frechet_distance

    x, y = _in_their_span(*pytorch_fids)  # pytorch-fid's own features and its own distance function
    expected = calculate_frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    # our `fid` writes the features in the same kind of basis before torchmetrics' eigenvalue form
    assert abs(fid(*ours["pytorch-fid"]) - expected) <= REL * expected


def test_fid_in_the_sets_span_is_the_frechet_distance():
    """Fewer points than dimensions: 12 + 12 points of a full-rank 4-d cloud, placed in 40
    dimensions by a random orthonormal map and an offset. The distance is pytorch-fid's on the 4-d
    points (well conditioned); with more points than dimensions nothing is projected."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 4)), 1.5 * rng.normal(size=(12, 4)) + 0.7
    expected = calculate_frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    basis, _ = np.linalg.qr(rng.normal(size=(40, 4)))  # (40, 4) orthonormal columns
    offset = rng.normal(size=40)
    assert abs(fid(x @ basis.T + offset, y @ basis.T + offset) - expected) <= 1e-9 * expected
    wide_x, wide_y = rng.normal(size=(30, 6)), rng.normal(size=(30, 6)) + 0.3  # full rank: as it is
    expected = calculate_frechet_distance(wide_x.mean(0), np.cov(wide_x, rowvar=False), wide_y.mean(0),
                                          np.cov(wide_y, rowvar=False))
    assert abs(fid(wide_x, wide_y) - expected) <= 1e-9 * expected
    assert fid(np.ones((3, 8)), np.ones((3, 8))) == 0.0


def test_features_equal_torch_fidelitys_and_kid_equals_its_kid(weights, images, ours):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    ref_net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    with torch.no_grad():
        ref = ref_net(images[0])[0].double().numpy()
    assert _rel(ours["torch-fidelity"][0], ref) <= REL
    # N and N images, subsets of N: every subset is all of both, so both libraries compute one estimate
    a, b = ours["pytorch-fid"]
    expected = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=3, kid_subset_size=N,
                                      rng_seed=0, verbose=False)[KEY_METRIC_KID_MEAN]
    assert abs(kid(a, b, subset_size=N)[0] - expected) <= REL * abs(expected)


def test_features_and_fid_equal_torchmetrics(weights, images, ours):
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights), antialias=True)
    with torch.no_grad():
        ref = metric.inception(images[0]).double().numpy()  # torchmetrics' own network and resize
    a, b = ours["torchmetrics"]
    assert _rel(a, ref) <= REL
    metric.update(images[0], real=True)
    metric.update(images[1], real=False)
    expected = float(metric.compute())
    # torchmetrics takes the square root over the whole 2048 x 2048 product, whose null space (the
    # covariances have rank N - 1) is rounding noise: its value is 1.8e-6 relative from the exact
    # distance, which ours (in the sets' span) is within 5e-9 of (test above; docs/metrics.md)
    assert abs(fid(a, b) - expected) <= 1e-5 * expected


def test_an_images_features_do_not_depend_on_the_batch_it_came_in(weights, images, ours):
    ex = load_preset("inception-pytorch-fid", weights)
    alone = ex(chw_uint8_to_net(images[0][:1]))  # batch 1, padded to one pass
    assert np.array_equal(alone[0], ours["pytorch-fid"][0][0].astype(np.float32))  # came in a batch of 2N
    three = ex(chw_uint8_to_net(images[0][[3, 0, 2]]))
    assert np.array_equal(three[1], alone[0])


def test_weights_come_from_the_cache_and_are_checked(weights, tmp_path, monkeypatch, caplog, no_network):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(UserError) as e:
        load_preset("inception-pytorch-fid")
    message = str(e.value)
    assert "\n" not in message and INC.WEIGHTS_URL in message and str(hub / "checkpoints") in message
    assert "downloads nothing" in message and no_network == []  # said, not fetched
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / INC.WEIGHTS_NAMES[1]).write_bytes(weights.read_bytes())  # torch-fidelity's name
    with caplog.at_level(logging.WARNING):
        ex = load_preset("inception-torch-fidelity")
    assert ex.recipe["weights_check"] == "differs" and "not the published FID Inception weights" in caplog.text
    assert ex.recipe["published_sha256"] == INC.PUBLISHED_SHA256 and ex.info["path"].endswith(INC.WEIGHTS_NAMES[1])
    monkeypatch.setattr(INC, "PUBLISHED_SHA256", ex.sha256)  # as if these were the published weights
    assert INC.check_weights(weights)["check"] == "published"


def test_hostile_or_wrong_weights_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    bad = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(UserError, match="weights_only"):
        load_preset("inception-pytorch-fid", bad)
    short = tmp_path / "short.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, short)
    with pytest.raises(UserError, match="missing key"):
        load_preset("inception-pytorch-fid", short)


def test_the_network_is_blocked_in_these_tests(no_network, monkeypatch, tmp_path):
    """The fixture every test here uses: pytorch-fid's own loader, left alone, would download."""
    import urllib.request

    import pytorch_fid.inception as PI

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    with pytest.raises(Exception, match="tried to reach"):
        urllib.request.urlopen("https://github.com", timeout=5)
    with pytest.raises(Exception, match="tried to reach"):
        PI.fid_inception_v3()
    assert no_network and not (tmp_path / "empty-hub" / "checkpoints" / INC.WEIGHTS_NAMES[0]).exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torchmetrics#1620 was seen on GPUs)")
def test_batch_size_never_matters_on_cuda(weights, images):
    ex = load_preset("inception-pytorch-fid", weights, device="cuda")
    alone = ex(chw_uint8_to_net(images[0][:1]))
    together = ex(chw_uint8_to_net(torch.cat(images)))
    assert np.array_equal(alone[0], together[0])
