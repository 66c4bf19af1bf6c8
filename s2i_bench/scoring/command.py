"""The `score` and `metrics` commands and their text output.

    s2i-bench score TRANSLATOR --data STORE --classifiers BUNDLE    a file, a run folder, a plugin,
                                                                    reference:NAME, a folder of images
    s2i-bench metrics SERIES.csv --protocol P                       the paper's numbers of a series
"""

from __future__ import annotations

import logging
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from s2i_bench import defaults, distributed
from s2i_bench.distributed import check_device
from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_text, check_writable, dig, file_sha256, to_jsonable
from s2i_bench.informativity.bundle import load_bundle
from s2i_bench.runs import MAX_EPOCH, RunFolder
from s2i_bench.scoring import metrics as M
from s2i_bench.scoring import records, series
from s2i_bench.scoring.attributes import format_attributes
from s2i_bench.scoring.features import audio_encoder, program_extractor
from s2i_bench.scoring.presets import load_audio_preset, load_preset
from s2i_bench.scoring.image_metrics import check_metrics, image_metrics, needing
from s2i_bench.scoring.score import score_checkpoints, score_translator
from s2i_bench.scoring.sheets import sheet_key, sheet_name
from s2i_bench.text import percent
from s2i_bench.translators import load_translator
from s2i_bench.translators.folder import load_folder, looks_like_image_folder
from s2i_bench.translators.local import load_plugin, looks_like_plugin
from s2i_bench.translators.reference import is_reference, load_reference

logger = logging.getLogger(__name__)


def check_classes(protocol, bundle) -> None:
    missing = [k for k in protocol.class_keys if k not in bundle.class_keys]
    if missing and not bundle.class_keys and dig(getattr(bundle, "card", None), "class_match_only"):
        logger.info(f"{bundle.path}: a class-match-only bundle: the class-match rate and the image metrics, no "
                    f"informativity estimate")
        return
    if missing and set(missing) <= set(dig(getattr(bundle, "card", None), "untrained") or {}):
        logger.warning(f"{bundle.path}: no classifier for {', '.join(missing)} (too few labelled images, see the "
                       f"card's `untrained`); those classes get no informativity estimate")
        return
    if missing:
        raise UserError(f"{bundle.path}: classifiers for {sorted(bundle.class_keys)} do not cover the store's "
                        f"classes {list(protocol.class_keys)}")


def translator_kind(spec) -> str:
    """What TRANSLATOR names: "reference", "plugin", "run", "images" or "file"."""
    text = str(spec)
    if is_reference(text) and not Path(text).exists():
        return "reference"
    if looks_like_plugin(text):
        return "plugin"
    path = Path(text)
    try:
        exists = path.exists()
    except OSError as e:
        raise UserError(f"{path}: cannot open ({e.strerror or e})") from None
    if not exists:
        hint = (" (a local plugin is MODULE:FACTORY or path/to/file.py:FACTORY; a reference translator "
                "reference:NAME)") if ":" in text else ""
        raise UserError(f"{path}: translator not found{hint}")
    if path.is_dir():
        return "images" if looks_like_image_folder(path) else "run"
    return "file"


def score_command(translator, *, store=None, bundle=None, split=None, seed=None, samples=None, device="cpu",
                  records_out=None, as_json=False, translator_options: dict | None = None,
                  allow_missing: bool = False, metrics=None, feature_extractor=None, ais_audio=None,
                  ais_image=None, feature_preset=None, feature_weights=None, ais_audio_preset=None,
                  ais_audio_weights=None, ais_unaligned: bool = False, attributes: bool = False) -> dict[str, Any]:
    """Score TRANSLATOR: a translator file, every checkpoint of a run folder that has no record
    yet, a local plugin (MODULE:FACTORY, file.py:FACTORY), a reference translator
    (reference:NAME) or a folder of images answering `export-sounds`. Without --data /
    --classifiers, the embedded default that `make demo` built."""
    kind = translator_kind(translator)
    used_default = store is None
    st = open_store(store if store is not None else defaults.store())
    protocol = st.protocol
    split = split or protocol.scoring.split
    seed = protocol.scoring.seed if seed is None else seed
    device = check_device(device)
    out = Path(records_out) if records_out else None
    if out is not None and out.exists() and not out.is_file():
        raise UserError(f"{out}: exists and is not a file; give --out a .jsonl file path")
    if out is not None:
        check_writable(out, "score")  # before the work, not after it
    bun = load_bundle(bundle if bundle is not None else defaults.bundle(), device=device)
    check_classes(protocol, bun)
    _store_warnings(st, bun, protocol)
    if attributes and not st.synthetic:
        raise UserError(f"--attributes: {st.path} is not a store of the synthetic world (the attribute scores need "
                        "its scenes: `s2i-bench synth`, then `prepare`)")
    kwargs = dict(protocol=protocol, split=split, seed=seed, batch_size=protocol.scoring.batch_size, device=device,
                  attributes=attributes,
                  **_metric_options(metrics, feature_extractor, ais_audio, ais_image, st, protocol,
                                    translator_options, preset=(feature_preset, feature_weights, device),
                                    audio_preset=(ais_audio_preset, ais_audio_weights, ais_unaligned)))
    if kind == "run":
        samples = samples or protocol.scoring.samples
        return _score_run(Path(translator), st, bun, out, samples, as_json, translator_options, kwargs)
    only_rows = None
    if kind == "images":
        loaded, only_rows, samples = load_folder(Path(translator), st, split=split, samples=samples,
                                                 allow_missing=allow_missing, size=protocol.image.size)
        out = out or Path(translator) / records.RECORDS_NAME
    else:
        samples = samples or protocol.scoring.samples
        loaded = load_spec(kind, translator, st, protocol, device, translator_options)
        if out is None:
            if kind == "file":
                out = Path(translator).parent / records.RECORDS_NAME
            elif used_default:
                out = defaults.work().scores
            else:
                raise UserError(f"{translator}: give --out RECORDS.jsonl, the records file to append its record to")
    check_writable(out, "score")
    out.parent.mkdir(parents=True, exist_ok=True)
    # The images of the fixed test sounds go beside the records (Figs. 15/16 of the report).
    sheet = out.parent / sheet_name(loaded.info, sheet_key(loaded.info, store_hash=st.store_hash, split=split,
                                                           seed=seed))
    record = score_translator(loaded, st, bun, samples=samples, sample_sheet=sheet, only_rows=only_rows, **kwargs)
    records.append(out, record)
    if as_json:
        print(json.dumps(to_jsonable(record.to_dict()), indent=2))
    else:
        print(format_record(record, protocol))
        if record.attributes:
            print(format_attributes(record, protocol))
        print(f"record appended to {out}")
    return record


def _metric_options(metrics, feature_extractor, ais_audio, ais_image, store, protocol,
                    translator_options=None, preset=(None, None, "cpu"), audio_preset=(None, None, False)) -> dict:
    """--metrics and the encoders they need, checked before anything is scored. The encoders are
    strangers' programs: the translator's --program-timeout, --program-memory, --unconfined.
    `preset`: (--feature-preset, --feature-weights, device): a named recipe (`scoring.presets`)
    whose network gives the features, and for a CLIP preset also AIS's image embeddings.
    `audio_preset`: (--ais-audio-preset, --ais-audio-weights, --ais-unaligned): AIS's audio side by
    name (CLAP), and whether it may meet an image preset trained apart from it."""
    options = translator_options or {}
    program = {"timeout_s": options.get("program_timeout"), "unconfined": bool(options.get("unconfined")),
               "memory_gib": options.get("program_memory")}

    which = check_metrics(metrics)
    out: dict[str, Any] = {"metrics": which}
    preset_name, preset_weights, device = preset
    if preset_weights is not None and preset_name is None:
        raise UserError("--feature-weights is the checkpoint of a --feature-preset; name the preset")
    if feature_extractor is not None and preset_name is not None:
        raise UserError("give one feature space: --feature-extractor PROGRAM or --feature-preset NAME, not both")
    if feature_extractor is not None or preset_name is not None:
        if not needing(which, "features") and not (preset_name and needing(which, "embeddings")):
            raise UserError(f"--feature-extractor / --feature-preset are for the metrics computed on image features "
                            f"({', '.join(m.name for m in image_metrics() if 'features' in m.needs)})")
        out["extractor"] = (program_extractor(feature_extractor, **program) if preset_name is None
                            else load_preset(preset_name, preset_weights, device=device))
    preset_image = preset_name is not None and out["extractor"].text is not None  # a CLIP preset
    audio_name, audio_weights, unaligned = audio_preset
    if audio_weights is not None and audio_name is None:
        raise UserError("--ais-audio-weights is the checkpoint of an --ais-audio-preset; name the preset")
    if audio_name is not None and ais_audio is not None:
        raise UserError("give one audio encoder for AIS: --ais-audio PROGRAM or --ais-audio-preset NAME, not both")
    if needing(which, "embeddings") or ais_audio or ais_image or audio_name:
        if not (ais_audio or audio_name) or not (ais_image or preset_image):
            raise UserError("AIS needs both encoders of your own: --ais-audio PROGRAM and --ais-image PROGRAM "
                            "(TorchScript or torch.export, each with its sidecar .json; see docs/metrics.md), or "
                            "--ais-audio (or --ais-audio-preset) with a CLIP --feature-preset as the image side")
        if preset_image and ais_image:
            raise UserError(f"--ais-image: the CLIP preset {preset_name} is AIS's image encoder; leave --ais-image out")
        if not needing(which, "embeddings"):
            raise UserError("--ais-audio / --ais-audio-preset / --ais-image are for --metrics ais, ais_rank, ais_z")

        store.require_waveforms("AIS")
        if audio_name and preset_image:
            why = (f"AIS with {audio_name} and {preset_name}: CLAP's audio space and CLIP's image space were trained "
                   "apart (each against its own text tower), so their cosine is not an alignment the field has "
                   "validated")
            if not unaligned:
                raise UserError(f"{why}; pair CLAP with an image encoder in its space (--ais-image), or pass "
                                "--ais-unaligned to compute it anyway (the record's recipe names both)")
            logger.warning(why)
        audio_fn, audio_ref = (load_audio_preset(audio_name, audio_weights, store, device=device) if audio_name else
                               audio_encoder(ais_audio, store.sample_rate, high_rate=store.hires_rate, **program))
        image = out["extractor"] if preset_image else program_extractor(ais_image, **program)
        out["ais"] = (image, audio_fn, {"audio": audio_ref, "image": image.ref()})
    return out


def load_spec(kind: str, spec, store, protocol, device, translator_options=None):
    """A translator of a kind `translator_kind` named: a reference, a local plugin or a file."""
    if kind == "reference":
        return load_reference(str(spec), store, device=device)
    if kind == "plugin":
        return load_plugin(str(spec), protocol, device)

    return load_translator(Path(spec), device=device, **(translator_options or {}))


def _store_warnings(st, bun, protocol) -> None:
    made_with = (bun.card.get("protocol") or {}) if isinstance(bun.card, dict) else {}
    if made_with.get("fingerprint") not in (None, protocol.fingerprint):
        logger.warning(f"{bun.path} was trained under protocol {made_with.get('name')!r} "
                       f"({made_with.get('fingerprint')}), the store {st.path} is {protocol.name!r} "
                       f"({protocol.fingerprint}): its Se and Sp may not hold here")
    if st.leaky:
        logger.warning(f"{st.path}: split policy {st.split_policy!r} is leaky; scores on it overstate what a "
                       f"translator does on unseen videos")


def _score_run(path: Path, st, bun, out, samples, as_json, translator_options, kwargs) -> dict[str, Any]:
    protocol = kwargs["protocol"]
    run = RunFolder(path)
    scored, now = score_checkpoints(run, st, bun, out=out, translator_options=translator_options, samples=samples,
                                    **kwargs)
    result = {"kind": "informativity-series", "run": str(run.path), "records_path": str(out or run.records_path),
              "num_checkpoints": len(run.checkpoints()), "scored_now": len(now),
              "had_records": len(scored) - len(now), "num_records": len(scored),
              "protocol": protocol.ref(), "store": st.ref(), "split": kwargs["split"], "seed": kwargs["seed"],
              "samples": samples, "classifiers": {"path": str(bun.path), "sha256": file_sha256(Path(bun.path))},
              "d_update_from": "log.csv" if run.log_path.is_file() else "records",
              "summary": series.summarise(scored, protocol, d_update_epochs=run.d_update_epochs()),
              "records": [r.to_dict() for r in scored]}

    if distributed.is_main():  # under torchrun, one answer (rank 0's)
        print(json.dumps(to_jsonable(result), indent=2) if as_json else format_run(result, protocol))
    distributed.close()
    return result


# -- text output ---------------------------------------------------------------------------------
def _pct(x) -> str:
    return percent(x, missing="-")


def format_record(record: records.Record, protocol) -> str:
    t, s = record.translator, record.store
    names = dict(zip(protocol.class_keys, protocol.class_names))
    p = record.protocol
    lines = [
        f"translator {t.get('path')} ({t.get('kind')}, sha256 {str(t.get('sha256'))[:12]}, "
        f"epoch {'-' if record.epoch is None else record.epoch})",
        f"protocol   {p.get('name')} {p.get('version')} ({p.get('fingerprint')})",
        f"store      {s.get('path')} (hash {s.get('hash')}, split policy {s.get('split_policy')}"
        f"{', LEAKY' if s.get('leaky') else ''})",
        f"scored     split {record.split}, seed {record.seed}, {record.samples} image(s) per sound, "
        f"{record.num_sounds} sounds, {record.seconds} s",
        "",
    ]
    spread = (record.samples or 1) > 1
    header = (f"{'class':<16} {'images':>6} {'raw':>7} {'corrected [95% CI]':>24} {'class-match':>11} {'true':>7}"
              + (f" {'raw spread':>10}" if spread else ""))
    lines += [header, "-" * len(header)]
    for key in record.class_keys:
        c = record.cls(key)
        ci = c.get("corrected_ci")
        corr = _pct(record.share(key, "corrected_share")) + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
        line = (f"{names.get(key, key):<16} {c.get('n_images'):>6} {_pct(record.share(key)):>7} {corr:>24} "
                f"{_pct(record.share(key, 'class_match_rate')):>11} {_pct(record.share(key, 'true_share')):>7}")
        if spread:
            rs = "-" if c.get("raw_spread") is None else f"{100 * c['raw_spread']:.1f} pp"
            line += f" {rs:>10}"
        lines.append(line)
    lines.append(f"{'mean':<16} {'':>6} {_pct(record.mean()):>7} {_pct(record.mean('corrected_share')):>24} "
                 f"{_pct(record.mean('class_match_rate')):>11} {_pct(record.mean('true_share')):>7}")
    return "\n".join(lines)


def format_run(result: dict[str, Any], protocol) -> str:
    lines = [f"run {result['run']}: {result['num_checkpoints']} checkpoints; scored {result['scored_now']} now, "
             f"{result['had_records']} already had a record in {result['records_path']}; "
             f"D-update epochs from {result['d_update_from']}",
             f"store {result['store']['hash']} (split policy {result['store']['split_policy']}), split "
             f"{result['split']}, seed {result['seed']}, {result['samples']} image(s) per sound", ""]
    titles = {"raw_share": "Informativity (raw classifier share, the paper's I(t))",
              "corrected_share": "Corrected share (Rogan-Gladen)", "true_share": "True share (synthetic judge)",
              "class_match_rate": "Class-match rate"}
    for measure, summary in result["summary"].items():
        lines.append(f"== {titles[measure]}")
        lines.append(format_summary(summary, dict(zip(protocol.class_keys, protocol.class_names))))
        lines.append("")
    return "\n".join(lines)


# -- `s2i-bench metrics` -------------------------------------------------------------------------
def read_series_csv(path: str | Path, class_keys: Sequence[str]):
    """Read and check a per-epoch series CSV: epoch, d_update (0/1), one column per class key
    with values in [0, 1]. Every problem is a `UserError` naming the file."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:  # pandas' parser errors are ValueErrors
        raise UserError(f"{path}: cannot read as CSV ({e})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("epoch", "d_update", *class_keys) if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing columns {missing} (need epoch, d_update and one per class: "
                        f"{', '.join(class_keys)}; found {', '.join(df.columns)})")
    if df.empty:
        raise UserError(f"{path}: no rows")
    for col in ("epoch", "d_update", *class_keys):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(f"{path}: column {col!r} has an empty or non-numeric value at data row {row + 1} "
                            f"({df[col].iloc[row]!r})")
        df[col] = values
    epoch = df["epoch"].to_numpy(dtype=np.float64)
    if (epoch != np.round(epoch)).any() or (epoch < 0).any() or (epoch > MAX_EPOCH).any():
        raise UserError(f"{path}: epoch must be whole numbers in 0..{MAX_EPOCH} (largest here: {epoch.max():.6g})")
    df["epoch"] = df["epoch"].astype(np.int64)
    dup = df["epoch"][df["epoch"].duplicated()].unique().tolist()
    if dup:
        raise UserError(f"{path}: duplicate epochs {dup[:10]}{' ...' if len(dup) > 10 else ''}")
    if not df["d_update"].isin([0, 1]).all():
        raise UserError(f"{path}: d_update must be 0 or 1")
    for key in class_keys:
        v = df[key].to_numpy(dtype=np.float64)
        if (v < 0).any() or (v > 1).any():
            raise UserError(f"{path}: column {key!r} has values outside 0..1 (informativity is a share); "
                            f"min {v.min():g}, max {v.max():g}")
    return df.sort_values("epoch").reset_index(drop=True)


def format_summary(summary: Mapping[str, Any], class_names: Mapping[str, str] | None = None) -> str:
    """A plain-text table of a `summarise_classes` summary."""
    def pct(x):
        return percent(x, width=5, missing="     -")

    lines = []
    s, e = summary["window"]
    covered = summary["epochs"]
    lines.append(f"epochs {covered[0]}..{covered[1]} ({summary['num_epochs']} scored)" if covered else "no epochs")
    if summary["missing_epochs"]:
        lines.append(f"missing epochs (not filled): {_ranges(summary['missing_epochs'])}")
    lines.append(f"window average over epochs {s}..{e} (inclusive); moving average over "
                 f"{summary['moving_average']} epochs (full windows only)")
    lines.append("")
    header = f"{'class':<16} {'window avg':>10} {'epochs':>7} {'max MA':>8} {'at epoch':>9}"
    lines.append(header)
    lines.append("-" * len(header))
    rows = [(class_names.get(k, k) if class_names else k, v) for k, v in summary["classes"].items()]
    rows.append(("mean I(t)", summary["mean"]))
    for name, v in rows:
        at = "-" if v["max_moving_average_epoch"] is None else str(v["max_moving_average_epoch"])
        lines.append(f"{name:<16} {pct(v['window_average']):>10} {v['window_epochs']:>7} "
                     f"{pct(v['max_moving_average']):>8} {at:>9}")
    m = summary["mean"]
    lines.append("")
    lines.append(f"replaced (after a D update): {_ranges(m['replaced_epochs']) or 'none'}")
    lines.append(f"left out (nothing earlier):  {_ranges(m['left_out_epochs']) or 'none'}")
    return "\n".join(lines)


def _ranges(epochs: Sequence[int], limit: int = 12) -> str:
    """[0, 1, 2, 5, 6] -> '0-2, 5-6'; more than `limit` runs: the first and last few and a count."""
    runs: list[list[int]] = []
    for e in epochs:
        if runs and e == runs[-1][1] + 1:
            runs[-1][1] = e
        else:
            runs.append([e, e])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs]
    if len(parts) > limit:
        return f"{len(epochs)} epochs: " + ", ".join(parts[:limit - 2] + ["..."] + parts[-2:])
    return ", ".join(parts)


def metrics_command(series_csv, protocol, *, as_json: bool = False, out=None) -> dict[str, Any]:
    """`s2i-bench metrics SERIES.csv`: print the paper's metrics of a per-epoch series."""
    keys = protocol.class_keys
    df = read_series_csv(series_csv, keys)
    extra = [c for c in df.columns if c not in ("epoch", "d_update", *keys)]
    if extra:
        logger.info(f"note: {series_csv}: ignoring columns {extra}")
    summary, replaced = M.summarise_frame(df, keys, protocol.metrics)
    result = {"protocol": protocol.ref(), "source": str(series_csv), **summary}
    if out is not None:
        atomic_write_text(out, replaced.to_csv(index=False, na_rep=""))
    if as_json:
        print(json.dumps(to_jsonable(result), indent=2))
    else:
        print(f"protocol {protocol.name} {protocol.version} ({protocol.fingerprint}); series {series_csv}")
        print(format_summary(summary, dict(zip(keys, protocol.class_names))))
        if out is not None:
            print(f"replaced series written to {out}")
    return result
