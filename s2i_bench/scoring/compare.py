"""`s2i-bench compare`: is translator A better than B, and by how much?

    result = compare([A, B, ...], store=STORE, bundle=BUNDLE, epoch=None | E, window=False)

Each system is a run folder, a records file, or a group of run folders that differ only in their
training seed (a folder of `seed-S/` run folders, as `train-baseline --seeds` writes them). Every
pair is compared on the same test sounds with the same classifiers: records scored on other
stores, splits, scoring seeds, bundles or protocols are refused, naming the field.

At one checkpoint (`--epoch E`, default the last epoch all have) per class and for the mean:

    raw        share of images the class's classifier calls informative (the paper's metric)
    corrected  the difference of the Rogan-Gladen corrected shares, each clipped to [0, 1] as the
               records give them (the same classifiers score both), its interval carrying the
               classifiers' own uncertainty (their test set resampled with the sounds)
    true       the synthetic world judge's share (synthetic stores only)

Single translators: exact McNemar on the paired per-image decisions for a class's raw and true
shares (the corrected difference has the raw one's p-value: before clipping it is the raw
difference scaled by a positive factor, so both shares are equal exactly when the raw ones are); the mean over classes and every group of seeds: a bootstrap over the test
sounds (stratified by class; groups also resample their seeds), two-sided. Intervals: the
percentile interval of the same bootstrap. Series metrics (`--window`: the window average and the
maximum moving average): a paired bootstrap over the test sounds that recomputes the whole
metric, post-update replacement included, for each replicate.

p-values are adjusted by Holm's method across classes (and the mean) and pairs, within each
metric and measure. `mde` is the smallest difference a test at 5% finds with 80% power given
this many sounds and the observed discordance (normal approximation of McNemar's test), so a
"no significant difference" has a size.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.runs import RunFolder
from s2i_bench.scoring import records as R

MEASURES = {"raw": "informative", "corrected": "informative", "true": "truth", "iis": "iis"}
# what must agree between the members of a group of seeds (everything else may differ)
GROUP_KEYS = ("baseline", "protocol.fingerprint", "profile", "embedding_dim", "epochs", "batch_size", "store.hash")
ALPHA = 0.05
POWER = 0.8


@dataclass
class Member:
    """One trained translator (one seed): its records of the chosen series."""

    name: str
    folder: Path | None
    options: dict
    records: list[dict] = field(default_factory=list)
    d_update_epochs: list[int] | None = None

    @property
    def seed(self):
        return self.options.get("seed")


@dataclass
class System:
    name: str
    members: list[Member]

    @property
    def is_group(self) -> bool:
        return len(self.members) > 1


# -- loading --------------------------------------------------------------------------------------
def _dig(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def member_from_folder(folder: Path) -> Member:
    run = RunFolder(folder)
    options = run.read_options()
    recs = [r for p in sorted(folder.glob("metric-*.jsonl")) for r in R.read(p)]
    log_epochs = run.d_update_epochs() if run.log_path.is_file() else None
    return Member(folder.name, folder, options, recs, log_epochs)


def load_system(spec: str | Path) -> System:
    """A run folder, a records file, or a group folder of seed runs (see the module docstring)."""
    path = Path(spec)
    if not path.exists():
        raise UserError(f"{path}: not found (a run folder, a metric-*.jsonl file or a folder of seed-S run folders)")
    if path.is_file():
        recs = R.read(path)
        if not recs:
            raise UserError(f"{path}: no informativity records")
        names = sorted({str(r.get("run") or (r.get("generator") or {}).get("path")) for r in recs})
        if len(names) > 1:
            raise UserError(f"{path}: records of {len(names)} translators ({', '.join(names[:4])}); give one "
                            "translator's records (or its run folder)")
        return System(path.stem if path.stem != "metric-informativity" else path.parent.name,
                      [Member(names[0], None, {}, recs)])
    if (path / "options.json").is_file():
        return System(path.name, [member_from_folder(path)])
    children = sorted(p for p in path.iterdir() if p.is_dir() and (p / "options.json").is_file())
    if not children:
        raise UserError(f"{path}: neither a run folder (options.json) nor a group of run folders (seed-S/)")
    members = [member_from_folder(p) for p in children]
    _check_group(path, members)
    return System(path.name, members)


def _check_group(path: Path, members: list[Member]) -> None:
    first = members[0]
    for m in members[1:]:
        for key in GROUP_KEYS:
            a, b = _dig(first.options, key), _dig(m.options, key)
            if a != b:
                raise UserError(f"{path}: its runs {first.name} and {m.name} differ in {key} ({a!r} vs {b!r}), not "
                                "only in the training seed; compare them as separate systems")
    seeds = [m.seed for m in members]
    if len(set(map(str, seeds))) < len(seeds):
        raise UserError(f"{path}: two of its runs have the same training seed ({seeds}); a group is one "
                        "configuration trained with different seeds")


def _series_keys(m: Member, split: str) -> set[tuple]:
    return {R.series_key(r) for r in m.records if r.get("split") == split and r.get("decisions")}


FIELDS = ("classifiers", "store", "split", "scoring seed", "samples", "protocol")


def common_series(systems: list[System], split: str, bundle_sha: str | None, store_hash: str | None) -> tuple:
    """The one series key (bundle, store, split, seed, samples, protocol) that every member has,
    or a UserError naming what differs."""
    members = [(s.name, m) for s in systems for m in s.members]
    keys = {f"{n}/{m.name}": _series_keys(m, split) for n, m in members}
    for who, k in keys.items():
        if not k:
            raise UserError(f"{who}: no {split} records with per-image decisions (scored by this s2i-bench's "
                            f"`score`, or by `train-baseline --classifiers`); score it with `s2i-bench score`")
    common = set.intersection(*keys.values())
    if bundle_sha is not None:
        common = {k for k in common if k[0] == bundle_sha}
    if store_hash is not None:
        common = {k for k in common if k[1] == store_hash}
    if len(common) == 1:
        return next(iter(common))
    if not common:
        (wa, ka), *rest = keys.items()
        wb, kb = next(((w, k) for w, k in rest if not k & ka), rest[-1])
        a, b = sorted(ka)[0], sorted(kb)[0]
        differ = [f"{FIELDS[i]} ({str(a[i])[:16]} vs {str(b[i])[:16]})" for i in range(len(FIELDS)) if a[i] != b[i]]
        if not differ and bundle_sha is not None:
            differ = [f"classifiers (the records were scored with {str(a[0])[:12]}, --classifiers is {bundle_sha[:12]})"]
        if not differ and store_hash is not None:
            differ = [f"store (the records were scored on {a[1]}, --data is {store_hash})"]
        raise UserError(f"{wa} and {wb} were not scored alike, so they cannot be compared sound for sound: they "
                        f"differ in {', '.join(differ) or 'their series'}; score both with the same store, split, "
                        "seed, samples and classifiers")
    raise UserError(f"the systems share {len(common)} series (different classifiers or seeds); pass --classifiers "
                    "and --data to choose one")


# -- the decisions of one checkpoint --------------------------------------------------------------
def _at_epoch(m: Member, key: tuple, epoch: int | None) -> dict:
    recs = [r for r in m.records if R.series_key(r) == key]
    by_epoch = R.last_per_epoch(recs)
    if epoch is None:
        return recs[-1] if not by_epoch else by_epoch[max(by_epoch)]
    if epoch not in by_epoch:
        raise UserError(f"{m.name}: no record at epoch {epoch} (scored epochs {min(by_epoch)}..{max(by_epoch)})"
                        if by_epoch else f"{m.name}: its records have no epochs; leave out --epoch")
    return by_epoch[epoch]


def _epochs(m: Member, key: tuple) -> set[int]:
    return set(R.last_per_epoch([r for r in m.records if R.series_key(r) == key]))


def _slices(record: dict, class_keys) -> dict[str, slice]:
    out, start = {}, 0
    for k in class_keys:
        n = int((record["classes"].get(k) or {}).get("n_sounds") or 0)
        out[k] = slice(start, start + n)
        start += n
    return out


@dataclass
class Decisions:
    """A system's per-image decisions at one checkpoint: (members, K, N) bool per field."""

    informative: np.ndarray
    truth: np.ndarray | None
    order: str
    slices: dict[str, slice]
    iis: np.ndarray | None = None  # (members, K, N) per-image IIS ranks, when scored with --metrics iis


def decisions_at(system: System, key: tuple, epoch: int | None, class_keys) -> Decisions:
    recs = [_at_epoch(m, key, epoch) for m in system.members]
    ds = [R.decisions(r) for r in recs]
    orders = {d["order"] for d in ds}
    if len(orders) != 1:
        raise UserError(f"{system.name}: its members were scored on different sounds")
    truth = None if any(d["truth"] is None for d in ds) else np.stack([d["truth"] for d in ds])
    iis = None if any(d.get("iis") is None for d in ds) else np.stack([d["iis"] for d in ds])
    return Decisions(np.stack([d["informative"] for d in ds]), truth, orders.pop(), _slices(recs[0], class_keys), iis)


# -- the bootstrap ----------------------------------------------------------------------------------
def _sound_weights(rng, slices: dict[str, slice], keys, n_boot: int) -> dict[str, np.ndarray]:
    """Per class: (B, n_c) resampling counts of its sounds (multinomial = a bootstrap resample)."""
    out = {}
    for k in keys:
        n = slices[k].stop - slices[k].start
        out[k] = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64) if n else np.zeros((n_boot, 0))
    return out


def _member_picks(rng, n_members: int, n_boot: int) -> np.ndarray:
    """(B, M) how often each member is drawn (identity when there is one)."""
    if n_members == 1:
        return np.ones((n_boot, 1))
    return rng.multinomial(n_members, np.full(n_members, 1.0 / n_members), size=n_boot).astype(np.float64)


def _youden_replicates(rng, bundle, key: str, n_boot: int):
    """(point Se, Sp, (B,) Se*, (B,) Sp*) from the classifier's test outcomes, or None."""
    outcome = bundle.test_outcomes(key) if bundle is not None else None
    if outcome is None:
        return None
    labels, preds = (np.asarray(x).astype(int) for x in outcome)
    tp, fn = int(((labels == 1) & (preds == 1)).sum()), int(((labels == 1) & (preds == 0)).sum())
    tn, fp = int(((labels == 0) & (preds == 0)).sum()), int(((labels == 0) & (preds == 1)).sum())
    if tp + fn == 0 or tn + fp == 0:
        return None
    n = tp + fn + tn + fp
    cells = rng.multinomial(n, np.array([tp, fn, tn, fp]) / n, size=n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        se_b = cells[:, 0] / (cells[:, 0] + cells[:, 1])
        sp_b = cells[:, 2] / (cells[:, 2] + cells[:, 3])
    return tp / (tp + fn), tn / (tn + fp), se_b, sp_b


def _percentile(values: np.ndarray, confidence: float) -> list[float] | None:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return None
    a = (1 - confidence) / 2
    return [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))]


# -- one checkpoint -----------------------------------------------------------------------------------
def compare_checkpoint(a: System, b: System, da: Decisions, db: Decisions, keys, bundle, *, n_boot: int, seed: int,
                       confidence: float) -> list[dict]:
    """Rows (class or mean) x (raw, corrected, true) for one pair at one checkpoint."""
    from s2i_bench.stats import mcnemar_exact, minimum_detectable_difference

    if da.order != db.order:
        raise UserError(f"{a.name} and {b.name} were scored on different sounds (their decisions' order differs)")
    rng = np.random.default_rng(seed)
    weights = _sound_weights(rng, da.slices, keys, n_boot)
    picks_a, picks_b = _member_picks(rng, len(a.members), n_boot), _member_picks(rng, len(b.members), n_boot)
    youden = {k: _youden_replicates(rng, bundle, k, n_boot) for k in keys}
    rows = []
    per_measure_boot: dict[str, list[np.ndarray]] = {m: [] for m in MEASURES}
    per_measure_point: dict[str, list[float]] = {m: [] for m in MEASURES}
    sounds_total, discordant_total = 0, 0.0
    for k in keys:
        sl = da.slices[k]
        n = sl.stop - sl.start
        for measure, source in MEASURES.items():
            xa, xb = getattr(da, source), getattr(db, source)
            if xa is None or xb is None or n == 0:
                continue
            sa, sb = xa[:, :, sl].mean(axis=1), xb[:, :, sl].mean(axis=1)  # (M, n): per member, per sound
            point = float(sa.mean() - sb.mean())
            # bootstrap: sounds (shared by A and B), and each group's seeds
            ba = (picks_a @ sa) / picks_a.sum(1, keepdims=True)  # (B, n)
            bb = (picks_b @ sb) / picks_b.sum(1, keepdims=True)
            w = weights[k]
            boot = ((ba - bb) * w).sum(1) / n  # (B,)
            test, p = "paired bootstrap over sounds" + (" and seeds" if a.is_group or b.is_group else ""), None
            discord = float(np.mean(xa[:, :, sl].mean(0) != xb[:, :, sl].mean(0)))
            if not a.is_group and not b.is_group and source != "iis":
                only_a = int((xa[0][:, sl] & ~xb[0][:, sl]).sum())
                only_b = int((~xa[0][:, sl] & xb[0][:, sl]).sum())
                p, test = mcnemar_exact(only_a, only_b), "exact McNemar on the paired images"
                discord = (only_a + only_b) / xa[0][:, sl].size
            if measure == "corrected":
                y = youden[k]
                if y is None or y[0] + y[1] - 1 <= 0:
                    continue
                point, boot = _corrected_difference(float(sa.mean()), float(sb.mean()), (ba * w).sum(1) / n,
                                                    (bb * w).sum(1) / n, y)
                test = ("the raw test (a positive rescaling); interval: bootstrap over sounds" +
                        (" and seeds" if a.is_group or b.is_group else "") + " and the classifier's test set")
            if p is None:
                from s2i_bench.stats import bootstrap_p_value

                p = bootstrap_p_value(boot)
            if measure == "raw":
                sounds_total += n
                discordant_total += discord * n
            rows.append({"class": k, "measure": measure, "difference": point, "ci": _percentile(boot, confidence),
                         "p_value": float(p), "test": test, "n_sounds": n,
                         "mde": minimum_detectable_difference(n, discord, 1 - ALPHA, POWER)
                         if measure in ("raw", "true") else None})
            per_measure_boot[measure].append(boot)
            per_measure_point[measure].append(point)
    from s2i_bench.stats import bootstrap_p_value, minimum_detectable_difference

    for measure in MEASURES:
        boots = per_measure_boot[measure]
        if not boots or len(boots) != len(keys):
            continue
        boot = np.mean(np.stack(boots), axis=0)
        rows.append({"class": "mean", "measure": measure, "difference": float(np.mean(per_measure_point[measure])),
                     "ci": _percentile(boot, confidence), "p_value": bootstrap_p_value(boot),
                     "test": "paired bootstrap over sounds (stratified by class)"
                             + (" and seeds" if a.is_group or b.is_group else ""),
                     "n_sounds": sounds_total,
                     "mde": (minimum_detectable_difference(sounds_total, discordant_total / max(sounds_total, 1),
                                                           1 - ALPHA, POWER) if measure in ("raw", "true") else None)})
    return rows


def _corrected_difference(ra: float, rb: float, ra_boot: np.ndarray, rb_boot: np.ndarray, youden) -> tuple:
    """The difference of the two corrected shares as the records give them: Rogan-Gladen
    (raw - (1 - Sp)) / (Se + Sp - 1), clipped to [0, 1], for A and for B; the replicates use the
    classifier's resampled Se and Sp (NaN where Se + Sp - 1 <= 0). Without the clip a weak
    classifier (Se + Sp - 1 = 0.3) would stretch a 50-point raw difference to 167 points, a
    difference no two shares can have."""
    se, sp, se_b, sp_b = youden

    def corrected(raw, se, sp):
        with np.errstate(divide="ignore", invalid="ignore"):
            j = se + sp - 1
            return np.where(j > 0, np.clip((raw - (1 - sp)) / j, 0.0, 1.0), np.nan)

    point = float(corrected(ra, se, sp) - corrected(rb, se, sp))
    return point, corrected(ra_boot, se_b, sp_b) - corrected(rb_boot, se_b, sp_b)


def _distribution_rows(a: System, b: System, key: tuple, epoch: int | None) -> list[dict]:
    """FID and KID compare two sets of images, not image by image: an unpaired test from each
    record's bootstrap interval (normal approximation: se = width / (2 z)), for single
    translators whose records carry them."""
    from statistics import NormalDist

    if a.is_group or b.is_group:
        return []
    ra, rb = _at_epoch(a.members[0], key, epoch), _at_epoch(b.members[0], key, epoch)
    ma, mb = ra.get("image_metrics") or {}, rb.get("image_metrics") or {}
    z = NormalDist().inv_cdf(0.975)
    rows = []
    for name in ("fid", "kid"):
        ea, eb = ma.get(name) or {}, mb.get(name) or {}
        if ea.get("value") is None or eb.get("value") is None or not ea.get("ci") or not eb.get("ci"):
            continue
        if (ma.get("extractor") or {}).get("sha256") != (mb.get("extractor") or {}).get("sha256"):
            continue  # other features: not comparable
        se = np.hypot((ea["ci"][1] - ea["ci"][0]) / (2 * z), (eb["ci"][1] - eb["ci"][0]) / (2 * z))
        d = float(ea["value"] - eb["value"])
        p = 1.0 if se == 0 else float(2 * (1 - NormalDist().cdf(abs(d) / se)))
        rows.append({"class": "all", "measure": name, "metric": "image-set distance at epoch "
                     + ("last" if epoch is None else str(epoch)), "difference": d, "ci": [d - z * se, d + z * se],
                     "p_value": p, "n_sounds": None, "mde": None,
                     "test": "unpaired: normal approximation from the two records' bootstrap intervals"})
    return rows


# -- series metrics -------------------------------------------------------------------------------------
def compare_series(a: System, b: System, key: tuple, keys, protocol, bundle, *, n_boot: int, seed: int,
                   confidence: float) -> list[dict]:
    """Window average and maximum moving average: a paired bootstrap over sounds (and seeds) that
    recomputes each replicate's whole series metric."""
    from s2i_bench.scoring.metrics import series_metrics_columns
    from s2i_bench.stats import bootstrap_p_value

    spec = protocol.metrics
    epochs = sorted(set.intersection(*[_epochs(m, key) for s in (a, b) for m in s.members]))
    if len(epochs) < 2:
        raise UserError(f"{a.name} and {b.name} share {len(epochs)} scored epoch(s); a series comparison needs more "
                        "(or compare one checkpoint with --epoch)")
    rng = np.random.default_rng(seed)
    first = _at_epoch(a.members[0], key, epochs[0])
    slices = _slices(first, keys)
    weights = _sound_weights(rng, slices, keys, n_boot)
    picks = {s.name: _member_picks(rng, len(s.members), n_boot) for s in (a, b)}
    youden = {k: _youden_replicates(rng, bundle, k, n_boot) for k in keys}
    ep = np.array(epochs)

    def series(system: System, source: str):
        """per class: (M, E, n) per-sound shares, and each member's d_update flags (M, E)."""
        cubes, flags = [], []
        for m in system.members:
            by_epoch = R.last_per_epoch([r for r in m.records if R.series_key(r) == key])
            mats = []
            for e in epochs:
                d = R.decisions(by_epoch[e])
                if d["order"] != R.decisions(first)["order"]:
                    raise UserError(f"{system.name}/{m.name}: epoch {e} was scored on other sounds")
                if d[source] is None:
                    return None, None
                mats.append(d[source].mean(axis=0))  # (N,)
            cubes.append(np.stack(mats))  # (E, N)
            known = set(m.d_update_epochs) if m.d_update_epochs is not None else None
            flags.append([(e in known) if known is not None else bool(by_epoch[e].get("d_update"))
                          if by_epoch[e].get("d_update") is not None else e % protocol.training.d_every_epochs == 0
                          for e in epochs])
        return np.stack(cubes), np.array(flags, dtype=bool)

    rows = []
    for measure, source in MEASURES.items():
        ca, fa = series(a, source)
        cb, fb = series(b, source)
        if ca is None or cb is None:
            continue
        metric_boot: dict[str, dict[str, np.ndarray]] = {"window_average": {}, "max_moving_average": {}}
        metric_point: dict[str, dict[str, float]] = {"window_average": {}, "max_moving_average": {}}
        for k in keys:
            sl = slices[k]
            n = sl.stop - sl.start
            if n == 0:
                continue
            if measure == "corrected" and (youden[k] is None or youden[k][0] + youden[k][1] - 1 <= 0):
                continue
            w = weights[k] / n  # (B, n)
            vals = {}
            for s, cube, flags in ((a, ca, fa), (b, cb, fb)):
                per_member_point, per_member_boot = [], []
                for mi in range(cube.shape[0]):
                    x = cube[mi][:, sl]  # (E, n)
                    point = series_metrics_columns(ep, x.mean(axis=1, keepdims=True), flags[mi],
                                                   skip=spec.skip_after_d_update, fill=spec.skip_fill,
                                                   window=(spec.window_start, spec.window_end),
                                                   length=spec.moving_average)
                    boot = series_metrics_columns(ep, x @ w.T, flags[mi], skip=spec.skip_after_d_update,
                                                  fill=spec.skip_fill, window=(spec.window_start, spec.window_end),
                                                  length=spec.moving_average)
                    per_member_point.append({m: point[m][0] for m in metric_point})
                    per_member_boot.append(boot)
                pk = picks[s.name]  # (B, M): each replicate's draw of the seeds
                vals[s.name] = {m: (float(np.mean([p[m] for p in per_member_point])),
                                    np.where(pk > 0, pk * np.stack([bt[m] for bt in per_member_boot], axis=1),
                                             0.0).sum(1) / pk.sum(1))
                                for m in metric_point}
            for metric in metric_point:
                pa, ba = vals[a.name][metric]
                pb, bb = vals[b.name][metric]
                point, boot = pa - pb, ba - bb  # (B,)
                if measure == "corrected":  # the metric's value corrected and clipped, per system
                    point, boot = _corrected_difference(pa, pb, ba, bb, youden[k])
                metric_boot[metric][k] = boot
                metric_point[metric][k] = point
                rows.append({"class": k, "measure": measure, "metric": metric, "difference": float(point),
                             "ci": _percentile(boot, confidence), "p_value": bootstrap_p_value(boot),
                             "test": "paired bootstrap over sounds" + (" and seeds" if a.is_group or b.is_group else "")
                                     + " recomputing the series metric", "n_sounds": n, "mde": None})
        for metric in metric_point:
            if len(metric_boot[metric]) == len(keys):
                boot = np.mean(np.stack(list(metric_boot[metric].values())), axis=0)
                rows.append({"class": "mean", "measure": measure, "metric": metric,
                             "difference": float(np.mean(list(metric_point[metric].values()))),
                             "ci": _percentile(boot, confidence), "p_value": bootstrap_p_value(boot),
                             "test": "paired bootstrap over sounds (stratified by class)"
                                     + (" and seeds" if a.is_group or b.is_group else "")
                                     + " recomputing the series metric",
                             "n_sounds": sum(s.stop - s.start for s in slices.values()), "mde": None})
    return rows


# -- the command's core ----------------------------------------------------------------------------------
def compare(specs, *, store=None, bundle=None, epoch: int | None = None, window: bool = False, split: str | None = None,
            n_boot: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Every pair of `specs` compared (see the module docstring); the result as JSON-ready data."""
    from s2i_bench.data.store import open_store
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.scoring.score import file_sha256

    if len(specs) < 2:
        raise UserError("a comparison needs two systems or more (run folders, records files or groups of seeds)")
    systems = [load_system(s) for s in specs]
    names = [s.name for s in systems]
    if len(set(names)) < len(names):
        for i, s in enumerate(systems):
            s.name = f"{s.name}#{i + 1}" if names.count(s.name) > 1 else s.name
    st = open_store(store) if store is not None else None
    bun = bundle if hasattr(bundle, "test_outcomes") else (load_bundle(bundle) if bundle is not None else None)
    protocol = st.protocol if st is not None else _protocol_of(systems)
    split = split or protocol.scoring.split
    key = common_series(systems, split, file_sha256(Path(bun.path)) if bun is not None else None,
                        st.store_hash if st is not None else None)
    notes = []
    if bun is None:
        bun, note = _named_bundle(systems, key)
        notes += [note] if note else []
    if key[5] != protocol.fingerprint:
        raise UserError(f"the records were scored under protocol {key[5]}, the store is {protocol.fingerprint}")
    result = compare_systems(systems, key, protocol, bun, epoch=epoch, window=window, n_boot=n_boot, seed=seed)
    result["notes"] = notes + result["notes"]
    return result


def compare_systems(systems: list[System], key: tuple, protocol, bundle, *, epoch: int | None = None,
                    window: bool = False, n_boot: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Every pair of loaded systems on the series `key` (see `compare`)."""
    from s2i_bench.provenance import code_version
    from s2i_bench.stats import holm

    keys = list(protocol.class_keys)
    n_boot = n_boot or protocol.metrics.bootstrap_samples
    confidence = protocol.metrics.confidence
    pairs = []
    for i, j in itertools.combinations(range(len(systems)), 2):
        a, b = systems[i], systems[j]
        pair_seed = seed * 1_000_003 + i * 1009 + j
        if window:
            rows = compare_series(a, b, key, keys, protocol, bundle, n_boot=n_boot, seed=pair_seed,
                                  confidence=confidence)
        else:
            da = decisions_at(a, key, epoch, keys)
            db = decisions_at(b, key, epoch, keys)
            rows = compare_checkpoint(a, b, da, db, keys, bundle, n_boot=n_boot, seed=pair_seed, confidence=confidence)
            for r in rows:
                r["metric"] = "share at epoch " + ("last" if epoch is None else str(epoch))
        if not window:
            rows += _distribution_rows(a, b, key, epoch)
        for r in rows:
            pairs.append({"a": a.name, "b": b.name, **r})
    families: dict[tuple, list[int]] = {}
    for idx, r in enumerate(pairs):
        families.setdefault((r["metric"], r["measure"]), []).append(idx)
    for members in families.values():
        adjusted = holm([pairs[i]["p_value"] for i in members])
        for i, p in zip(members, adjusted):
            pairs[i]["p_adjusted"] = float(p)
            pairs[i]["significant"] = bool(p < ALPHA)
    return {
        "kind": "s2i-bench-comparison", "format_version": 1,
        "systems": [{"name": s.name, "members": [{"name": m.name, "seed": m.seed, "folder": str(m.folder) if m.folder
                                                  else None} for m in s.members]} for s in systems],
        "mode": "series (window average, maximum moving average)" if window else
                f"one checkpoint (epoch {'last common' if epoch is None else epoch})",
        "epoch": epoch, "split": key[2], "series": {f: str(v) for f, v in zip(FIELDS, key)},
        "protocol": protocol.ref(), "bootstrap": {"replicates": n_boot, "seed": seed, "confidence": confidence},
        "alpha": ALPHA, "power_for_mde": POWER,
        "multiple_comparisons": "Holm across classes (and the mean) and pairs, within each metric and measure",
        "pairs": pairs, "notes": [], "code_version": code_version(),
    }


def _named_bundle(systems: list[System], key: tuple):
    """The bundle the records name, when it is still there and is the one they were scored with
    (its test set gives the corrected intervals); else (None, why there is no corrected measure)."""
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.scoring.score import file_sha256

    for s in systems:
        for m in s.members:
            for r in m.records:
                if R.series_key(r) != key:
                    continue
                path = (r.get("classifiers") or {}).get("path")
                if path and Path(path).is_file() and file_sha256(Path(path)) == key[0]:
                    try:
                        return load_bundle(path), None
                    except UserError as e:
                        return None, f"no corrected measure: the records' classifiers could not be loaded ({e})"
                return None, ("no corrected measure: the classifiers the records were scored with are not at "
                              f"{path} any more; pass --classifiers")
    return None, "no corrected measure: pass --classifiers"


def _protocol_of(systems: list[System]):
    from s2i_bench.protocol import load_protocol, protocol_from_dict

    m = systems[0].members[0]
    if m.options.get("protocol_full"):
        return protocol_from_dict(m.options["protocol_full"])
    name = (m.records[0].get("protocol") or {}).get("name") if m.records else None
    if not name:
        raise UserError("cannot tell the protocol of the records; pass --data STORE")
    return load_protocol(name)


def format_comparison(result: dict) -> str:
    """A plain-text table of the pairs."""
    def pct(x):
        return "-" if x is None else f"{100 * x:+.1f}"

    lines = [f"{result['mode']}; split {result['split']}; {result['multiple_comparisons']}; "
             f"significant: adjusted p < {result['alpha']}"] + [f"note: {n}" for n in result.get("notes", [])] + [""]
    header = f"{'A':<16} {'B':<16} {'metric':<22} {'measure':<9} {'class':<15} {'diff (pp)':>9} {'95% CI':>16} " \
             f"{'p':>8} {'p adj':>8} {'MDE':>6}  "
    lines += [header, "-" * len(header)]
    for r in result["pairs"]:
        ci = r.get("ci")
        cis = f"[{pct(ci[0])}, {pct(ci[1])}]" if ci else "-"
        mde = "-" if r.get("mde") is None else f"{100 * r['mde']:.1f}"
        lines.append(f"{r['a'][:16]:<16} {r['b'][:16]:<16} {r['metric'][:22]:<22} {r['measure']:<9} "
                     f"{r['class'][:15]:<15} {pct(r['difference']):>9} {cis:>16} {r['p_value']:>8.4f} "
                     f"{r['p_adjusted']:>8.4f} {mde:>6}  {'*' if r['significant'] else ''}")
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    from s2i_bench.fileio import atomic_write_text, to_jsonable

    atomic_write_text(path, json.dumps(to_jsonable(result), indent=2) + "\n")
