"""The reference translator's models: SPEC section 4 parameter counts and shapes, Xavier init,
test-time dropout seeded per image, and the authors' state-dict key mapping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from fakes import authors_autoencoder_state, authors_discriminator_state, authors_generator_state
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol
from s2i_translator import authors
from s2i_translator.models import (AudioAutoencoder, DenseBlock, DenseGenerator, Discriminator, channel_dropout,
                                   count_parameters)

# SPEC section 4 (the paper's widths).
AE_PARAMS = {128: 29_875_635, 512: 33_415_731, 2048: 47_576_115}
G_PARAMS = {128: 37_857_705, 256: 38_119_849, 512: 38_644_137, 1024: 39_692_713, 2048: 41_789_865}


def meta(build):
    """Build a model on the meta device: sizes without memory or init time."""
    with torch.device("meta"):
        return build()


@pytest.mark.parametrize("f", sorted(G_PARAMS))
def test_generator_parameter_count(f):
    assert count_parameters(meta(lambda: DenseGenerator(f))) == G_PARAMS[f]


@pytest.mark.parametrize("f", sorted(AE_PARAMS))
def test_autoencoder_parameter_count(f):
    assert count_parameters(meta(lambda: AudioAutoencoder(f))) == AE_PARAMS[f]


def test_encoder_decoder_discriminator_counts_at_512():
    ae = meta(lambda: AudioAutoencoder(512))
    assert count_parameters(ae.encoder) == 16_672_912
    assert count_parameters(ae.decoder) == 16_742_819
    d = meta(lambda: Discriminator(512))
    assert count_parameters(d) == 5_276_450
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.bias is None for c in convs)


def test_layer_counts_and_dense_block_reuse():
    g = meta(lambda: DenseGenerator(512))
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) == 25
    assert len(g.blocks) == 6 and all(type(b) is DenseBlock for b in g.blocks)
    ae = meta(lambda: AudioAutoencoder(512))
    assert sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in ae.modules()) == 26


def test_paper_shapes():
    # On the meta device: shapes flow through every layer at the paper's size without compute.
    f = 128
    with torch.device("meta"):
        ae, g, d = AudioAutoencoder(f).eval(), DenseGenerator(f).eval(), Discriminator(f).eval()
        s = torch.empty(2, 1, 128, 100)
        x = ae.encode(s)
        assert x.shape == (2, f)
        assert ae(s).shape == (2, 1, 128, 100)
        y = g(x)
        assert y.shape == (2, 3, 96, 96)
        assert d(y, x).shape == (2, 1, 1, 1)


def test_small_profile_shapes():
    spec = load_protocol("synth").model
    f = 32
    ae, g, d = AudioAutoencoder(f, spec), DenseGenerator(f, spec), Discriminator(f, spec)
    x = ae.encode(torch.rand(3, 1, 128, 100) * 2 - 1)
    y = g(x)
    assert x.shape == (3, f) and y.shape == (3, 3, spec.image_size, spec.image_size)
    r = d(y, x)
    assert r.shape == (3, 1, 1, 1)
    for t in (x, y, r, ae(torch.rand(3, 1, 128, 100))):  # TanH outputs: all values in [-1, 1]
        assert t.abs().max() <= 1
    # same topology as the paper: 25 transposed convs, six dense blocks, 13 discriminator convs
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) == 25
    assert sum(isinstance(m, nn.Conv2d) for m in d.modules()) == 13


def test_bad_spec_is_refused():
    import dataclasses

    spec = dataclasses.replace(load_protocol("synth").model, image_size=64)
    with pytest.raises(UserError, match="image_size 64"):
        DenseGenerator(16, spec)
    with pytest.raises(UserError, match="not 2x2"):
        Discriminator(16, spec)
    with pytest.raises(UserError, match="multiple of 4"):
        Discriminator(18, load_protocol("synth").model)


def test_xavier_uniform_init():
    torch.manual_seed(0)
    g = DenseGenerator(64, load_protocol("synth").model)
    for m in g.modules():
        if isinstance(m, nn.ConvTranspose2d):
            w = m.weight  # (in, out, k, k): fan_in = out*k*k for transposed conv in torch's convention
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert w.abs().max() <= bound + 1e-7
            if w.numel() > 2000:  # uniform on [-b, b]: std = b / sqrt(3)
                assert abs(w.std().item() - bound / math.sqrt(3)) < 0.1 * bound
            assert torch.all(m.bias == 0)


def test_channel_dropout_zeroes_whole_channels_at_rate_p():
    h = torch.ones(200, 50, 3, 3)
    torch.manual_seed(1)
    out = channel_dropout(h, 0.3)
    per_channel = out.flatten(2)
    assert torch.all(per_channel.amin(2) == per_channel.amax(2))  # a channel is all kept or all dropped
    kept = per_channel[:, :, 0]
    assert torch.all((kept == 0) | torch.isclose(kept, torch.tensor(1 / 0.7)))
    assert abs((kept == 0).float().mean().item() - 0.3) < 0.02


def test_test_time_dropout_is_on_and_seeded_per_image():
    torch.manual_seed(0)
    spec = load_protocol("tiny").model
    g = DenseGenerator(16, spec).eval()
    x = torch.rand(4, 16) * 2 - 1
    seeds = torch.tensor([11, 12, 13, 14], dtype=torch.int64)
    with torch.no_grad():
        free_a, free_b = g(x), g(x)
        assert not torch.allclose(free_a, free_b)  # dropout active in eval mode (SPEC 4.2)
        a, b = g(x, dropout_seeds=seeds), g(x, dropout_seeds=seeds)
        assert torch.equal(a, b)
        # an image does not depend on its batch: alone, or in another order, it is the same
        alone = torch.cat([g(x[i:i + 1], dropout_seeds=seeds[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(alone, a, rtol=0, atol=1e-5)
        perm = torch.tensor([2, 0, 3, 1])
        torch.testing.assert_close(g(x[perm], dropout_seeds=seeds[perm]), a[perm], rtol=0, atol=1e-5)
        # different seeds, different masks
        assert not torch.allclose(g(x, dropout_seeds=seeds + 1), a)


# -- the authors' state dicts (made by tests/fakes.py from SPEC section 4) ---------------------
@pytest.fixture(scope="module")
def authors_g128():
    torch.manual_seed(0)
    return authors_generator_state(128)


def test_authors_generator_mapping(authors_g128):
    g = authors.load_authors_generator(authors_g128, 128, "G.pth")
    ours = g.state_dict()
    assert torch.equal(ours["blocks.1.c2.bn.running_mean"], authors_g128["convT5_bn.running_mean"])
    assert torch.equal(ours["blocks.5.c3.conv.weight"], authors_g128["convT18.weight"])
    assert torch.equal(ours["transitions.5.conv.weight"], authors_g128["transition6.weight"])
    assert torch.equal(ours["transition0.bn.weight"], authors_g128["transition0_bn.weight"])
    # every one of their tensors lands somewhere, and nothing of ours is left unset
    assert len(ours) == len(authors_g128)
    # DataParallel prefixes are accepted; f is read from transition0 when not given
    prefixed = {f"module.{k}": v for k, v in authors_g128.items()}
    assert authors.load_authors_generator(prefixed, None, "G.pth").embedding_dim == 128


def test_authors_generator_mismatch_names_first_bad_key(authors_g128):
    bad = dict(authors_g128)
    bad["convT19.weight"] = torch.zeros(1)
    with pytest.raises(UserError, match=r"G\.pth.*unexpected key 'convT19\.weight'"):
        authors.load_authors_generator(bad, 128, "G.pth")
    bad = dict(authors_g128)
    bad["convT7.weight"] = torch.zeros(304, 300, 3, 3)
    with pytest.raises(UserError, match=r"'convT7\.weight' has shape \(304, 300, 3, 3\)"):
        authors.load_authors_generator(bad, 128, "G.pth")
    bad = {k: v for k, v in authors_g128.items() if k != "convT12_bn.running_var"}
    with pytest.raises(UserError, match=r"missing key 'convT12_bn\.running_var'"):
        authors.load_authors_generator(bad, 128, "G.pth")
    with pytest.raises(UserError, match="--embedding-dim is 512"):
        authors.load_authors_generator(authors_g128, 512, "G.pth")
    bad = dict(authors_g128)
    bad["convT3_bn.weight"] = torch.full_like(bad["convT3_bn.weight"], float("nan"))
    with pytest.raises(UserError, match="'convT3_bn.weight' holds NaN"):
        authors.load_authors_generator(bad, 128, "G.pth")


def test_authors_autoencoder_mapping():
    torch.manual_seed(0)
    sd = authors_autoencoder_state(128)
    enc = authors.load_authors_encoder(sd, 128, "AE.pth")  # decoder keys ignored
    assert torch.equal(enc.state_dict()["layers.12.conv.weight"], sd["conv13.weight"])
    ae = authors.load_authors_autoencoder(sd, 128, "AE.pth")
    assert torch.equal(ae.decoder.state_dict()["layers.0.bn.running_var"], sd["convT1_bn.running_var"])
    assert count_parameters(ae) == AE_PARAMS[128]
    bad = {k: v for k, v in sd.items() if k != "conv4.bias"}
    with pytest.raises(UserError, match=r"AE\.pth: audio encoder: missing key 'conv4\.bias'"):
        authors.load_authors_encoder(bad, 128, "AE.pth")


def test_authors_discriminator_mapping():
    torch.manual_seed(0)
    sd = authors_discriminator_state(512)
    d = authors.load_authors_discriminator(sd, 512, "D.pth")
    assert torch.equal(d.state_dict()["judge.conv.weight"], sd["conv13.weight"])
    sd["conv2.bias"] = torch.zeros(192)  # their D has no conv bias: a bias is a mismatch
    with pytest.raises(UserError, match="unexpected key 'conv2.bias'"):
        authors.load_authors_discriminator(sd, 512, "D.pth")
