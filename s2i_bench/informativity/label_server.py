"""`s2i-bench label-server`: the paper's subjective evaluation as a local web page (Starlette +
uvicorn).

One pool image at a time, large (upscaled without smoothing) and at its native size, with its
class and the paper's question. Keys: 1 / 0 informative or not, u undo, s skip, ← back, → on.
Never shown: the model or epoch that made the image, the sound's video, other annotators'
labels. Every action is appended at once to the annotator's log (`annotations`), so closing the
page or killing the server loses nothing, and a restart continues where the annotator stopped.

Security: binds to 127.0.0.1 unless told otherwise; on any other host every request must carry
the random token printed at start (as ?token=… once: the page keeps it in a cookie). Routes take
image ids only, looked up in the pool's table; nothing from a request becomes a path, and no
route writes anything but the annotator's own log.
"""

from __future__ import annotations

import io
import secrets
import socket
import sys
import time

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.informativity import annotations as A

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
QUESTION = "Is this an interpretable picture of {name}?"  # the paper's subjective evaluation (§5.3)


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


def make_app(session: Session, token: str | None):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        given = request.query_params.get("token") or request.cookies.get("s2i_token") or request.headers.get("x-token")
        return given is not None and secrets.compare_digest(given, token)

    def guard(handler):
        async def wrapped(request: Request):
            if not allowed(request):
                return JSONResponse({"error": "a token is required (printed by label-server at start)"}, 403)
            return await handler(request)
        return wrapped

    async def page(request: Request):
        response = HTMLResponse(PAGE)
        if token is not None and request.query_params.get("token"):
            response.set_cookie("s2i_token", token, httponly=True, samesite="strict")
        return response

    async def current(request: Request):
        st = session.state()
        at = request.query_params.get("at")
        iid = at if at in session.cls else session.next_id(st)
        return JSONResponse(session.view(iid, st))

    async def image(request: Request):
        iid = request.path_params["image_id"]
        try:
            return Response(session.png(iid), media_type="image/png", headers={"Cache-Control": "no-store"})
        except KeyError:
            return JSONResponse({"error": "no such image"}, 404)

    async def action(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "expected JSON"}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "expected a JSON object"}, 400)
        op, iid = body.get("op"), body.get("image_id")
        if not isinstance(iid, str) or iid not in session.cls:
            return JSONResponse({"error": "unknown image"}, 400)
        st = session.state()
        if op == "label":
            if body.get("label") not in (0, 1):
                return JSONResponse({"error": "label must be 0 or 1"}, 400)
            session.act("label", iid, body["label"])
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

    return Starlette(routes=[Route("/", guard(page)), Route("/api/current", guard(current)),
                             Route("/api/action", guard(action), methods=["POST"]),
                             Route("/image/{image_id}.png", guard(image))])


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


def serve(pool_dir, annotator: str, *, host: str = "127.0.0.1", port: int = 8765, seed: int = 0,
          overlap: float = 0.0, share=None, ready=None) -> None:
    import uvicorn

    from s2i_bench.informativity.pool import open_pool

    pool = open_pool(pool_dir)
    if not 0.0 <= overlap <= 1.0:
        raise UserError(f"--overlap {overlap}: a share of the pool in [0, 1]")
    session = Session(pool, annotator, seed=seed, overlap=overlap, share=share)
    token = None if host in LOCAL_HOSTS else secrets.token_urlsafe(24)
    sock = bind(host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}/"
    if token:
        url += f"?token={token}"
        print(f"label-server: listening on {host} (not only this machine): every request needs the token", file=sys.stderr)
    print(f"label-server: {len(session.ids)} images of {pool.path} for {annotator}; labels -> {session.path}",
          file=sys.stderr)
    print(f"open {url}", flush=True)
    config = uvicorn.Config(make_app(session, token), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if ready is not None:
        ready(url)
    server.run(sockets=[sock])


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>s2i-bench: label images</title>
<style>
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
</style></head><body>
<header><b>s2i-bench</b><span id="who"></span><span id="overall" class="small"></span><span id="rate" class="small"></span></header>
<main id="work">
  <div><img id="big" alt="generated image"><br><span class="small">native size:</span><br><img id="small" alt=""></div>
  <div class="panel">
    <div class="small" id="pos"></div>
    <div class="q" id="question"></div>
    <div id="current" class="small"></div>
    <div>
      <button class="yes" id="b1" onclick="act('label',1)">Informative <kbd>1</kbd></button>
      <button class="no" id="b0" onclick="act('label',0)">Not informative <kbd>0</kbd></button>
    </div>
    <div>
      <button id="bu" onclick="act('undo')">Undo <kbd>u</kbd></button>
      <button id="bs" onclick="act('skip')">Skip <kbd>s</kbd></button>
      <button id="bb" onclick="act('back')">&larr; Back</button>
      <button id="bf" onclick="act('forward')">Next &rarr;</button>
    </div>
    <h4>Progress per class</h4><div id="classes"></div>
  </div>
</main>
<div id="done">Every image is labelled. Thank you: the labels are saved.</div>
<script>
let view = null, chain = Promise.resolve();
function show(v){
  view = v;
  document.getElementById('who').textContent = 'annotator: ' + v.annotator;
  document.getElementById('overall').textContent = v.done + ' of ' + v.total + ' labelled, ' + (v.total - v.done) + ' left';
  document.getElementById('rate').textContent = v.rate_per_minute ? (v.rate_per_minute + ' images / min') : '';
  let html = '';
  for (const [k, c] of Object.entries(v.per_class)) {
    const p = c.total ? Math.round(100 * c.done / c.total) : 0;
    html += '<div class="small">' + c.name + ': ' + c.done + ' / ' + c.total + '</div><div class="bar"><div style="width:' + p + '%"></div></div>';
  }
  document.getElementById('classes').innerHTML = html;
  if (!v.image) { document.getElementById('work').style.display = 'none'; document.getElementById('done').style.display = 'block'; return; }
  document.getElementById('work').style.display = 'flex'; document.getElementById('done').style.display = 'none';
  const src = 'image/' + encodeURIComponent(v.image.id) + '.png';
  document.getElementById('big').src = src; document.getElementById('small').src = src;
  document.getElementById('question').textContent = v.image.question;
  document.getElementById('pos').textContent = 'image ' + v.image.position + ' of ' + v.total + ' (class: ' + v.image.class_name + ')';
  document.getElementById('current').textContent = v.image.label === null ? '' : ('your label: ' + (v.image.label ? 'informative' : 'not informative'));
  document.body.dataset.imageId = v.image.id;
}
async function load(){ const r = await fetch('api/current'); show(await r.json()); }
// Actions run one after the other, each on the image the previous one left shown: fast typing
// never loses a key nor labels the wrong image.
function act(op, label){ chain = chain.then(() => send(op, label)).catch(() => {}); }
async function send(op, label){
  if (!view || !view.image) return;
  const r = await fetch('api/action', {method:'POST', headers:{'Content-Type':'application/json'},
    body: JSON.stringify({op: op, image_id: view.image.id, label: label})});
  const v = await r.json();
  if (r.ok) show(v);
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
