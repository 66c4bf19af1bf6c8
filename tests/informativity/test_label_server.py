"""The labelling page, driven in headless Chromium (Debian's chromium + chromium-driver, through
Selenium with no browser download): the keyboard, undo, a reload, the server killed and
restarted, two annotators at once; then the sets from the annotations, every label exactly once;
a foreign page (another origin of this machine) that tries to label through the annotator's
browser; a class name made of HTML, shown as text under the page's Content-Security-Policy.
Plus the storage, agreement (against scikit-learn and the `krippendorff` package) and the token
without a browser (the other hostile requests: `test_faults_label_server.py`).

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
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fakes import install_fake_generators, write_fake_models
from s2i_bench.errors import UserError
from s2i_bench.informativity import annotations as A

CHROMIUM, CHROMEDRIVER = (shutil.which("chromium") or "/usr/bin/chromium",
                          shutil.which("chromedriver") or "/usr/bin/chromedriver")
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to see CSP reports
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


def _get(url: str, data: dict | None = None, token: str | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"X-S2I-Token": token} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode("utf-8", "replace"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace"), dict(e.headers)


def test_security_token_and_no_paths(pool_dir, tmp_path):
    """Every request needs the printed token (on 0.0.0.0 as on 127.0.0.1): the page in the query,
    the API in the X-S2I-Token header, never a cookie; image routes take pool ids only; bad
    requests write nothing."""
    pool = fresh_pool(pool_dir, tmp_path)
    server = Server(pool, "ann", "--host", "0.0.0.0")
    try:
        token = re.search(r"token=([A-Za-z0-9_-]+)", server.url).group(1)
        base = re.sub(r"//0\.0\.0\.0:", "//127.0.0.1:", server.url.split("?")[0])
        assert _get(base)[0] == 403
        assert _get(base + "api/current")[0] == 403
        assert _get(base + "api/current", token="wrong")[0] == 403
        assert _get(f"{base}api/current?token={token}")[0] == 403  # the API: the header only
        status, page, headers = _get(f"{base}?token={token}")
        assert status == 200 and token in page and not any(k.lower() == "set-cookie" for k in headers)
        status, body, _ = _get(base + "api/current", token=token)
        assert status == 200
        first = json.loads(body)["image"]["id"]
        assert _get(f"{base}image/{first}.png")[0] == 403
        assert _get(f"{base}image/{first}.png?token={token}")[0] == 200
        for bad in ("image/..%2F..%2Fpool.csv.png", "image/%2Fetc%2Fpasswd.png", "image/img999999.png"):
            assert _get(f"{base}{bad}?token={token}")[0] in (403, 404)
        assert _get(base + "api/action", {"op": "label", "image_id": "../../x", "label": 1}, token)[0] == 400
        assert _get(base + "api/action", {"op": "label", "image_id": first, "label": 7}, token)[0] == 400
        assert _get(base + "api/action", {"op": "label", "image_id": first, "label": 1})[0] == 403  # no token
        assert not A.log_path(pool, "ann").exists()  # nothing was written by the bad requests
        assert _get(base + "api/action", {"op": "label", "image_id": first, "label": 1}, token)[0] == 200
        assert labels_of(pool, "ann") == {first: 1}
    finally:
        server.stop()


# -- hostile pages, in the browser ------------------------------------------------------------------------
ATTACK = """<!DOCTYPE html><html><head><title>attacker</title></head><body><iframe name="sink"></iframe>
<script>
const T = 'http://127.0.0.1:__PORT__', IID = '__IID__', results = {};
const body = JSON.stringify({op: 'label', image_id: IID, label: 1});
async function attempt(name, f){
  try { const r = await f(); results[name] = r.type + ':' + r.status; } catch (e) { results[name] = 'error:' + e.name; }
}
function include(tag, url){
  return new Promise(done => {
    const e = document.createElement(tag);
    e.onload = () => done('load'); e.onerror = () => done('error'); setTimeout(() => done('timeout'), 4000);
    e.src = url; document.body.appendChild(e);
  });
}
function post(enctype, name, value){
  return new Promise(done => {
    const sink = document.querySelector('iframe');
    sink.onload = () => done('sent'); setTimeout(() => done('timeout'), 4000);
    const f = document.createElement('form');
    f.method = 'POST'; f.action = T + '/api/action'; f.enctype = enctype; f.target = 'sink';
    const i = document.createElement('input'); i.name = name; i.value = value; f.appendChild(i);
    document.body.appendChild(f); f.submit();
  });
}
(async () => {
  // "simple" requests: no preflight, the browser sends them as they are
  await attempt('nocors_text', () => fetch(T + '/api/action', {method: 'POST', mode: 'no-cors',
    headers: {'Content-Type': 'text/plain'}, body}));
  await attempt('nocors_form', () => fetch(T + '/api/action', {method: 'POST', mode: 'no-cors', credentials: 'include',
    headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body}));
  // the page's own request shape, which needs a preflight: refused before it is sent
  await attempt('cors_json', () => fetch(T + '/api/action', {method: 'POST',
    headers: {'Content-Type': 'application/json', 'X-S2I-Token': 'guess'}, body}));
  await attempt('cors_read', () => fetch(T + '/api/current'));
  results.img_image = await include('img', T + '/image/' + IID + '.png');
  results.img_api = await include('img', T + '/api/current');
  results.script_api = await include('script', T + '/api/action');
  // forms: text/plain can carry a JSON body
  results.form_text = await post('text/plain', '{"op":"label","image_id":"' + IID + '","label":1,"x":"', '"}');
  results.form_urlencoded = await post('application/x-www-form-urlencoded', 'op', 'label');
  document.title = 'done';
})();
</script></body></html>
"""


class Site:
    """A second origin: a plain http.server on another port of 127.0.0.1 (same site, other origin)."""

    def __init__(self, folder: Path):
        import functools
        import http.server

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_foreign_page_cannot_label_through_the_browser(pool_dir, tmp_path, monkeypatch):
    """The annotator has the page open; another page (another port of this machine: same site,
    other origin) sends every request a page may send without asking: each reaches the server,
    each is refused, nothing is labelled."""
    need_browser()
    from s2i_bench.informativity import label_server as LS
    from s2i_bench.informativity.label_server import Session, serving
    from s2i_bench.informativity.pool import open_pool

    answered = []  # (method, path, refusal status or None) of every request the server saw
    check = LS.Guard.check

    def spy(self, scope):
        out = check(self, scope)
        answered.append((scope["method"], scope["path"], out and out[0]))
        return out

    monkeypatch.setattr(LS.Guard, "check", spy)
    pool = fresh_pool(pool_dir, tmp_path)
    session = Session(open_pool(pool), "ann")
    with serving(session) as (url, _):
        port = re.search(r":(\d+)/", url).group(1)
        iid = session.next_id(session.state())
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "attack.html").write_text(ATTACK.replace("__PORT__", port).replace("__IID__", iid))
        site = Site(tmp_path / "site")
        driver = browser()
        try:
            driver.get(url)
            assert shown(driver) == iid
            mine = driver.current_window_handle
            driver.switch_to.new_window("tab")
            driver.get(site.url + "attack.html")
            deadline = time.time() + 30
            while driver.title != "done":
                assert time.time() < deadline, driver.execute_script("return results")
                time.sleep(0.05)
            results = driver.execute_script("return results")
            # nothing readable came back (Cross-Origin-Resource-Policy hides even the opaque answers)
            assert results["nocors_text"] in ("opaque:0", "error:TypeError"), results
            assert results["nocors_form"] in ("opaque:0", "error:TypeError"), results
            assert results["cors_json"] == "error:TypeError" and results["cors_read"] == "error:TypeError", results
            assert results["img_image"] == results["img_api"] == results["script_api"] == "error", results
            assert results["form_text"] in ("sent", "timeout") and results["form_urlencoded"] in ("sent", "timeout")
            time.sleep(0.2)
            assert not A.log_path(pool, "ann").exists(), A.read_log(A.log_path(pool, "ann"))
            # every one of them reached the server and was refused there
            foreign = answered[[p for _, p, _ in answered].index("/api/current") + 1:]
            assert [s for m, p, s in foreign if m == "POST"] == [403] * 4, foreign  # 2 fetches, 2 forms
            assert ("OPTIONS", "/api/action", 403) in foreign  # the preflight
            assert ("GET", f"/image/{iid}.png", 403) in foreign and ("GET", "/api/current", 403) in foreign
            assert all(s == 403 for m, p, s in foreign if p.startswith("/api/")), foreign
            # the annotator's own page still works
            driver.close()
            driver.switch_to.window(mine)
            press(driver, "1")
            shown(driver, other_than=iid)
            assert labels_of(pool, "ann") == {iid: 1}
        finally:
            driver.quit()
            site.stop()


HOSTILE = """<img src=x onerror="window.pwned=1;document.title='pwned'"><script>window.pwned=2</script><b>bold</b>"""


def test_html_in_a_class_name_is_shown_as_text(pool_dir, tmp_path):
    """A class name made of HTML is text on the page and runs nothing; the page works under its
    Content-Security-Policy (handlers attached from the script, no report of a violation), and
    HTML put into it anyway (a future bug) runs no script either."""
    need_browser()
    from s2i_bench.informativity.label_server import Session, serving
    from s2i_bench.informativity.pool import open_pool

    pool = fresh_pool(pool_dir, tmp_path)
    session = Session(open_pool(pool), "ann")
    session.names = {key: f"{HOSTILE} {key}" for key in session.names}
    with serving(session) as (url, _):
        driver = browser()
        try:
            driver.get(url)
            first = shown(driver)
            classes = driver.find_element("id", "classes")
            assert not classes.find_elements("css selector", "img, script, b")
            assert classes.text.count(HOSTILE) == len(session.names)
            assert HOSTILE in driver.find_element("id", "pos").text
            # the buttons (no onclick=: handlers attached by the script)
            driver.find_element("id", "bs").click()
            second = shown(driver, other_than=first)
            driver.find_element("id", "b1").click()
            shown(driver, other_than=second)
            assert labels_of(pool, "ann") == {second: 1}
            widths = driver.execute_script("return [...document.querySelectorAll('#classes .bar div')]"
                                           ".map(d => d.style.width)")
            assert len(widths) == len(session.names) and any(w not in ("", "0%") for w in widths), widths
            assert driver.execute_script("return document.getElementById('big').complete && "
                                         "document.getElementById('big').naturalWidth") > 0  # the image loads
            reports = [e["message"] for e in driver.get_log("browser")
                       if "Content Security Policy" in e["message"] or "Trusted Type" in e["message"]]
            assert not reports, reports
            # HTML put into the page anyway: refused (Trusted Types) or, if inserted, its handler blocked
            outcome = driver.execute_script(
                "try { document.getElementById('classes').insertAdjacentHTML('beforeend', arguments[0]);"
                " return 'inserted'; } catch (e) { return e.name; }", HOSTILE)
            time.sleep(0.5)
            assert outcome in ("TypeError", "inserted")
            assert driver.execute_script("return window.pwned === undefined") and driver.title != "pwned"
        finally:
            driver.quit()
