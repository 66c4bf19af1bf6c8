"""`s2i-bench label-server`: the paper's subjective evaluation as a local web page (Starlette +
uvicorn).

One pool image at a time, large (upscaled without smoothing) and at its native size, with its
class and the paper's question. Keys: 1 / 0 informative or not, u undo, s skip, ← back, → on.
Never shown: the model or epoch that made the image, the sound's video, other annotators'
labels. Every action is appended at once to the annotator's log (`annotations`), so closing the
page or killing the server loses nothing, and a restart continues where the annotator stopped.

Security: binds to 127.0.0.1 unless told otherwise. Every start makes a random token, and every
request must carry it, on 127.0.0.1 too: the printed address has it (`?token=…`), the page
embeds it and sends it back in an `X-S2I-Token` header on its API calls (the API takes it from
that header only, which a foreign page cannot set without a CORS preflight, and no preflight is
ever granted) and in the query of its image addresses; there is no cookie, so a browser holds
no credential another page could borrow. A request without the token, with an `Origin` that is
not the page's own, with a `Host` that is not the bound host:port (or, bound to loopback,
localhost / 127.0.0.1 / [::1] at that port; bound to 0.0.0.0 or ::, an IP literal or this
machine's name: no DNS rebinding) or, for the API and images, a `Sec-Fetch-Site` other than
same-origin (or none), gets 403; a POST whose `Content-Type` is not application/json gets 415; a body over
256 KiB gets 413 (from its Content-Length before any of it is read, else while it streams);
JSON nested deeper than 4 levels, or not UTF-8, gets 400 (never a traceback). Every response
carries a strict Content-Security-Policy (the page's one script and style only by a per-response
nonce; no inline handlers; Trusted Types required in browsers that know them), `nosniff`,
`no-referrer`, `frame-ancestors 'none'`, `Cross-Origin-Resource-Policy: same-origin` and
`Cache-Control: no-store`; nothing a request or the pool says is put into the page as HTML.
Routes take image ids only, looked up in the pool's table; nothing from a request becomes a
path, and no route writes anything but the annotator's own log.
"""

from __future__ import annotations

import io
import ipaddress
import json
import secrets
import socket
import sys
import time
from contextlib import contextmanager
from urllib.parse import parse_qs

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.informativity import annotations as A

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
QUESTION = "Is this an interpretable picture of {name}?"  # the paper's subjective evaluation (§5.3)
TOKEN_HEADER = "x-s2i-token"
MAX_BODY = 256 * 1024  # bytes: an action is under 200; more is refused before it is held
MAX_DEPTH = 4  # JSON nesting: an action is one flat object


class Session:
    """What the server knows: the pool, the annotator, the order of images and the log."""

    def __init__(self, pool, annotator: str, *, seed: int = 0, overlap: float = 0.0, share=None):
        self.pool, self.annotator = pool, A.check_annotator(annotator)
        self.ids = A.order(pool, annotator, seed=seed, overlap=overlap, share=share)
        table = pool.table.set_index("image_id")
        self.row = {iid: i for i, iid in enumerate(pool.table["image_id"].astype(str))}
        self.cls = {iid: str(table.loc[iid, "class"]) for iid in self.ids}
        self.sha = {iid: str(table.loc[iid, "image_sha256"]) for iid in self.ids}
        self.names = dict(zip(pool.protocol.class_keys, pool.protocol.class_names))
        self.path = A.log_path(pool.path, annotator)
        self.started = time.time()
        self.session_labels = 0
        self._check_hashes()

    def _check_hashes(self) -> None:
        for e in A.read_log(self.path):
            if e["image_id"] in self.sha and e.get("image_sha256") not in (None, self.sha[e["image_id"]]):
                raise UserError(f"{self.path}: image {e['image_id']} changed since {self.annotator} labelled it "
                                "(sha256 differs): the pool was rebuilt; label it into a fresh pool folder")

    def state(self) -> A.State:
        return A.state(A.read_log(self.path))

    def next_id(self, st: A.State, after: str | None = None) -> str | None:
        """The first image in order with no label and not skipped (after `after`, when given);
        skipped ones come back once everything else is done."""
        start = self.ids.index(after) + 1 if after in self.ids else 0
        for iid in self.ids[start:] + self.ids[:start]:
            if iid not in st.labels and iid not in st.skipped:
                return iid
        return next((iid for iid in self.ids if iid not in st.labels), None)

    def view(self, iid: str | None, st: A.State | None = None) -> dict:
        st = st or self.state()
        per_class = {}
        for key in self.names:
            mine = [i for i in self.ids if self.cls[i] == key]
            per_class[key] = {"name": self.names[key], "done": sum(1 for i in mine if i in st.labels),
                              "total": len(mine)}
        minutes = max((time.time() - self.started) / 60, 1e-9)
        out = {"annotator": self.annotator, "done": len([i for i in self.ids if i in st.labels]),
               "total": len(self.ids), "per_class": per_class,
               "rate_per_minute": round(self.session_labels / minutes, 1) if self.session_labels else None,
               "image": None}
        if iid is not None:
            key = self.cls[iid]
            out["image"] = {"id": iid, "class": key, "class_name": self.names[key],
                            "question": QUESTION.format(name=self.names[key].lower()),
                            "position": self.ids.index(iid) + 1, "label": st.labels.get(iid)}
        return out

    def png(self, iid: str) -> bytes:
        from PIL import Image

        if iid not in self.row or iid not in self.cls:
            raise KeyError(iid)
        buf = io.BytesIO()
        Image.fromarray(np.asarray(self.pool.images[self.row[iid]])).save(buf, format="PNG")
        return buf.getvalue()

    def act(self, op: str, iid: str, label: int | None = None) -> None:
        if iid not in self.cls:
            raise KeyError(iid)
        event = {"op": op, "image_id": iid, "image_sha256": self.sha[iid]}
        if op == "label":
            event["label"] = int(label)
            self.session_labels += 1
        A.append(self.pool.path, self.annotator, event)


# -- what every request must show ------------------------------------------------------------------
def _authority(value: str, default_port: int = 80) -> tuple[str, int] | None:
    """'host[:port]' (or '[v6]:port') as (lower-case host, port); None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
    else:
        name, _, port = value.partition(":")
        rest = ":" + port if _ else ""
    if not name or (rest and not rest.startswith(":")):
        return None
    port_text = rest[1:]
    if rest and not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        return None
    return name, int(port_text) if rest else default_port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Hosts:
    """The names a browser may use for this server (the Host header): the bound host at the
    bound port; for a loopback bind also localhost / 127.0.0.1 / ::1; for a wildcard bind (0.0.0.0,
    ::) any IP literal, localhost and this machine's names. A name an attacker's DNS can point here
    (rebinding) is not among them."""

    def __init__(self, host: str, port: int):
        self.port = port
        self.names = {host.lower().strip("[]")}
        self.any_ip = host in WILDCARD_HOSTS
        if host in LOCAL_HOSTS or host.startswith("127.") or self.any_ip:
            self.names |= set(LOCAL_HOSTS)
        if self.any_ip:
            for name in (socket.gethostname(), socket.getfqdn()):
                if name:
                    self.names.add(name.lower())

    def allows(self, authority: tuple[str, int] | None) -> bool:
        if authority is None or authority[1] != self.port:
            return False
        name = authority[0]
        return name in self.names or (self.any_ip and _is_ip(name))


def _same_secret(given: str | bytes | None, token: str) -> bool:
    if given is None:
        return False
    if isinstance(given, str):
        given = given.encode("utf-8", "surrogateescape")
    return secrets.compare_digest(given, token.encode("ascii"))


def json_too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether `text`'s arrays and objects nest deeper than `limit` (strings skipped; one linear
    pass, so no depth can make the parser recurse)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


class BadJSON(ValueError):
    pass


def parse_action(body: bytes):
    """A request body as JSON: UTF-8, nested at most MAX_DEPTH levels; BadJSON (a 400) otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJSON("the body is not UTF-8") from None
    if json_too_deep(text):
        raise BadJSON(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadJSON("expected JSON") from None


API_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; sandbox"
PAGE_CSP = ("default-src 'none'; script-src 'nonce-{n}'; style-src 'nonce-{n}'; img-src 'self'; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
            "require-trusted-types-for 'script'; trusted-types 'none'")
SECURITY_HEADERS = {
    "content-security-policy": API_CSP,  # the page sends its own (with its nonce)
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


class Guard:
    """ASGI middleware in front of the whole app: checks Host, Origin, Sec-Fetch-Site, the token,
    the Content-Type and the body size before any route runs, reads a POST's body under the cap,
    and puts SECURITY_HEADERS on every response (errors and 404s included)."""

    def __init__(self, app, token: str, hosts: Hosts, max_body: int = MAX_BODY):
        self.app, self.token, self.hosts, self.max_body = app, token, hosts, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        async def refuse(status: int, why: str):
            body = json.dumps({"error": why}).encode()
            await send_secured({"type": "http.response.start", "status": status,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
            await send_secured({"type": "http.response.body", "body": body})

        problem = self.check(scope)
        if problem:
            await refuse(*problem)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send_secured)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await refuse(413, f"the body is over {self.max_body} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, given = b"".join(chunks), False

        async def replay():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_secured)

    def check(self, scope) -> tuple[int, str] | None:
        headers: dict[str, list[str]] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        hosts = headers.get("host", [])
        authority = _authority(hosts[0]) if len(hosts) == 1 else None
        if not self.hosts.allows(authority):
            return 403, "unexpected Host header: open the address label-server printed"
        for origin in headers.get("origin", []):
            scheme, sep, rest = origin.partition("://")
            if scheme.lower() != "http" or not sep or "/" in rest or _authority(rest) != authority:
                return 403, "a request from another origin"
        path = scope["path"]
        page = path == "/"
        site = headers.get("sec-fetch-site", [])
        if not page and any(s not in ("same-origin", "none") for s in site):
            return 403, "a request from another site"
        given = headers.get(TOKEN_HEADER, [])
        if not given and (page or path.startswith("/image/")):  # only these take it from the query
            given = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).get("token", [])
        if len(given) != 1 or not _same_secret(given[0], self.token):
            return 403, "a token is required: open the address label-server printed (it carries the token)"
        if scope["method"] == "POST":
            ctype = headers.get("content-type", [])
            if len(ctype) != 1 or ctype[0].split(";")[0].strip().lower() != "application/json":
                return 415, "expected Content-Type: application/json"
        lengths = headers.get("content-length", [])
        if lengths:
            if len(lengths) != 1 or not lengths[0].strip().isdigit():
                return 400, "a bad Content-Length"
            if int(lengths[0]) > self.max_body:
                return 413, f"the body is over {self.max_body} bytes"
        return None


def make_app(session: Session, token: str, hosts: Hosts):
    """The Starlette app behind a Guard (every request checked, every response with the security
    headers)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    async def page(request: Request):
        nonce = secrets.token_urlsafe(18)
        html = PAGE.replace("__NONCE__", nonce).replace("__TOKEN__", token)
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP.format(n=nonce)})

    async def current(request: Request):
        st = session.state()
        at = request.query_params.get("at")
        iid = at if at in session.cls else session.next_id(st)
        return JSONResponse(session.view(iid, st))

    async def image(request: Request):
        iid = request.path_params["image_id"]
        try:
            return Response(session.png(iid), media_type="image/png")
        except KeyError:
            return JSONResponse({"error": "no such image"}, 404)

    async def action(request: Request):
        try:
            body = parse_action(await request.body())
        except BadJSON as e:
            return JSONResponse({"error": str(e)}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "expected a JSON object"}, 400)
        op, iid = body.get("op"), body.get("image_id")
        if not isinstance(iid, str) or iid not in session.cls:
            return JSONResponse({"error": "unknown image"}, 400)
        st = session.state()
        if op == "label":
            label = body.get("label")
            if type(label) is not int or label not in (0, 1):  # not true / 1.0
                return JSONResponse({"error": "label must be 0 or 1"}, 400)
            session.act("label", iid, label)
            st = session.state()
            return JSONResponse(session.view(session.next_id(st, after=iid), st))
        if op == "skip":
            session.act("skip", iid)
            st = session.state()
            return JSONResponse(session.view(session.next_id(st, after=iid), st))
        if op == "undo":
            if not st.history:
                return JSONResponse(session.view(iid, st))
            last = st.history[-1]
            session.act("clear", last)
            return JSONResponse(session.view(last))
        if op in ("back", "forward"):
            i = session.ids.index(iid) + (-1 if op == "back" else 1)
            i = max(0, min(len(session.ids) - 1, i))
            return JSONResponse(session.view(session.ids[i], st))
        return JSONResponse({"error": f"unknown op {op!r}"}, 400)

    async def http_error(request: Request, exc: HTTPException):  # 404, 405: JSON like the rest
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    app = Starlette(routes=[Route("/", page), Route("/api/current", current),
                            Route("/api/action", action, methods=["POST"]),
                            Route("/image/{image_id}.png", image)],
                    exception_handlers={HTTPException: http_error})
    return Guard(app, token, hosts)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
            raise UserError(f"port {port} on {host} is in use (another label-server?); pass --port N") from None
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.listen(64)
    return sock


def listen(session: Session, host: str = "127.0.0.1", port: int = 0):
    """Bind `host:port`, make the session's token and the app: (uvicorn.Server, socket, url, token);
    `server.run(sockets=[sock])` serves until `server.should_exit` is set."""
    import uvicorn

    token = secrets.token_urlsafe(32)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}/?token={token}"
    app = make_app(session, token, Hosts(host, bound))
    config = uvicorn.Config(app, log_level="warning", access_log=False, ws="none", lifespan="off",
                            proxy_headers=False, server_header=False, limit_concurrency=64)
    return uvicorn.Server(config), sock, url, token


@contextmanager
def serving(session: Session, host: str = "127.0.0.1", port: int = 0):
    """Serve `session` from a background thread (a notebook, the tests): yields (url, token)."""
    import threading

    server, sock, url, token = listen(session, host, port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="label-server", daemon=True)
    thread.start()
    deadline = time.time() + 30
    try:
        while not server.started:
            if not thread.is_alive() or time.time() > deadline:
                raise RuntimeError("label-server did not start")
            time.sleep(0.01)
        yield url, token
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def serve(pool_dir, annotator: str, *, host: str = "127.0.0.1", port: int = 8765, seed: int = 0,
          overlap: float = 0.0, share=None, ready=None) -> None:
    from s2i_bench.informativity.pool import open_pool

    pool = open_pool(pool_dir)
    if not 0.0 <= overlap <= 1.0:
        raise UserError(f"--overlap {overlap}: a share of the pool in [0, 1]")
    session = Session(pool, annotator, seed=seed, overlap=overlap, share=share)
    server, sock, url, _ = listen(session, host, port)
    if host not in LOCAL_HOSTS:
        print(f"label-server: listening on {host} (not only this machine)", file=sys.stderr)
    print(f"label-server: {len(session.ids)} images of {pool.path} for {annotator}; labels -> {session.path}",
          file=sys.stderr)
    print("label-server: every request needs the token in this address; keep it to yourself", file=sys.stderr)
    print(f"open {url}", flush=True)
    if ready is not None:
        ready(url)
    server.run(sockets=[sock])


# The page: no inline handlers, nothing inserted as HTML (textContent and DOM methods only), its
# script and style allowed by the per-response nonce; the token comes in the meta tag.
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>s2i-bench: label images</title>
<meta name="s2i-token" content="__TOKEN__">
<style nonce="__NONCE__">
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{padding:10px 18px;background:#223;color:#eee;display:flex;gap:18px;align-items:baseline}
header b{font-size:1.1em}
main{display:flex;gap:28px;padding:18px;align-items:flex-start}
#big{width:480px;height:480px;image-rendering:pixelated;border:1px solid #999;background:#fff}
#small{image-rendering:auto;border:1px solid #999;margin-top:6px}
.panel{max-width:420px}
.q{font-size:1.35em;margin:4px 0 14px}
button{font-size:1em;padding:8px 14px;margin:4px 6px 4px 0;border-radius:6px;border:1px solid #888;background:#fff;cursor:pointer}
button.yes{background:#d9f2d9}button.no{background:#f6dada}
.bar{height:9px;background:#ddd;border-radius:4px;overflow:hidden;margin:2px 0 8px}
.bar div{height:100%;background:#4a7}
.small{color:#555;font-size:.9em}
kbd{border:1px solid #aaa;border-radius:3px;padding:0 4px;background:#fff;font-size:.9em}
#done{display:none;font-size:1.3em;padding:40px}
#error{display:none;padding:10px 18px;background:#f6dada;color:#600}
</style></head><body>
<header><b>s2i-bench</b><span id="who"></span><span id="overall" class="small"></span><span id="rate" class="small"></span></header>
<div id="error"></div>
<main id="work">
  <div><img id="big" alt="generated image"><br><span class="small">native size:</span><br><img id="small" alt=""></div>
  <div class="panel">
    <div class="small" id="pos"></div>
    <div class="q" id="question"></div>
    <div id="current" class="small"></div>
    <div>
      <button class="yes" id="b1" data-op="label" data-label="1">Informative <kbd>1</kbd></button>
      <button class="no" id="b0" data-op="label" data-label="0">Not informative <kbd>0</kbd></button>
    </div>
    <div>
      <button id="bu" data-op="undo">Undo <kbd>u</kbd></button>
      <button id="bs" data-op="skip">Skip <kbd>s</kbd></button>
      <button id="bb" data-op="back">&larr; Back</button>
      <button id="bf" data-op="forward">Next &rarr;</button>
    </div>
    <h4>Progress per class</h4><div id="classes"></div>
  </div>
</main>
<div id="done">Every image is labelled. Thank you: the labels are saved.</div>
<script nonce="__NONCE__">
'use strict';
const TOKEN = document.querySelector('meta[name="s2i-token"]').content;
const $ = id => document.getElementById(id);
let view = null, chain = Promise.resolve();
function el(tag, cls, text){
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function show(v){
  view = v;
  $('error').style.display = 'none';
  $('who').textContent = 'annotator: ' + v.annotator;
  $('overall').textContent = v.done + ' of ' + v.total + ' labelled, ' + (v.total - v.done) + ' left';
  $('rate').textContent = v.rate_per_minute ? (v.rate_per_minute + ' images / min') : '';
  const rows = [];
  for (const c of Object.values(v.per_class)) {
    const p = c.total ? Math.round(100 * c.done / c.total) : 0;
    const bar = el('div', 'bar'), fill = el('div');
    fill.style.width = p + '%';
    bar.appendChild(fill);
    rows.push(el('div', 'small', c.name + ': ' + c.done + ' / ' + c.total), bar);
  }
  $('classes').replaceChildren(...rows);
  if (!v.image) { $('work').style.display = 'none'; $('done').style.display = 'block'; return; }
  $('work').style.display = 'flex'; $('done').style.display = 'none';
  const src = 'image/' + encodeURIComponent(v.image.id) + '.png?token=' + encodeURIComponent(TOKEN);
  $('big').src = src; $('small').src = src;
  $('question').textContent = v.image.question;
  $('pos').textContent = 'image ' + v.image.position + ' of ' + v.total + ' (class: ' + v.image.class_name + ')';
  $('current').textContent = v.image.label === null ? '' : ('your label: ' + (v.image.label ? 'informative' : 'not informative'));
  document.body.dataset.imageId = v.image.id;
}
function fail(r){
  $('error').textContent = r.status === 403
    ? 'This page is no longer valid (the server was restarted?): open the address label-server printed.'
    : 'The server refused (' + r.status + '); the last key was not saved.';
  $('error').style.display = 'block';
}
function api(path, init){
  init = init || {};
  init.headers = Object.assign({'X-S2I-Token': TOKEN}, init.headers || {});
  init.credentials = 'omit'; init.cache = 'no-store'; init.redirect = 'error';
  return fetch(path, init);
}
async function load(){ const r = await api('api/current'); if (r.ok) show(await r.json()); else fail(r); }
// Actions run one after the other, each on the image the previous one left shown: fast typing
// never loses a key nor labels the wrong image.
function act(op, label){ chain = chain.then(() => send(op, label)).catch(() => {}); }
async function send(op, label){
  if (!view || !view.image) return;
  const r = await api('api/action', {method:'POST', headers:{'Content-Type':'application/json'},
    body: JSON.stringify({op: op, image_id: view.image.id, label: label})});
  if (r.ok) show(await r.json()); else fail(r);
}
for (const b of document.querySelectorAll('button[data-op]')) {
  b.addEventListener('click', () => act(b.dataset.op, b.dataset.label === undefined ? undefined : Number(b.dataset.label)));
}
document.addEventListener('keydown', e => {
  const k = e.key;
  if (k === '1') act('label', 1); else if (k === '0') act('label', 0);
  else if (k === 'u') act('undo'); else if (k === 's') act('skip');
  else if (k === 'ArrowLeft') act('back'); else if (k === 'ArrowRight') act('forward');
});
load();
</script></body></html>
"""
