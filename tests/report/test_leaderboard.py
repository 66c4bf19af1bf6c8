"""`s2i-bench leaderboard` and `bundle-results`: the boards (grouped by what the systems were
scored with), the statistics against reference implementations (HELM's win rate by ranks,
Holm against statsmodels, the normal test against scipy, the stratified bootstrap against a
direct loop and by its measured coverage), a leaderboard built from a scored run plus two
bundles made here (one tampered: refused), the same bytes twice, and the page in headless
Chromium (offline, its policy, sorting, provenance links, names shown as text).

The README's screenshot (docs/images/leaderboard.png) comes from the browser test:
S2I_BENCH_SCREENSHOT=docs/images/leaderboard.png, with S2I_BENCH_BOARD=<a leaderboard folder>
to shoot that board (the demo's) instead of the test's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from fakes import headless_chromium, make_scored_system, need_browser, run_cli
from s2i_bench.report import leaderboard_stats as S
from s2i_bench.report.leaderboard import build_leaderboard
from s2i_bench.report.results_bundle import bundle_results
from s2i_bench.scoring.decisions import encode_decisions
from s2i_bench.scoring.records import Record, checksum


def _edit_bundle(src: Path, dst: Path, edit) -> Path:
    """A copy of a bundle whose records `edit` changed, with every checksum and hash recomputed."""
    import zipfile

    with zipfile.ZipFile(src) as z:
        m = {n: z.read(n) for n in z.namelist()}
    recs = [json.loads(line) for line in m["records.jsonl"].decode().splitlines()]
    for r in recs:
        edit(r)
        r["checksum"] = checksum(r)
    m["records.jsonl"] = "".join(json.dumps(r) + "\n" for r in recs).encode()
    manifest = json.loads(m["manifest.json"])
    for entry, r in zip(manifest["records"], recs):
        entry["checksum"] = r["checksum"]
    manifest["files"] = {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in m.items()
                         if n != "manifest.json"}
    m["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in m.items():
            z.writestr(n, b)
    return dst


def _inflate(r: dict) -> None:
    k = next(iter(r["classes"]))
    r["classes"][k]["raw_share"] = min(1.0, r["classes"][k]["raw_share"] + 1 / r["classes"][k]["n_images"])
    r["mean"]["raw_share"] = float(np.mean([c["raw_share"] for c in r["classes"].values()]))


@pytest.fixture(scope="module")
def systems(tmp_path_factory) -> dict[str, Path]:
    """Fake scored runs: alpha > beta (one board), gamma (other classifiers: another board),
    delta (no image metrics: joins alpha's board), and a name made of HTML."""
    root = tmp_path_factory.mktemp("systems")
    out = {"alpha": make_scored_system(root, "alpha", 0.7), "beta": make_scored_system(root, "beta", 0.2),
           "gamma": make_scored_system(root, "gamma", 0.5, bundle_sha="c" * 64),
           "delta": make_scored_system(root, "delta", 0.45, feature_space=None, sheet=False),
           "evil": make_scored_system(root, '<img src=x id="evil">', 0.3)}
    bundle_results(out["alpha"], root / "alpha.zip")
    out["alpha.zip"] = root / "alpha.zip"
    return out


# -- the statistics --------------------------------------------------------------------------------------------
def test_win_rate_is_helms_average_rank():
    from scipy.stats import rankdata

    metrics = [S.BoardMetric("up", "up", False, None), S.BoardMetric("down", "down", True, None),
               S.BoardMetric("lonely", "lonely", False, None)]
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 8))
        up, down = rng.integers(0, 4, n).astype(float), rng.integers(0, 4, n).astype(float)  # many ties
        values = {f"s{i}": {"up": up[i], "down": down[i], "lonely": 1.0 if i == 0 else None} for i in range(n)}
        got = S.win_rates(values, metrics)
        ref_up = (rankdata(up) - 1) / (n - 1)  # average ranks: ties count half
        ref_down = (rankdata(-down) - 1) / (n - 1)
        for i in range(n):
            assert got[f"s{i}"]["up"] == pytest.approx(ref_up[i])
            assert got[f"s{i}"]["down"] == pytest.approx(ref_down[i])
            assert "lonely" not in got[f"s{i}"]  # one system has it: skipped, as HELM does
            assert got[f"s{i}"]["mean"] == pytest.approx((ref_up[i] + ref_down[i]) / 2)


def test_unpaired_p_is_the_normal_test_and_holds_its_size():
    from scipy.stats import norm

    z = norm.ppf(0.975)
    p = S.unpaired_p(0.5, [0.5 - 0.1 * z, 0.5 + 0.1 * z], 0.2, [0.2 - 0.05 * z, 0.2 + 0.05 * z])
    assert p == pytest.approx(2 * norm.sf(0.3 / np.hypot(0.1, 0.05)), rel=1e-9)
    assert S.unpaired_p(1.0, None, 0.0, [0, 1]) is None
    rng = np.random.default_rng(1)  # under H0 (equal means, known se), p < 0.05 about 5% of the time
    a, b = rng.normal(0, 0.1, 4000), rng.normal(0, 0.2, 4000)
    rejected = np.mean([S.unpaired_p(x, [x - 0.1 * z, x + 0.1 * z], y, [y - 0.2 * z, y + 0.2 * z]) < 0.05
                        for x, y in zip(a, b)])
    assert 0.04 < rejected < 0.06, rejected


def _record(informative: np.ndarray, n_sounds: int, keys) -> Record:
    """A minimal record of (K, N) decisions, class by class (`keys`, n_sounds each), unchecked."""
    classes = {}
    for c, k in enumerate(keys):
        sl = slice(c * n_sounds, (c + 1) * n_sounds)
        classes[k] = {"n_sounds": n_sounds, "n_images": n_sounds * informative.shape[0],
                      "raw_share": float(informative[:, sl].mean())}
    ids = [f"{k}_{i}" for k in keys for i in range(n_sounds)]
    return Record({"kind": "informativity", "classes": classes, "decisions": encode_decisions(ids, informative),
                   "mean": {"raw_share": float(np.mean([c["raw_share"] for c in classes.values()])),
                            "classes": list(keys)}})


def test_decision_interval_is_the_stratified_bootstrap_of_the_class_mean():
    keys = ["a", "b", "c"]
    rng = np.random.default_rng(2)
    r = _record(rng.random((2, 3 * 7)) < 0.4, 7, keys)
    weights = {k: rng.multinomial(7, np.full(7, 1 / 7), size=50).astype(float) for k in keys}
    reps = S.decision_replicates(r, "informative", weights)
    d = r.decisions()["informative"].astype(float)
    for b in range(50):  # the equations, one replicate at a time
        shares = []
        for c, k in enumerate(keys):
            per_sound = d[:, 7 * c: 7 * (c + 1)].mean(axis=0)
            shares.append(np.repeat(per_sound, weights[k][b].astype(int)).mean())
        assert reps[b] == pytest.approx(np.mean(shares))


def test_decision_interval_covers_the_true_mean_about_95_percent():
    """Coverage measured: 300 simulated scorings of five classes with known informative shares."""
    keys, n, p = ["a", "b", "c", "d", "e"], 30, np.array([0.1, 0.3, 0.5, 0.7, 0.25])
    metric = next(m for m in S.board_metrics() if m.key == "raw_share")
    rng = np.random.default_rng(3)
    hits = 0
    trials = 300
    for t in range(trials):
        r = _record(rng.random((1, 5 * n)) < np.repeat(p, n), n, keys)
        lo, hi = S.interval(r, metric, seed=t, n_boot=400)
        hits += lo <= p.mean() <= hi
    assert 0.91 <= hits / trials <= 0.985, hits / trials  # binomial sd at 0.95: 0.013


def test_pairs_are_paired_on_the_same_sounds_and_holm_adjusted(systems):
    from statsmodels.stats.multitest import multipletests

    from s2i_bench.scoring import records

    recs = {n: records.read(systems[n] / "metric-informativity.jsonl")[-1] for n in ("alpha", "beta", "delta")}
    metrics = [m for m in S.board_metrics() if any(m.value(r) is not None for r in recs.values())]
    values = {n: {m.key: m.value(r) for m in metrics} for n, r in recs.items()}
    cis = {n: {m.key: S.interval(r, m, seed=0, n_boot=200) for m in metrics} for n, r in recs.items()}
    pairs = S.pairwise(recs, values, cis, metrics, seed=0, n_boot=200)
    raw = {(p["a"], p["b"]): p for p in pairs if p["metric"] == "raw_share"}
    assert raw[("alpha", "beta")]["test"].startswith("paired bootstrap")
    assert raw[("alpha", "beta")]["significant"] and raw[("alpha", "beta")]["better"] == "alpha"
    fid = [p for p in pairs if p["metric"] == "fid"]
    assert [(p["a"], p["b"]) for p in fid] == [("alpha", "beta")]  # delta has no FID
    assert fid[0]["test"].startswith("unpaired") and fid[0]["better"] == "alpha"  # lower FID is better
    for m in metrics:
        tested = [p for p in pairs if p["metric"] == m.key and p["p_value"] is not None]
        if tested:
            ref = multipletests([p["p_value"] for p in tested], method="holm")[1]
            assert [p["p_holm"] for p in tested] == pytest.approx(list(ref))
    same = S.paired_p_values("alpha", recs["alpha"], "alpha2", recs["alpha"], seed=0, n_boot=200)
    assert same["raw"] == 1.0  # a system against itself


def test_audited_share_shows_only_when_a_record_has_one(systems):
    from s2i_bench.scoring import records

    r = records.read(systems["alpha"] / "metric-informativity.jsonl")[-1]
    assert "audited_share" not in [m.key for m in S.board_metrics() if m.value(r) is not None]
    if not hasattr(Record, "audited_ci"):
        pytest.skip("this s2i-bench's records carry no audit block (no Record.audited_ci)")
    audited = Record({**r.to_dict(), "audit": {"mean": {"audited_share": 0.41, "audited_ci": [0.3, 0.52]}}})
    metric = next(m for m in S.board_metrics() if m.key == "audited_share")
    assert metric.value(audited) == 0.41 and S.interval(audited, metric, seed=0) == [0.3, 0.52]


# -- the leaderboard ---------------------------------------------------------------------------------------------
def test_boards_by_identity_say_why_and_rank_by_win_rate(systems, tmp_path):
    doc = build_leaderboard([systems[n] for n in ("alpha", "beta", "gamma", "delta")], tmp_path / "board",
                            n_boot=200)
    assert len(doc["boards"]) == 2
    one, two = doc["boards"]
    names = [s["name"] for s in one["systems"]]
    assert set(names) == {"alpha", "beta", "delta"} and names[0] == "alpha" and names[-1] == "beta"
    assert one["identity"]["feature_space"] == "f" * 64  # delta (no image metrics) joined it
    assert [s["name"] for s in two["systems"]] == ["gamma"]
    assert "classifiers (bbbbbbbbbbbb here, cccccccccccc there)" in one["why"][0]
    assert one["protocol_check"].startswith("pinned: identical to protocols/tiny.toml")
    alpha = one["systems"][0]
    lo, hi = alpha["intervals"]["raw_share"]
    assert lo <= alpha["values"]["raw_share"] <= hi and alpha["values"]["fid"] is not None
    out = tmp_path / "board"
    for table in ("systems", "win-rates", "pairs"):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"board-1-{table}.{ext}").is_file()
    header = (out / "tables" / "board-1-systems.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["rank", "system", "origin", "epoch", "win_rate"] and "raw_share_low" in header
    prov = json.loads((out / "systems" / "alpha.json").read_text())
    assert prov["run_options"]["seed"] == 0 and prov["on_boards"][0]["epoch"] == 1
    assert "audited_share" not in [m["key"] for m in one["metrics"]]


def test_same_inputs_same_bytes(systems, tmp_path):
    inputs = [systems["alpha"], systems["beta"], systems["alpha.zip"]]
    for name in ("one", "two"):
        build_leaderboard(inputs, tmp_path / name, n_boot=200)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) > 10
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    text = (tmp_path / "one" / "board.json").read_text()
    assert "alpha (alpha)" in text  # the run and its bundle: one name each


def test_leaderboard_from_a_scored_run_and_two_bundles_one_tampered(scored_tiny_run, tmp_path):
    """The acceptance: a run scored by the real chain, and two bundles made here with its
    identity (same protocol, store, classifiers), one of them tampered and rehashed."""
    from s2i_bench.scoring import records

    real = records.read(scored_tiny_run["run"] / "metric-informativity.jsonl")[-1]
    made = {}
    for name, level in (("submitted", 0.6), ("forged", 0.3)):
        run = make_scored_system(tmp_path / "runs", name, level, store_hash=real.store_hash,
                                 bundle_sha=real.classifiers_sha256, n_sounds=real.n_sounds(real.class_keys[0]))
        run_cli("bundle-results", run, "--out", tmp_path / f"{name}.zip").ok()
        made[name] = tmp_path / f"{name}.zip"
    tampered = _edit_bundle(made["forged"], tmp_path / "forged-x.zip", _inflate)
    board = tmp_path / "board"
    inputs = [scored_tiny_run["run"], made["submitted"], tampered]
    run_cli("leaderboard", *inputs, "--out", board).refused("forged-x.zip", "bundle refused", "edited or damaged")
    assert not board.exists()
    result = run_cli("leaderboard", *inputs, "--out", board, "--skip-refused", "--bootstrap", "200").ok()
    assert "refused: bundle refused" in result.output
    doc = json.loads((board / "board.json").read_text())
    assert len(doc["boards"]) == 1
    shown = {s["name"]: s for s in doc["boards"][0]["systems"]}
    assert set(shown) == {"a", "submitted"} and shown["submitted"]["verified"] and not shown["a"]["verified"]
    assert doc["refused"][0]["input"] == "forged-x.zip"
    page = (board / "index.html").read_text()
    assert "Refused bundles" in page and "forged-x.zip" in page and "bundle ✓" in page
    prov = json.loads((board / "systems" / "submitted.json").read_text())
    assert prov["bundle"]["sha256"] == hashlib.sha256(made["submitted"].read_bytes()).hexdigest()
    assert len(prov["bundle"]["verified"]) == 6


def test_bare_leaderboard_uses_the_embedded_default_and_keeps_the_users_files(tmp_path, monkeypatch):
    work = tmp_path / "demo-work"
    make_scored_system(work / "runs" / "f16", "seed-0", 0.6)
    make_scored_system(work / "runs" / "f16", "seed-1", 0.4)
    refs = make_scored_system(tmp_path / "refs", "reference:random-frame", 0.1, sheet=False)
    (work / "references").mkdir()
    (work / "references" / "metric-informativity.jsonl").write_bytes((refs / "metric-informativity.jsonl").read_bytes())
    monkeypatch.setenv("S2I_BENCH_DEMO_WORK", str(work))
    result = run_cli("leaderboard", "--bootstrap", "100").ok()
    assert "f16/seed-0" in result.output and "reference:random-frame" in result.output
    board = work / "leaderboard"
    assert (board / "index.html").is_file()
    (board / "mine.txt").write_text("the user's")  # a rebuild keeps the user's file, replaces its own
    run_cli("leaderboard", "--bootstrap", "100").ok()
    assert (board / "mine.txt").read_text() == "the user's"
    run_cli("leaderboard", work / "runs" / "f16", "--out", work / "runs").refused("did not write", "--overwrite")


def test_the_page_is_offline_and_escapes_every_name(systems, tmp_path):
    build_leaderboard([systems["alpha"], systems["evil"], systems["gamma"]], tmp_path / "b", n_boot=200)
    page = (tmp_path / "b" / "index.html").read_text()
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; script-src \'self\'' in page
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(not re.match(r"^[a-z]+:", r) and not r.startswith("//") for r in refs), refs
    assert "<script>" not in page and not re.search(r"<[^>]*\s(?:style|on[a-z]+)=", page)  # nothing inline
    assert 'id="evil"' not in page and "&lt;img src=x id=&quot;evil&quot;&gt;" in page


# -- in the browser --------------------------------------------------------------------------------------------
def _column(driver, table_id: str, col: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows)"
        ".map(r => r.cells[arguments[1]].dataset.sort)", table_id, col)


def _click_header(driver, table_id: str, label: str) -> int:
    buttons = driver.find_elements("css selector", f"#{table_id} thead button.sort")
    labels = [b.text for b in buttons]
    i = next(i for i, t in enumerate(labels) if t.startswith(label))
    buttons[i].click()
    return i


def test_the_page_sorts_in_chromium_under_its_policy_and_links_provenance(systems, tmp_path):
    need_browser()
    board = tmp_path / "board"
    build_leaderboard([systems[n] for n in ("alpha", "beta", "delta", "evil", "gamma")], board, n_boot=200)
    driver = headless_chromium(1400, 1000)
    try:
        driver.get((board / "index.html").as_uri())
        assert driver.execute_script("return document.documentElement.classList.contains('sorting')")  # script ran
        assert driver.execute_script(
            "return getComputedStyle(document.querySelector('header')).backgroundColor") == "rgb(31, 42, 68)"
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # no policy violation
        table = "board-1-systems"
        col = _click_header(driver, table, "FID")  # lower is better: the first click sorts ascending
        fid = _column(driver, table, col)
        numbers = [float(v) for v in fid if v]
        assert numbers == sorted(numbers) and fid[-1] == ""  # delta has no FID: last
        _click_header(driver, table, "FID")
        numbers = [float(v) for v in _column(driver, table, col) if v]
        assert numbers == sorted(numbers, reverse=True) and _column(driver, table, col)[-1] == ""
        col = _click_header(driver, table, "system")
        names = _column(driver, table, col)
        assert names == sorted(names, key=str.lower) or names == sorted(names)
        cell = driver.find_element("css selector", f"#{table} tbody tr td.name")
        assert "<img" in driver.find_element("id", table).text and not driver.find_elements("id", "evil")
        link = cell.find_element("tag name", "a").get_attribute("href")
        assert link.startswith(board.as_uri() + "/systems/") and link.endswith(".json")
        assert Path(link[len("file://"):]).is_file()
        cell.find_element("tag name", "a").click()
        assert '"system"' in driver.find_element("tag name", "body").text
        shot = os.environ.get("S2I_BENCH_SCREENSHOT")
        if shot:  # the README's screenshot (S2I_BENCH_BOARD: another board to shoot, e.g. the demo's)
            other = os.environ.get("S2I_BENCH_BOARD")
            driver.set_window_size(1500, 1150)
            driver.get((Path(other).resolve() / "index.html").as_uri() if other else (board / "index.html").as_uri())
            time.sleep(0.5)
            driver.save_screenshot(shot)
    finally:
        driver.quit()
