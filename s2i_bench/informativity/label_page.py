"""The labelling page of `s2i-bench label-server` (`label_server`): one HTML document with its
script and style, and the Content-Security-Policy that lets them run.

No inline handlers, nothing inserted as HTML (textContent and DOM methods only), its script and
style allowed by a per-response nonce; the token comes in the meta tag.
"""

from __future__ import annotations

PAGE_CSP = ("default-src 'none'; script-src 'nonce-{n}'; style-src 'nonce-{n}'; img-src 'self'; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
            "require-trusted-types-for 'script'; trusted-types 'none'")


def page_html(nonce: str, token: str) -> str:
    """The page for one response: its nonce on the script and the style, the session's token."""
    return PAGE.replace("__NONCE__", nonce).replace("__TOKEN__", token)


def page_csp(nonce: str) -> str:
    """The page's Content-Security-Policy: its script and style by the response's nonce only."""
    return PAGE_CSP.format(n=nonce)


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
