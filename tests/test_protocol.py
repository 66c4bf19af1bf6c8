import dataclasses
import json

import pytest
from click.testing import CliRunner

from s2i_bench.cli import main
from s2i_bench.errors import UserError
from s2i_bench.protocol import available_protocols, load_protocol, protocol_from_dict


def test_shipped_protocols_load():
    assert {"vegas5", "synth", "tiny"} <= set(available_protocols())
    p = load_protocol("vegas5")
    assert p.class_keys == ("baby_cry", "dog", "rail_transport", "fireworks", "water_flowing")
    assert p.training.epochs == 4000 and p.training.d_every_epochs == 5
    assert (p.metrics.window_start, p.metrics.window_end, p.metrics.moving_average) == (500, 4000, 50)
    assert p.metrics.skip_after_d_update == 2 and p.metrics.skip_fill == 5
    assert p.audio.sample_rate == 16000 and p.audio.n_mels == 128 and p.audio.frames_per_segment == 100
    assert dataclasses.is_dataclass(p)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"


def test_vegas10_is_vegas5_with_all_ten_classes(tmp_path):
    """A protocol beyond VEGAS-5, as a file only: parsed, validated, and usable by `prepare`'s
    class matching; everything but the classes is the paper's."""
    base, p = load_protocol("vegas5"), load_protocol("vegas10")
    assert p.extends == "vegas5" and len(p.class_keys) == 10 and len(set(p.class_keys)) == 10
    assert p.class_keys[:5] == base.class_keys and p.classes[:5] == base.classes
    for part in ("audio", "image", "split", "training", "metrics", "classifiers", "model", "data"):
        assert getattr(p, part) == getattr(base, part), part
    assert p.fingerprint != base.fingerprint
    for folder, key in [("Chainsaw", "chainsaw"), ("playing drum kit", "drum"), ("Helicopter", "helicopter"),
                        ("printer-printing", "printer"), ("SNORING", "snoring"), ("baby crying", "baby_cry")]:
        assert p.match_class(folder) == key, folder
    aliases = [a.lower() for c in p.classes for a in (c.key, c.name, *c.aliases)]
    owners = {}
    for c in p.classes:
        for a in {x.lower().replace("_", " ").replace("-", " ") for x in (c.key, c.name, *c.aliases)}:
            assert owners.setdefault(a, c.key) == c.key, f"alias {a!r} of two classes"
    assert aliases
    assert protocol_from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_every_shipped_protocol_parses_and_names_its_sources():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "protocols"
    for path in sorted(folder.glob("*.toml")):
        p = load_protocol(path.stem)
        assert p.name == path.stem and p.class_keys and p.version
        text = path.read_text()
        if p.name not in ("tiny", "synth"):  # the real datasets' facts come with their sources
            assert "Source" in text or "Sec." in text, path


def test_extends_overrides_only_what_it_names():
    base, synth = load_protocol("vegas5"), load_protocol("synth")
    assert synth.extends == "vegas5" and synth.name == "synth"
    assert synth.audio == base.audio and synth.classes == base.classes
    assert synth.training.epochs != base.training.epochs
    assert synth.training.lr_d == base.training.lr_d  # not overridden: inherited
    tiny = load_protocol("tiny")
    assert tiny.model.profile == "small" and tiny.extends == "synth"


def test_roundtrip_through_dict():
    p = load_protocol("synth")
    q = protocol_from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p and q.fingerprint == p.fingerprint
    assert protocol_from_dict(p.to_dict()) == p  # tuples as well as JSON lists (worker processes)
    assert load_protocol("vegas5").fingerprint != p.fingerprint


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('extends = "vegas5"\nname = "mine"\nversion = "1"\n[training]\nepochz = 3\n')
    with pytest.raises(UserError) as e:
        load_protocol(str(f))
    msg = str(e.value)
    assert "training.epochz" in msg and str(f) in msg and "training.epochs" in msg


def test_unknown_protocol_name_suggests():
    with pytest.raises(UserError, match="did you mean 'vegas5'"):
        load_protocol("vegas4")


def test_bad_value_type(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('extends = "tiny"\n[training]\nepochs = "many"\n')
    with pytest.raises(UserError, match="training.epochs: expected an integer"):
        load_protocol(str(f))


def test_pool_split_must_not_be_the_scored_test_split(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('extends = "tiny"\n[classifiers]\npool_split = "test"\n')
    with pytest.raises(UserError, match="classifiers.pool_split"):
        load_protocol(str(f))


def test_match_class_aliases():
    p = load_protocol("vegas5")
    assert p.match_class("Baby crying") == "baby_cry"
    assert p.match_class("RAIL-transport") == "rail_transport"
    assert p.match_class("cat") is None


def test_cli_unknown_protocol_is_one_line_no_traceback(tmp_path):
    csv = tmp_path / "s.csv"
    csv.write_text("epoch,d_update,baby_cry\n0,1,0.1\n")
    r = CliRunner().invoke(main, ["metrics", str(csv), "--protocol", "vegass5"])
    assert r.exit_code == 2
    assert "did you mean 'vegas5'" in r.output and "Traceback" not in r.output


def test_cli_help_lists_every_command():
    r = CliRunner().invoke(main, ["--help"])
    for cmd in ["synth", "prepare", "audit", "train-baseline", "pool", "label", "train-classifiers",
                "metrics", "score", "export-sounds", "report", "demo"]:
        assert cmd in r.output


def test_scored_splits_reported_split_first():
    p = load_protocol("tiny")
    assert p.scoring.scored_splits == (p.scoring.split, p.scoring.selection_split)
    assert dataclasses.replace(p.scoring, selection_split="").scored_splits == (p.scoring.split,)
