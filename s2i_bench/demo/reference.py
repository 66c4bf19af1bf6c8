"""The committed reference (results/demo) updated from a finished demo report, and the timings
of the steps kept beside the working data."""

from __future__ import annotations

import json
from pathlib import Path

from s2i_bench.demo.steps import StepRunner
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_json
from s2i_bench.provenance import library_versions, machine_info, now_iso
from s2i_bench.publish import publish_folder
from s2i_bench.report import REPORT_KIND


def write_timings(path: Path, runner: StepRunner, total: float) -> None:
    """How long the steps took, on which machine (load average included): beside the working
    data, not in the report, since no two runs take the same time."""
    previous = json.loads(path.read_text()) if path.is_file() else {}
    steps = dict(previous.get("step_seconds", {}))
    steps.update({k: round(v, 1) for k, v in runner.timings.items() if v > 0})
    atomic_write_json(path, {"finished": now_iso(), "seconds_this_run": round(total, 1), "step_seconds": steps,
                             "machine": machine_info(), "libraries": library_versions()})


def update_reference(report_dir: Path, reference: Path) -> None:
    """Copy a finished demo report over the committed reference (results/demo). Only files the
    reference's own manifest lists, and unchanged, are replaced or removed."""
    report_dir, reference = Path(report_dir), Path(reference)
    if not (report_dir / "demo.json").is_file() or not (report_dir / "index.md").is_file():
        raise UserError(f"{report_dir}: no finished demo report (run `s2i-bench demo` first)")
    publish_folder(report_dir, reference, REPORT_KIND, move=False, what="`s2i-bench demo`")
    print(f"reference {reference} updated from {report_dir}")
