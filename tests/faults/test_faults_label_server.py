"""Hostile requests to the labelling page (`s2i-bench label-server`), without a browser: what a
foreign web page, a DNS-rebinding name or a careless client can send, and what must come back.

Every request needs the session's token (header X-S2I-Token for the API, the query for the page
and its images), its Origin must be the page's own and its Host the bound one (403 otherwise); a
POST must be application/json (415); a body over the cap is refused from its Content-Length or
while it streams (413) without being held; JSON too deep is a 400, never a 500; every response
carries the security headers; the page never tells the model, the epoch or another annotator's
labels. The server runs in this process (a thread), on a pool made here.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import time
import tracemalloc
from pathlib import Path

import pytest

from fakes import install_fake_generators, write_fake_models
from s2i_bench.informativity import annotations as A
from s2i_bench.informativity import label_server as LS

CAP = LS.MAX_BODY


@pytest.fixture(scope="module")
def made_pool(tmp_path_factory, fake_store) -> Path:
    from s2i_bench.informativity.pool import build_pool

    root = tmp_path_factory.mktemp("faultpool")
    mp = pytest.MonkeyPatch()
    install_fake_generators(mp)
    try:
        build_pool(write_fake_models(root / "run", 2), fake_store, root / "pool", per_model=2, seed=0)  # 20 images
    finally:
        mp.undo()
    return root / "pool"


class Live:
    """A label-server on 127.0.0.1 (in a thread) and raw HTTP to it."""

    def __init__(self, url: str, token: str, pool: Path, session):
        self.url, self.token, self.pool, self.session = url, token, pool, session
        self.port = int(re.search(r":(\d+)/", url).group(1))
        self.host = f"127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None,
             token: bool = True) -> tuple[int, bytes, dict]:
        heads = {"Host": self.host}
        if token:
            heads["X-S2I-Token"] = self.token
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            heads["Content-Type"] = "application/json"
        heads.update(headers or {})
        heads = {k: v for k, v in heads.items() if v is not None}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, body=body, headers=heads)
            r = conn.getresponse()
            return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()

    def post(self, body, **kw):
        return self.call("POST", "/api/action", body, **kw)

    def log(self) -> bytes:
        path = A.log_path(self.pool, self.session.annotator)
        return path.read_bytes() if path.exists() else b""

    def first_id(self) -> str:
        status, body, _ = self.call("GET", "/api/current")
        assert status == 200, body
        return json.loads(body)["image"]["id"]


@pytest.fixture(scope="module")
def live(made_pool, tmp_path_factory):
    from s2i_bench.informativity.pool import open_pool

    pool = tmp_path_factory.mktemp("faultlive") / "pool"
    shutil.copytree(made_pool, pool)
    session = LS.Session(open_pool(pool), "ann")
    with LS.serving(session) as (url, token):
        yield Live(url, token, pool, session)


def raw(live: Live, head: bytes, parts=(), read_first: bool = False) -> tuple[int, bytes]:
    """Send `head` then each of `parts` on one socket; the status and body that come back."""
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=20)
    try:
        sock.sendall(head)
        if read_first:  # the answer must come before any of the body is sent
            sock.settimeout(5)
            return _response(sock)
        for part in parts:
            sock.sendall(part)
        return _response(sock)
    finally:
        sock.close()


def _response(sock) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(head.split(b" ", 2)[1]), rest


def _post_head(live: Live, extra: str) -> bytes:
    return (f"POST /api/action HTTP/1.1\r\nHost: {live.host}\r\nX-S2I-Token: {live.token}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


# -- the token ---------------------------------------------------------------------------------------
def test_every_request_needs_the_token(live):
    iid = live.first_id()
    before = live.log()
    for method, path in [("GET", "/"), ("GET", "/api/current"), ("GET", f"/image/{iid}.png"),
                         ("GET", "/nothing-here"), ("POST", "/api/action"), ("OPTIONS", "/api/action")]:
        status, body, _ = live.call(method, path, {"op": "label", "image_id": iid, "label": 1}
                                    if method == "POST" else None, token=False)
        assert status == 403 and b"token" in body, (method, path, status)
        assert live.call(method, path, token=False, headers={"X-S2I-Token": "wrong"})[0] == 403
    # the API takes it from the header only (a foreign page cannot set one without a preflight)
    assert live.call("GET", f"/api/current?token={live.token}", token=False)[0] == 403
    assert live.post({"op": "label", "image_id": iid, "label": 1}, token=False)[0] == 403
    # odd values: not a 500
    assert live.call("GET", "/api/current", token=False, headers={"X-S2I-Token": "é\u00ff"})[0] == 403
    assert live.call("GET", f"/?token={live.token}&token={live.token}", token=False)[0] == 403
    # the printed address opens the page; its images take the token in the query; no cookie
    status, page, headers = live.call("GET", f"/?token={live.token}", token=False)
    assert status == 200 and b"s2i-token" in page and "set-cookie" not in headers
    status, png, headers = live.call("GET", f"/image/{iid}.png?token={live.token}", token=False)
    assert status == 200 and png.startswith(b"\x89PNG") and headers["content-type"] == "image/png"
    assert live.log() == before  # nothing was written


def test_post_must_be_json(live):
    iid = live.first_id()
    before = live.log()
    body = json.dumps({"op": "skip", "image_id": iid}).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "application/jsonx", "text/json", None):
        status, answer, _ = live.post(body, headers={"Content-Type": ctype})
        assert status == 415 and b"application/json" in answer, (ctype, status)
    assert live.log() == before
    status, _, _ = live.post(body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200 and b'"skip"' in live.log()[len(before):]


# -- origin, site, host ----------------------------------------------------------------------------------
def test_foreign_origins_and_sites_are_refused(live):
    iid = live.first_id()
    before = live.log()
    action = {"op": "label", "image_id": iid, "label": 1}
    for origin in (f"http://127.0.0.1:{live.port + 1}", "http://evil.example", "null", f"https://127.0.0.1:{live.port}",
                   f"http://localhost:{live.port}", f"http://127.0.0.1:{live.port}/x"):
        status, _, headers = live.post(action, headers={"Origin": origin})
        assert status == 403, origin
        assert not any(k.startswith("access-control-") for k in headers)
    for site in ("cross-site", "same-site"):  # same-site: another port of this machine
        assert live.post(action, headers={"Sec-Fetch-Site": site})[0] == 403
        assert live.call("GET", f"/image/{iid}.png", headers={"Sec-Fetch-Site": site})[0] == 403
    # a CORS preflight is never granted
    status, _, headers = live.call("OPTIONS", "/api/action", token=False, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-s2i-token"})
    assert status == 403 and not any(k.startswith("access-control-") for k in headers)
    status, _, headers = live.call("OPTIONS", "/api/action")
    assert status == 405 and not any(k.startswith("access-control-") for k in headers)
    assert live.log() == before
    # the page's own origin (as the browser sends it) is fine, under either loopback name
    assert live.call("GET", "/api/current", headers={"Origin": f"http://127.0.0.1:{live.port}",
                                                     "Sec-Fetch-Site": "same-origin"})[0] == 200
    assert live.call("GET", "/api/current", headers={"Host": f"localhost:{live.port}",
                                                     "Origin": f"http://localhost:{live.port}"})[0] == 200


def test_a_host_that_is_not_ours_is_refused(live):
    """DNS rebinding: a name the attacker points at 127.0.0.1 arrives with its own Host."""
    for host in (f"evil.example:{live.port}", f"127.0.0.1:{live.port + 1}", "127.0.0.1", "localhost",
                 f"127.0.0.1.nip.io:{live.port}", f"localhost.:{live.port}", f"127.0.0.2:{live.port}",
                 f"[::1]x:{live.port}", f"{live.host}:{live.port}", ""):
        status, body, _ = live.call("GET", "/api/current", headers={"Host": host})
        assert status == 403 and b"Host" in body, host
    for host in (f"localhost:{live.port}", f"LOCALHOST:{live.port}", f"[::1]:{live.port}"):
        assert live.call("GET", "/api/current", headers={"Host": host})[0] == 200, host
    # the names each kind of bind accepts
    wild = LS.Hosts("0.0.0.0", 9000)
    assert wild.allows(("10.1.2.3", 9000)) and wild.allows(("localhost", 9000))
    assert wild.allows((socket.gethostname().lower(), 9000))
    assert not wild.allows(("evil.example", 9000)) and not wild.allows(("10.1.2.3", 9001))
    named = LS.Hosts("192.168.7.7", 9000)
    assert named.allows(("192.168.7.7", 9000))
    assert not named.allows(("localhost", 9000)) and not named.allows(("10.1.2.3", 9000))


# -- what every response says ------------------------------------------------------------------------
def test_security_headers_on_every_response(live):
    iid = live.first_id()
    answers = {
        "page": live.call("GET", f"/?token={live.token}", token=False),
        "page again": live.call("GET", f"/?token={live.token}", token=False),
        "api": live.call("GET", "/api/current"),
        "image": live.call("GET", f"/image/{iid}.png"),
        "no token": live.call("GET", "/api/current", token=False),
        "not found": live.call("GET", "/nothing"),
        "wrong method": live.call("GET", "/api/action"),
        "bad json": live.post(b"{", headers={"Content-Type": "application/json"}),
        "too big": live.post(b"x" * (CAP + 1), headers={"Content-Type": "application/json"}),
        "wrong type": live.post(b"{}", headers={"Content-Type": "text/plain"}),
    }
    expected = {"not found": 404, "wrong method": 405, "bad json": 400, "too big": 413, "wrong type": 415,
                "no token": 403}
    for name, (status, body, headers) in answers.items():
        assert status == expected.get(name, 200), (name, status, body[:200])
        assert headers.get("x-content-type-options") == "nosniff", name
        assert headers.get("referrer-policy") == "no-referrer", name
        assert headers.get("cache-control") == "no-store", name
        assert headers.get("x-frame-options") == "DENY" and headers.get("cross-origin-resource-policy") == "same-origin"
        csp = headers.get("content-security-policy", "")
        for part in ("default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"):
            assert part in csp, (name, csp)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp
        assert not any(k.startswith("access-control-") for k in headers) and "server" not in headers
        if status >= 400:
            assert "application/json" in headers["content-type"] and "Traceback" not in body.decode("latin-1")
            json.loads(body)
    # the page: its one script and style by a fresh nonce each time, no inline handlers, no innerHTML
    nonces = []
    for name in ("page", "page again"):
        _, page, headers = answers[name]
        csp = headers["content-security-policy"]
        nonce = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", csp).group(1)
        assert f"style-src 'nonce-{nonce}'" in csp and "img-src 'self'" in csp and "connect-src 'self'" in csp
        assert "require-trusted-types-for 'script'" in csp
        html = page.decode()
        assert html.count(f'nonce="{nonce}"') == 2 and len(re.findall(r"<script", html)) == 1
        assert not re.search(r"\son[a-z]+\s*=", html) and "innerHTML" not in html and "javascript:" not in html
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


# -- sizes and shapes ------------------------------------------------------------------------------------
def test_a_10mb_body_is_refused_with_bounded_memory(live):
    before = live.log()
    # from its Content-Length, before any of it is sent
    status, body = raw(live, _post_head(live, f"Content-Length: {300 * 2**20}\r\n"), read_first=True)
    assert status == 413 and b"bytes" in body
    # sent in full: refused, and the server holds only a small part of it at a time
    size, piece = 10 * 2**20, b"[" * 65536
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        status, _ = raw(live, _post_head(live, f"Content-Length: {size}\r\n"), [piece] * (size // len(piece)))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert status == 413
    assert peak < 3 * 2**20, f"{peak / 2**20:.1f} MiB held for a 10 MiB body"
    assert live.log() == before
    assert live.call("GET", "/api/current")[0] == 200  # and it still answers


def test_a_chunked_body_over_the_cap_is_refused(live):
    before = live.log()
    head = _post_head(live, "Transfer-Encoding: chunked\r\n")
    piece = b"x" * 16384
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        status, body = raw(live, head, [chunk] * (4 * 2**20 // len(piece)) + [b"0\r\n\r\n"])
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert status == 413 and b"bytes" in body
    assert peak < 3 * 2**20, f"{peak / 2**20:.1f} MiB held for a 4 MiB chunked body"
    assert live.log() == before
    # a chunked body under the cap is read as usual
    iid = live.first_id()
    action = json.dumps({"op": "skip", "image_id": iid}).encode()
    status, _ = raw(live, head, [f"{len(action):x}\r\n".encode() + action + b"\r\n0\r\n\r\n"])
    assert status == 200 and b'"skip"' in live.log()[len(before):]


def test_deep_or_odd_json_is_a_400_never_a_500(live):
    iid = live.first_id()
    before = live.log()
    bodies = [b"[" * 200_000,  # the review's 200,000 levels (a 500 and a traceback before)
              b"[" * 30_000 + b"]" * 30_000, b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
              b'{"op":"label","image_id":"' + iid.encode() + b'","label":1,"x":[[[[[[1]]]]]]}',
              b"\xff\xfe{}", "{\"op\": \"skip\", \"image_id\": \"\udc80\"}".encode("utf-8", "surrogatepass"),
              b"", b"{", b"1" * 5000, b"[]", b"null"]
    for body in bodies:
        assert len(body) <= CAP
        status, answer, _ = live.post(body, headers={"Content-Type": "application/json"})
        assert status == 400, (body[:40], status, answer[:200])
        assert "error" in json.loads(answer) and b"Traceback" not in answer
    for action in ({"op": "label", "image_id": iid, "label": True}, {"op": "label", "image_id": iid, "label": 1.0},
                   {"op": "label", "image_id": iid, "label": 2}, {"op": "label", "image_id": [iid], "label": 1},
                   {"op": "evil", "image_id": iid}):
        assert live.post(action)[0] == 400, action
    assert live.log() == before
    # brackets inside strings are not nesting; the parser's check is one linear pass
    assert live.post({"op": "skip", "image_id": iid, "note": "[[[[[[[[[[{{{{{{{{"})[0] == 200
    assert LS.json_too_deep("[" * 200_000) and not LS.json_too_deep('["[[[[[[[[[[[[\\"[[["]')
    with pytest.raises(LS.BadJSON):
        LS.parse_action(b"[" * 200_000 + b"]" * 200_000)
    started = time.perf_counter()
    LS.json_too_deep('{"a":"' + "\\\"[" * 100_000 + '"}')
    assert time.perf_counter() - started < 2


# -- what the page never tells ----------------------------------------------------------------------------
def test_the_page_never_tells_model_epoch_or_other_labels(live):
    pool = live.session.pool
    table = pool.table
    # another annotator labelled everything with 1
    for iid in table["image_id"]:
        A.append(live.pool, "bob", {"op": "label", "image_id": str(iid), "label": 1})
    secrets = {str(v) for col in ("model_id", "model_path", "model_sha256", "segment_id", "image_seed")
               for v in table[col]}
    secrets |= {"model", "epoch", "segment", "bob", "sha256", "seed", "draw"}
    iid = live.first_id()
    seen = [live.call("GET", "/api/current")[1], live.call("GET", f"/?token={live.token}", token=False)[1],
            live.post({"op": "skip", "image_id": iid})[1], live.post({"op": "back", "image_id": iid})[1]]
    for body in seen:
        text = body.decode().lower()
        for secret in secrets:
            assert secret.lower() not in text, secret
    views = [json.loads(b) for b in seen if b.startswith(b"{")]
    for v in views:  # bob's labels are not this annotator's
        assert v["image"] is None or v["image"]["label"] is None
        assert v["done"] == len(A.state(A.read_log(A.log_path(live.pool, "ann"))).labels)
    # the image is pixels only: no text chunks (PNG tEXt / iTXt / zTXt) that could name its maker
    _, png, _ = live.call("GET", f"/image/{iid}.png")
    assert not any(tag in png for tag in (b"tEXt", b"iTXt", b"zTXt", b"eXIf"))
