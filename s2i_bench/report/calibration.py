"""The classifiers' calibration drawn: one reliability diagram per class, from the `calibration`
block of the bundle's JSON card (`informativity.recipe.reliability`, measured on each
classifier's held-out test images when it was trained)."""

from __future__ import annotations

from typing import Any, Mapping

from s2i_bench.fileio import dig
from s2i_bench.report.figures import FULL_IN, class_colours

MAX_MARKER = 60.0  # points^2 of the fullest bin's marker


def has_calibration(card: Mapping[str, Any] | None) -> bool:
    """True when the card holds reliability bins of at least one class."""
    return bool(dig(card or {}, "calibration", "classes"))


def reliability_figure(card: Mapping[str, Any], class_keys, class_names):
    """One panel per class with a calibration entry: the share of informative test images
    against the mean P(informative) of every non-empty bin (marker area ~ the bin's count), the
    diagonal of perfect calibration, and the ECE in the panel's title."""
    from matplotlib.figure import Figure

    classes = dig(card, "calibration", "classes") or {}
    shown = [(k, n) for k, n in zip(class_keys, class_names) if k in classes]
    if not shown:
        return None
    colours = class_colours(class_keys)
    fig = Figure(figsize=(FULL_IN, 1.9), layout="constrained")
    axes = fig.subplots(1, len(shown), sharex=True, sharey=True, squeeze=False)[0]
    for ax, (key, name) in zip(axes, shown):
        c = classes[key]
        bins = [b for b in c.get("bins") or [] if b.get("count")]
        most = max((b["count"] for b in bins), default=1)
        ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--")
        for b in bins:  # the gap to the diagonal is what the ECE averages
            ax.plot([b["mean_probability"]] * 2, [b["mean_probability"], b["share_informative"]], color="0.75", lw=0.8)
        ax.scatter([b["mean_probability"] for b in bins], [b["share_informative"] for b in bins],
                   s=[MAX_MARKER * b["count"] / most + 4 for b in bins], color=colours[key], lw=0, zorder=3)
        ece = c.get("ece")
        ax.set_title(f"{name}\nECE {ece:.3f} (n = {c.get('n')})" if ece is not None else name, loc="left")
        ax.set_xlim(-0.04, 1.04)  # room for the markers of the end bins
        ax.set_ylim(-0.04, 1.04)
        ax.set_aspect("equal")
        ax.set_xlabel("mean P(informative)")
    axes[0].set_ylabel("share informative")
    return fig
