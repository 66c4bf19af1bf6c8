"""The typed metric record: what every reader asks of a record, by accessor (`Record`).

`scoring.records` owns the record's schema, its file, its writers and its checked reader, and
returns `Record`s (`records.Record` is this class); this module holds the type alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from s2i_bench.fileio import dig
from s2i_bench.runs import run_of_checkpoint
from s2i_bench.scoring.decisions import unpack_decisions

PRDC_PARTS = ("precision", "recall", "density", "coverage")
AUDITED = "audited_share"  # a measure only an audited record has (the `audit` block)


@dataclass(frozen=True, eq=False)
class Record:
    """One scored translator, as read back (`read`): what every reader asks of a record, by
    accessor. The JSON layout is docs/architecture.md ("Metric records"); only this class and the
    checks in `scoring.records` spell its keys. Records of formats 1-3 read the same (format 4 renamed
    `generator` to `translator`)."""

    data: Mapping[str, Any] = field(repr=False)  # the JSON object as written, never changed
    source: str = ""  # "<file name>:<line>", for messages

    # -- what was scored --------------------------------------------------------------------------
    @property
    def translator(self) -> Mapping[str, Any]:
        """path, sha256, kind, epoch, embedding_dim, run, plugin, inputs, native_size (+ a loader's keys)."""
        return self.data.get("translator") or self.data.get("generator") or {}

    @property
    def translator_kind(self) -> str | None:
        return self.translator.get("kind")

    @property
    def translator_name(self) -> str | None:
        """A reference translator's or plugin's own name, if it has one."""
        return self.translator.get("name")

    @property
    def translator_path(self) -> str | None:
        return self.translator.get("path")

    @property
    def translator_sha256(self) -> str | None:
        return self.translator.get("sha256")

    @property
    def embedding_dim(self) -> int | None:
        dim = self.translator.get("embedding_dim")
        return dim if isinstance(dim, int) and not isinstance(dim, bool) else None

    @property
    def run(self) -> str:
        """The run the record belongs to: its `run`, else the translator's, else the run folder of
        its checkpoint path (`RUN/checkpoints/generator-E.pt`), else the file's stem."""
        for name in (self.data.get("run"), self.translator.get("run")):
            if name:
                return str(name)
        return run_of_checkpoint(str(self.translator_path or "unnamed"))

    @property
    def epoch(self) -> int | None:
        return self.data.get("epoch")

    @property
    def d_update(self) -> bool | None:
        d = self.data.get("d_update")
        return None if d is None else bool(d)

    # -- how it was scored ------------------------------------------------------------------------
    @property
    def split(self) -> str | None:
        return self.data.get("split")

    @property
    def seed(self) -> int | None:
        return self.data.get("seed")

    @property
    def samples(self) -> int | None:
        return self.data.get("samples")

    @property
    def protocol(self) -> Mapping[str, Any]:
        """name, version, fingerprint."""
        return self.data.get("protocol") or {}

    @property
    def store(self) -> Mapping[str, Any]:
        """path, hash, split_policy, leaky, protocol."""
        return self.data.get("store") or {}

    @property
    def store_hash(self) -> str | None:
        return self.store.get("hash")

    @property
    def split_policy(self) -> str | None:
        return self.store.get("split_policy")

    @property
    def leaky(self) -> bool:
        return bool(self.store.get("leaky"))

    @property
    def classifiers(self) -> Mapping[str, Any]:
        """path, sha256, source, protocol, store_hash, class_match."""
        return self.data.get("classifiers") or {}

    @property
    def classifiers_sha256(self) -> str | None:
        return self.classifiers.get("sha256")

    @property
    def series_key(self) -> tuple:
        """What must agree for records to form one series (`SERIES_FIELDS`): the classifiers,
        store, split, seed, samples and protocol."""
        return (self.classifiers_sha256, self.store_hash, self.split, self.seed, self.samples,
                self.protocol.get("fingerprint"))

    @property
    def metrics(self) -> list[str]:
        """The metrics scored (informativity, and the image metrics asked for)."""
        return list(self.data.get("metrics") or ["informativity"])

    @property
    def num_sounds(self) -> int:
        return int(self.data.get("num_sounds") or sum(int(self.cls(k).get("n_sounds") or 0) for k in self.class_keys))

    @property
    def seconds(self) -> float | None:
        """How long the scoring took."""
        return self.data.get("seconds")

    @property
    def code_version(self) -> str | None:
        return self.data.get("code_version")

    @property
    def sample_sheet(self) -> str | None:
        return self.data.get("sample_sheet")

    # -- the numbers ------------------------------------------------------------------------------
    @property
    def class_keys(self) -> list[str]:
        """The classes the record has, in its (the protocol's) order."""
        return list(self.data["classes"])

    def cls(self, class_key: str) -> Mapping[str, Any]:
        """One class's results (n_sounds, n_images, raw_share, raw_ci, corrected_share,
        corrected_ci, sensitivity, specificity, class_match_rate, true_share, ...); {} if absent."""
        return self.data["classes"].get(class_key) or {}

    def share(self, class_key: str, measure: str = "raw_share") -> float | None:
        """One class's share by measure: raw_share, corrected_share, true_share, class_match_rate,
        or audited_share (from the audit block; None without an audit)."""
        if measure == AUDITED:
            v = dig(self.audit, "classes", class_key, AUDITED)
        else:
            v = self.cls(class_key).get(measure)
        return None if v is None else float(v)

    # -- the audit (format 5) ------------------------------------------------------------------------
    @property
    def audit(self) -> Mapping[str, Any]:
        """The audit block (`s2i-bench label-audit estimate`), {} for a record without an audit."""
        return self.data.get("audit") or {}

    @property
    def has_audit(self) -> bool:
        return bool(self.audit)

    @property
    def audited_of(self) -> str | None:
        """The checksum of the scored record this audited record was made from."""
        return self.audit.get("of")

    def audited_ci(self, class_key: str | None = None) -> list[float] | None:
        """The audited share's interval, of one class or (None) of the mean over the classes."""
        where = ("mean",) if class_key is None else ("classes", class_key)
        return dig(self.audit, *where, "audited_ci")

    def audited_half_width(self, class_key: str | None = None) -> float | None:
        where = ("mean",) if class_key is None else ("classes", class_key)
        return dig(self.audit, *where, "half_width")

    def mean(self, measure: str = "raw_share") -> float | None:
        """The mean over the scored classes; the judge's truth falls back on the mean over every
        class (`mean_all_classes`) when the scored classes have none."""
        v = dig(self.audit, "mean", AUDITED) if measure == AUDITED else dig(self.data, "mean", measure)
        if v is None and measure == "true_share":
            v = dig(self.data, "mean_all_classes", measure)
        return None if v is None else float(v)

    def mean_all_classes(self, measure: str = "true_share") -> float | None:
        """The mean over every class of the protocol (the scored classes' mean when the record has
        no such mean): what image-set metrics, which see every class, are compared with."""
        v = dig(self.data, "mean_all_classes", measure)
        if v is None:
            v = dig(self.data, "mean", measure)
        return None if v is None else float(v)

    def mean_result(self) -> dict[str, Any]:
        """The means block as written (raw_share, corrected_share, corrected_ci, class_match_rate,
        true_share, classes)."""
        return dict(self.data.get("mean") or {})

    def mean_ci(self, measure: str = "corrected_share") -> list[float] | None:
        """The interval of a mean (the corrected share's, where the record has one)."""
        return dig(self.data, "mean", "corrected_ci") if measure == "corrected_share" else None

    def has_measure(self, measure: str) -> bool:
        return any(self.share(k, measure) is not None for k in self.class_keys)

    @property
    def image_metrics(self) -> Mapping[str, Any]:
        """{metric: {value, ci, ...}, "extractor": ref, ...}; {} without image metrics."""
        return self.data.get("image_metrics") or {}

    def image_metric(self, name: str) -> float | None:
        """The value of an image metric: "fid", "kid", "iis", "ais", or a PRDC part
        ("precision", "recall", "density", "coverage")."""
        v = dig(self.image_metrics, "prdc", name, "value") if name in PRDC_PARTS else None
        if v is None:
            v = dig(self.image_metrics, name, "value")
        if v is None:  # a part of a metric with several numbers (retrieval's R@k)
            v = next((dig(e, name, "value") for e in self.image_metrics.values()
                      if isinstance(e, dict) and isinstance(e.get(name), dict)), None)
        return None if v is None else float(v)

    @property
    def has_decisions(self) -> bool:
        return bool(self.data.get("decisions"))

    def image_metric_ci(self, name: str) -> list[float] | None:
        """The bootstrap interval of an image-set metric ("fid", "kid", "retrieval_r1", ...), or None."""
        ci = dig(self.image_metrics, name, "ci")
        if ci is None:  # a part of a metric with several numbers
            ci = next((dig(e, name, "ci") for e in self.image_metrics.values()
                       if isinstance(e, dict) and isinstance(e.get(name), dict)), None)
        return ci or None

    def image_metric_warning(self, name: str) -> str | None:
        return dig(self.image_metrics, name, "warning")

    @property
    def feature_space_name(self) -> str | None:
        return dig(self.image_metrics, "extractor", "name")

    @property
    def feature_space(self) -> str | None:
        """What the image metrics were computed on (the extractor's identity): two records'
        image metrics compare only when it is the same."""
        return dig(self.image_metrics, "extractor", "sha256")

    @property
    def recipe(self) -> Mapping[str, Any] | None:
        """What the image metrics were computed on, path-free (`scoring.presets.record_recipe`):
        the network, its checkpoint's sha256, preprocessing, precision, audio encoder, metric
        constants; None for records without one (before recipes, or without image metrics)."""
        return dig(self.image_metrics, "recipe")

    @property
    def recipe_identity(self) -> str | None:
        """The recipe's identity string; records from before recipes fall back on their
        extractor's sha256 ("extractor:<sha256>"); None without image metrics."""
        ident = dig(self.image_metrics, "recipe", "identity")
        if ident is None and self.feature_space is not None:
            ident = f"extractor:{self.feature_space}"
        return ident

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The attribute scores (`scoring.attributes`: estimators, their error, probes, dimensions);
        {} for a record scored without `--attributes`."""
        return self.data.get("attributes") or {}

    def attribute(self, dimension: str) -> Mapping[str, Any]:
        """One attribute dimension ("tone", "size", "mixture_louder", "mixture_both",
        "out_of_protocol"): {label, value, ci, higher_is_better, classes or parts, ...}; {} if absent."""
        return dig(self.attributes, "dimensions", dimension) or {}

    def decisions(self) -> dict[str, Any] | None:
        """{order, shape, informative, truth, class_match, iis, probability} with (K, N) arrays
        (plan order: class by class, `n_sounds` each; `probability`, each image's P(informative)
        with `informative == (probability > 0.5)`, is None in records scored without it), or
        None for a record without decisions (format 1-2)."""
        return unpack_decisions(self.data.get("decisions"), self.source or "record")

    def n_sounds(self, class_key: str) -> int:
        return int(self.cls(class_key).get("n_sounds") or 0)

    def n_images(self, class_key: str) -> int:
        return int(self.cls(class_key).get("n_images") or 0)

    @property
    def total_images(self) -> int:
        """Every scored image, over every class (what the judge saw)."""
        return sum(self.n_images(k) for k in self.class_keys)

    def class_slices(self, class_keys=None) -> dict[str, slice]:
        """Each class's positions in the decisions: class by class, `n_sounds` each, in the order
        of `class_keys` (default: the record's, which is the protocol's)."""
        out, start = {}, 0
        for k in (self.class_keys if class_keys is None else class_keys):
            n = self.n_sounds(k)
            out[k] = slice(start, start + n)
            start += n
        return out

    def to_dict(self) -> dict[str, Any]:
        """The record as written (for `--json` and for writing it again)."""
        return dict(self.data)
