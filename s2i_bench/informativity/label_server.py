"""`s2i-bench label-server`: the paper's subjective evaluation as a local web page (Starlette +
uvicorn).

One pool image at a time, large (upscaled without smoothing) and at its native size, with its
class and the paper's question. Keys: 1 / 0 informative or not, u undo, s skip, ← back, → on.
Never shown: the model or epoch that made the image, the sound's video, other annotators'
labels. Every action is appended at once to the annotator's log (`annotations`), so closing the
page or killing the server loses nothing, and a restart continues where the annotator stopped.
The page itself (HTML, script, style and its policy): `label_page`.

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

import logging
import io
import ipaddress
import json
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import parse_qs

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.informativity import annotations as A
from s2i_bench.informativity.label_page import page_csp, page_html
from s2i_bench.informativity.blind_set import open_label_set

logger = logging.getLogger(__name__)

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
        self.names = pool.class_names
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
        return HTMLResponse(page_html(nonce, token), headers={"Content-Security-Policy": page_csp(nonce)})

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


def parse_share(share: str | None) -> tuple[int, int] | None:
    """`--share K/N` as (K, N); None (or empty): no share, every image."""
    if not share:
        return None
    try:
        k, n = (int(x) for x in share.split("/"))
    except ValueError:
        raise UserError(f"--share {share!r}: expected K/N, e.g. 1/3") from None
    return k, n


def serve(pool_dir, annotator: str, *, host: str = "127.0.0.1", port: int = 8765, seed: int = 0,
          overlap: float = 0.0, share=None, ready=None) -> None:
    """`s2i-bench label-server`: serve the pool until stopped. `share`: (K, N), or the text K/N."""
    if isinstance(share, str):
        share = parse_share(share)
    pool = open_label_set(pool_dir)  # a pool, or an audit's blind set
    if not 0.0 <= overlap <= 1.0:
        raise UserError(f"--overlap {overlap}: a share of the pool in [0, 1]")
    session = Session(pool, annotator, seed=seed, overlap=overlap, share=share)
    server, sock, url, _ = listen(session, host, port)
    if host not in LOCAL_HOSTS:
        logger.info(f"label-server: listening on {host} (not only this machine)")
    logger.info(f"label-server: {len(session.ids)} images of {pool.path} for {annotator}; labels -> {session.path}")
    logger.info("label-server: every request needs the token in this address; keep it to yourself")
    print(f"open {url}", flush=True)
    if ready is not None:
        ready(url)
    server.run(sockets=[sock])
