"""`s2i-bench report` and `s2i-bench compare` as the command line runs them: what a bare command
falls back on (the embedded default's runs, store and classifiers), and what is printed."""

from __future__ import annotations

import logging
import json

from s2i_bench import defaults
from s2i_bench.errors import UserError
from s2i_bench.fileio import to_jsonable
from s2i_bench.report import build_report
from s2i_bench.report.comparison import write_comparison
from s2i_bench.scoring.compare import compare, format_comparison

logger = logging.getLogger(__name__)


def report_command(inputs, out=None, *, figures: bool = False, store=None, bundle=None, formats: str = "png",
                   overwrite: bool = False, audits=()) -> None:
    """`s2i-bench report`: without `inputs`, the embedded default's runs and reference
    translators, with its store and classifiers, into its report folder. `formats`: "png,pdf"."""
    if not inputs:
        inputs = defaults.runs()
        refs = defaults.work().references
        inputs += [refs] if refs.is_file() else []
        logger.info(f"report: the embedded default's {len(inputs)} input(s): {', '.join(p.name for p in inputs)}")
        store = store or defaults.store()
        bundle = bundle or (defaults.bundle() if defaults.work().bundle.is_file() else None)
        out = out or defaults.work().full_report
    elif out is None:
        raise UserError("missing --out REPORT_FOLDER")
    build_report(list(inputs), out=out, figures=figures, store=store, bundle=bundle,
                 formats=[f.strip() for f in formats.split(",") if f.strip()], overwrite=overwrite, audits=list(audits))


def compare_command(systems, *, store=None, bundle=None, epoch: int | None = None, window: bool = False,
                    split: str | None = None, n_boot: int | None = None, seed: int = 0, as_json: bool = False,
                    out=None, audits=()) -> None:
    """`s2i-bench compare`: the comparison printed (as text, or JSON with `as_json`), and with
    `out` written there as well (`comparison.write_comparison`)."""
    if len(systems) < 2:
        raise UserError(f"a comparison needs two systems or more; got {len(systems)}")
    if epoch is not None and window:
        raise UserError("give --epoch (one checkpoint) or --window (the series metrics), not both")
    result = compare(list(systems), store=store, bundle=bundle, epoch=epoch, window=window, split=split, n_boot=n_boot,
                     seed=seed, audits=list(audits))
    if out is not None:
        write_comparison(result, out)
        logger.info(f"comparison written to {out}")
    print(json.dumps(to_jsonable(result), indent=2) if as_json else format_comparison(result))
