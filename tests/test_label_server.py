"""The labelling page, driven in headless Chromium (Debian's chromium + chromium-driver, through
Selenium with no browser download): the keyboard, undo, a reload, the server killed and
restarted, two annotators at once; then the sets from the annotations, every label exactly once.
Plus the storage, agreement (against scikit-learn and the `krippendorff` package) and security
without a browser.

Without Chromium the browser tests are skipped here with the line saying what to install; in CI
(`CI` set, as `.ci/run` does) a missing browser fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from classifier_helpers import install_fake_generators, write_fake_models
from s2i_bench.errors import UserError
from s2i_bench.informativity import annotations as A

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAVE_BROWSER = Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()
INSTALL = "apt-get install -y chromium chromium-driver (and pip install selenium)"


def need_browser():
    if HAVE_BROWSER:
        try:
            import selenium  # noqa: F401
            return
        except ImportError:
            pass
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests need Chromium and Selenium: {INSTALL}")
    pytest.skip(f"needs Chromium and Selenium: {INSTALL}")


def _make_pool(root: Path, fake_store, models: int, per_model: int) -> Path:
    from s2i_bench.informativity.pool import build_pool

    mp = pytest.MonkeyPatch()
    install_fake_generators(mp)
    try:
        build_pool(write_fake_models(root / "run", models), fake_store, root / "pool", per_model=per_model, seed=0)
    finally:
        mp.undo()
    return root / "pool"


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory, fake_store):
    return _make_pool(tmp_path_factory.mktemp("labelpool"), fake_store, 2, 2)  # 20 images


@pytest.fixture(scope="module")
def sets_pool(tmp_path_factory, fake_store):
    return _make_pool(tmp_path_factory.mktemp("setspool"), fake_store, 3, 4)  # 60: enough for the sets


def fresh_pool(pool_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "pool"
    shutil.copytree(pool_dir, out)
    return out


class Server:
    """`s2i-bench label-server` in its own process, on a free port."""

    def __init__(self, pool: Path, annotator: str, *extra: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "s2i_bench.cli", "label-server", str(pool), "--annotator",
                                      annotator, "--port", "0", *extra], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = ""
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("open "):
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"label-server ended: {self.proc.stderr.read()}")
        self.url = line.split(" ", 1)[1].strip()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,760", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def shown(driver, timeout: float = 10.0, other_than: str | None = None) -> str:
    """The image id the page shows (after it changed from `other_than`)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        iid = driver.execute_script("return document.body.dataset.imageId || ''")
        if iid and iid != other_than:
            return iid
        time.sleep(0.02)
    raise AssertionError(f"the page did not move on from {other_than}")


def press(driver, key: str):
    from selenium.webdriver.common.action_chains import ActionChains

    before = shown(driver)
    ActionChains(driver).send_keys(key).perform()
    return before


def labels_of(pool: Path, annotator: str) -> dict[str, int]:
    return A.state(A.read_log(A.log_path(pool, annotator))).labels


# -- in the browser --------------------------------------------------------------------------------
def test_label_with_the_keyboard_undo_reload_and_restart(pool_dir, tmp_path):
    need_browser()
    pool = fresh_pool(pool_dir, tmp_path)
    server = Server(pool, "ann")
    driver = browser()
    try:
        driver.get(server.url)
        shown(driver)  # the first image is up
        assert "Is this an interpretable picture of" in driver.page_source
        for secret in ("model", "epoch", "fakerun", "segment"):  # nothing that would bias the judgement
            assert secret not in driver.find_element("tag name", "main").text.lower()
        chosen = {}
        for i in range(4):
            iid = press(driver, "1" if i % 2 == 0 else "0")
            chosen[iid] = 1 if i % 2 == 0 else 0
            shown(driver, other_than=iid)
        assert labels_of(pool, "ann") == chosen
        # undo: the last label goes, its image comes back
        last = list(chosen)[-1]
        before = press(driver, "u")
        assert shown(driver, other_than=before) == last and last not in labels_of(pool, "ann")
        chosen.pop(last)
        iid = press(driver, "1")
        chosen[iid] = 1
        shown(driver, other_than=iid)
        # a reload continues where the annotator stopped
        here = shown(driver)
        driver.refresh()
        assert shown(driver) == here
        # the server killed mid-way: nothing lost, a restart continues
        server.kill()
        server = Server(pool, "ann")
        driver.get(server.url)
        assert shown(driver) == here and labels_of(pool, "ann") == chosen
        shot = os.environ.get("S2I_BENCH_SCREENSHOT")
        if shot:  # the README's screenshot comes from here
            time.sleep(0.5)  # the image has loaded
            driver.save_screenshot(shot)
        # label everything else, timing the page
        total = len(A.order(__import__("s2i_bench.informativity.pool", fromlist=["open_pool"]).open_pool(pool), "ann"))
        started = time.perf_counter()
        n = 0
        while "Every image is labelled" not in driver.find_element("tag name", "body").text:
            iid = press(driver, "0" if n % 3 else "1")
            chosen[iid] = 0 if n % 3 else 1
            n += 1
            deadline = time.time() + 10
            while driver.execute_script("return document.body.dataset.imageId") == iid and \
                    "Every image is labelled" not in driver.find_element("tag name", "body").text:
                assert time.time() < deadline
                time.sleep(0.01)
        per_image = (time.perf_counter() - started) / max(n, 1)
        (tmp_path / "timing.json").write_text(json.dumps({"images": n, "seconds_per_image": per_image}))
        print(f"label-server: {n} images labelled with the keyboard, {1000 * per_image:.0f} ms per image "
              f"({100 * per_image:.1f} s per 100)")
        assert labels_of(pool, "ann") == chosen and len(chosen) == total
    finally:
        driver.quit()
        server.stop()


def test_two_annotators_at_once_then_the_sets(sets_pool, tmp_path):
    need_browser()
    from s2i_bench.informativity.labels import label_pool
    from s2i_bench.informativity.pool import open_pool

    pool = fresh_pool(sets_pool, tmp_path)
    servers = [Server(pool, "ann", "--overlap", "1"), Server(pool, "bob", "--overlap", "1")]
    drivers = [browser(), browser()]
    try:
        for d, s in zip(drivers, servers):
            d.get(s.url)
        ids = open_pool(pool).table["image_id"].tolist()
        truth = dict(zip(ids, (np.arange(len(ids)) % 2).tolist()))
        done = {"ann": {}, "bob": {}}
        for step in range(len(ids)):  # interleaved: both write to the pool at the same time
            for d, name in zip(drivers, ("ann", "bob")):
                iid = shown(d)
                value = truth[iid] if name == "ann" or step % 5 else 1 - truth[iid]  # bob disagrees sometimes
                press(d, str(value))
                done[name][iid] = value
                if step < len(ids) - 1:
                    shown(d, other_than=iid)
        time.sleep(0.5)
        for name in ("ann", "bob"):
            events = A.read_log(A.log_path(pool, name))
            assert len([e for e in events if e["op"] == "label"]) == len(ids)  # every label exactly once
            assert labels_of(pool, name) == done[name]
    finally:
        for d in drivers:
            d.quit()
        for s in servers:
            s.stop()
    label_pool(pool, from_annotations=True)
    meta = json.loads((pool / "labels.json").read_text())
    assert meta["source"]["kind"] == "annotations" and meta["source"]["annotators"] == ["ann", "bob"]
    agreement = meta["agreement"]
    assert agreement["annotators"] == 2 and agreement["overall"]["statistic"] == "cohen_kappa"
    disagreements = sum(done["ann"][i] != done["bob"][i] for i in done["ann"])
    assert meta["ties"] and len(meta["ties"]) == disagreements  # two annotators who disagree: a tie, left out


# -- without a browser ------------------------------------------------------------------------------------
def test_order_is_seeded_and_interleaves_models_and_classes(pool_dir):
    from s2i_bench.informativity.pool import open_pool

    pool = open_pool(pool_dir)
    a, a2, b = A.order(pool, "ann"), A.order(pool, "ann"), A.order(pool, "bob")
    assert a == a2 and a != b and sorted(a) == sorted(pool.table["image_id"].tolist())
    table = pool.table.set_index("image_id")
    first = table.loc[a[:10]]
    assert first["class"].nunique() > 1 and first["model_id"].nunique() > 1
    overlap = A.order(pool, "ann", overlap=0.5, share=(1, 2))
    other = A.order(pool, "bob", overlap=0.5, share=(2, 2))
    common = set(overlap) & set(other)
    assert common and set(overlap) | set(other) == set(a)


def test_agreement_matches_sklearn_and_krippendorff():
    import pandas as pd
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, 60)
    y = np.where(rng.random(60) < 0.8, x, 1 - x)
    assert A.cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y))
    kr = pytest.importorskip("krippendorff")
    m = np.stack([x, y, np.where(rng.random(60) < 0.7, x, 1 - x)], axis=1).astype(float)
    m[rng.random(m.shape) < 0.15] = np.nan
    assert A.krippendorff_alpha(m) == pytest.approx(kr.alpha(reliability_data=m.T, level_of_measurement="nominal"))
    votes = pd.DataFrame([{"image_id": f"i{i}", "label": int(v), "annotator": a}
                          for i in range(60) for a, v in (("a", x[i]), ("b", y[i]))])
    out = A.agreement(votes, {f"i{i}": "c" for i in range(60)}, n_boot=200)
    assert out["overall"]["value"] == pytest.approx(cohen_kappa_score(x, y))
    lo, hi = out["overall"]["ci"]
    assert lo <= out["overall"]["value"] <= hi


def test_bad_input_is_one_line(pool_dir, tmp_path):
    from click.testing import CliRunner

    from s2i_bench.cli import main

    def run(*args):
        return CliRunner().invoke(main, ["label-server", *map(str, args)])

    for args, needle in [((tmp_path / "nope", "--annotator", "a"), "does not exist"),
                         ((tmp_path, "--annotator", "a"), "pool"),
                         ((pool_dir, "--annotator", "../evil"), "annotator name"),
                         ((pool_dir, "--annotator", "a", "--share", "3/2"), "--share")]:
        res = run(*args)
        assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, (args, res.output)
    from s2i_bench.informativity.label_server import bind

    sock = bind("127.0.0.1", 0)
    try:
        with pytest.raises(UserError, match="is in use"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()
    # a pool whose images changed since labelling began
    pool = fresh_pool(pool_dir, tmp_path)
    from s2i_bench.informativity.pool import open_pool

    p = open_pool(pool)
    iid = p.table["image_id"].iloc[0]
    A.append(pool, "ann", {"op": "label", "image_id": iid, "label": 1, "image_sha256": "0" * 64})
    res = run(pool, "--annotator", "ann")
    assert res.exit_code == 2 and "changed since ann labelled it" in res.output


def _get(url: str, data: dict | None = None, cookie: str | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json", **({"Cookie": cookie} if cookie else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode("utf-8", "replace"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace"), dict(e.headers)


def test_security_token_and_no_paths(pool_dir, tmp_path):
    """On another interface than this machine's, every request needs the printed token; image
    routes take pool ids only; bad requests write nothing."""
    pool = fresh_pool(pool_dir, tmp_path)
    server = Server(pool, "ann", "--host", "0.0.0.0")
    try:
        token = re.search(r"token=([A-Za-z0-9_-]+)", server.url).group(1)
        base = re.sub(r"//0\.0\.0\.0:", "//127.0.0.1:", server.url.split("?")[0])
        assert _get(base + "api/current")[0] == 403
        assert _get(base + "api/current?token=wrong")[0] == 403
        status, _, headers = _get(f"{base}?token={token}")
        assert status == 200
        cookie = headers.get("set-cookie", headers.get("Set-Cookie", "")).split(";")[0]
        status, body, _ = _get(base + "api/current", cookie=cookie)  # the cookie carries the token
        assert status == 200
        first = json.loads(body)["image"]["id"]
        for bad in ("image/..%2F..%2Fpool.csv.png", "image/%2Fetc%2Fpasswd.png", "image/img999999.png"):
            assert _get(base + bad, cookie=cookie)[0] in (403, 404)
        assert _get(base + "api/action", {"op": "label", "image_id": "../../x", "label": 1}, cookie)[0] == 400
        assert _get(base + "api/action", {"op": "label", "image_id": first, "label": 7}, cookie)[0] == 400
        assert _get(base + "api/action", {"op": "label", "image_id": first, "label": 1})[0] == 403  # no token
        assert not A.log_path(pool, "ann").exists()  # nothing was written by the bad requests
        assert _get(base + "api/action", {"op": "label", "image_id": first, "label": 1}, cookie)[0] == 200
        assert labels_of(pool, "ann") == {first: 1}
    finally:
        server.stop()
