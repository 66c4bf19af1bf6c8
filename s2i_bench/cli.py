"""The `s2i-bench` command line. Thin on purpose: parse, load the protocol, call one function.

Heavy imports (torch, av, pandas) happen inside the commands so `s2i-bench --help` is instant.
A `UserError` becomes one line on stderr and exit status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from s2i_bench import __version__
from s2i_bench.cli_options import ExistingPath, PathArg, protocol_option, with_program_options
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol


def _friendly(fn):
    """Turn expected failures into a one-line message instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:  # disk full, permission denied, ...: the file and the reason, no traceback
            from s2i_bench.fileio import describe_os_error

            click.echo(f"error: {describe_os_error(e)} (nothing half-written was left in place: "
                       f"files are written to a temporary name first)", err=True)
            sys.exit(2)
        except MemoryError:
            click.echo("error: out of memory", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="s2i-bench")
def main():
    """Evaluation and benchmarking toolkit for sound-to-image translation."""


# -- data -------------------------------------------------------------------------------------
@main.command(short_help="Write the embedded synthetic audiovisual world as .mp4 videos.")
@click.argument("out", type=PathArg)
@protocol_option
@click.option("--videos-per-class", type=click.IntRange(1), default=None,
              help="Default: the protocol's synth.videos_per_class.")
@click.option("--seed", type=int, default=None, help="Default: the protocol's synth.seed.")
@click.option("--dirty", is_flag=True,
              help="Add the faults real data has (corrupt file, no audio, <1 s, shared id, re-upload).")
@click.option("--overwrite", is_flag=True, help="Replace the contents of OUT if it is not empty.")
@click.option("--vggsound", is_flag=True,
              help="Write a VGGSound stand-in instead: clips named <id>_<start>.mp4, vggsound.csv, a VGGSounder-style "
                   "tag file and a protocol file (for testing the vggsound protocol offline).")
@_friendly
def synth(out, protocol_name, videos_per_class, seed, dirty, overwrite, vggsound):
    """Write the synthetic world to OUT: one folder per class of H.264/AAC .mp4 files named by
    YouTube-like ids, plus scenes.json with every video's scene parameters."""
    if vggsound:
        from s2i_bench.synth.vggsound_standin import write_vggsound_standin

        if dirty or protocol_name:
            raise UserError("--vggsound writes its own protocol file and its own faults: no --dirty or --protocol")
        write_vggsound_standin(out, videos_per_class=videos_per_class, seed=seed, overwrite=overwrite)
        return
    protocol = load_protocol(protocol_name or "synth")
    from s2i_bench.synth.world import write_world

    write_world(out, protocol, videos_per_class=videos_per_class, seed=seed,
                dirty=dirty, overwrite=overwrite)


@main.command(short_help="Videos -> 1-s segment store with video-disjoint splits and a leakage audit.")
@click.argument("source", type=ExistingPath)
@click.option("--out", type=PathArg, required=True, help="Store folder to write.")
@protocol_option
@click.option("--split-policy", type=click.Choice(["video", "random"]), default=None,
              help="video (default, the paper) or random (segment-level, leaky: only to measure leakage).")
@click.option("--seed", type=int, default=None, help="Split seed. Default: the protocol's split.seed.")
@click.option("--allow-leakage", is_flag=True, help="Write the store even when the audit finds leakage.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Decoding processes.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run without redoing finished videos.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--audio-context-s", type=float, default=0.0, show_default=True,
              help="Also keep the C s of audio centred on each segment (zeros outside the clip), for systems "
                   "that listen longer than 1 s (Sound2Scene, AudioToken: 10).")
@click.option("--audio-rate", default=None, metavar="native|HZ",
              help="Also keep each segment's audio at the sources' own rate (native) or at HZ (44100, 48000), beside "
                   "the 16 kHz copy, for encoders that listen above 8 kHz (export-sounds --sample-rate).")
@click.option("--clips", type=ExistingPath, default=None,
              help="VGGSound protocols: the folder holding the clips <YouTube id>_<start>.mp4 (default: the CSV's).")
@click.option("--labels", type=ExistingPath, default=None,
              help="VGGSound protocols: VGGSounder's tag file (default: the protocol's, from the vggsounder wheel).")
@_friendly
def prepare(source, out, protocol_name, split_policy, seed, allow_leakage, workers, resume, overwrite, audio_context_s,
            audio_rate, clips, labels):
    """Turn SOURCE (a folder with one sub-folder per class, or a manifest CSV with columns
    path,class[,video_id][,split]; for --protocol vggsound, VGGSound's official CSV) into the
    segment store that training and scoring read."""
    protocol = load_protocol(protocol_name or "synth")
    from s2i_bench.data.prepare import prepare_store

    prepare_store(source, out, protocol, split_policy=split_policy, seed=seed,
                  allow_leakage=allow_leakage, workers=workers, resume=resume, overwrite=overwrite,
                  audio_context_s=audio_context_s, audio_rate=audio_rate, clips=clips, labels=labels)


@main.command(short_help="Audit a store for leakage between splits.")
@click.argument("store", type=ExistingPath)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_friendly
def audit(store, as_json):
    """Check STORE for the same video id in two splits and near-duplicate videos across splits.
    Exits 1 when leakage is found."""
    from s2i_bench.data.audit import audit_command

    sys.exit(audit_command(store, as_json=as_json))


# -- the reference translator -----------------------------------------------------------------
@main.command("train-baseline", short_help="Train the paper's translator (autoencoder, dense G, conditioned D).")
@click.option("--data", "store", type=ExistingPath, default=None,
              help="Segment store from `prepare`. Default: the embedded default's (demo-work/store).")
@click.option("--out", "run_dir", type=PathArg, default=None,
              help="Run folder. Default with the embedded store: demo-work/runs/train-N (the first N free).")
@protocol_option
@click.option("--embedding-dim", type=int, default=None, help="f. Default: the protocol's training.embedding_dim.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Default: the protocol's training.epochs.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped.")
@click.option("--autoencoder", type=ExistingPath, default=None, help="Reuse a trained autoencoder checkpoint.")
@click.option("--classifiers", type=ExistingPath, default=None, help="Bundle: score informativity every epoch.")
@click.option("--save-every", type=click.IntRange(1), default=None, help="Epochs between checkpoints.")
@click.option("--seed", type=int, default=None, help="Default: the protocol's training.seed.")
@click.option("--seeds", default=None, metavar="S1,S2,...",
              help="Train one run per seed into OUT/seed-S/ (a group: `compare` and `report` show the spread).")
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the models (CUDA).")
@click.option("--baseline", default=None, metavar="NAME",
              help="Which installed translator plugin trains (default: the only one, s2i-translator).")
@_friendly
def train_baseline(store, run_dir, protocol_name, embedding_dim, epochs, device, resume, autoencoder,
                   classifiers, save_every, seed, seeds, use_compile, baseline):
    """Train the reference translator of the paper on STORE (Algorithm 1, SPEC section 4). Bare, it
    trains on the embedded default's store into a new run folder, scored every epoch with the
    default's classifiers, so that a bare `s2i-bench report --figures` shows it."""
    protocol = load_protocol(protocol_name) if protocol_name else None  # default: the store's (or the run's)
    from s2i_bench.training import train_command

    train_command(store, run_dir, protocol, classifiers=classifiers, seed=seed, seeds=seeds,
                  embedding_dim=embedding_dim, epochs=epochs, device=device, resume=resume, autoencoder=autoencoder,
                  save_every=save_every, use_compile=use_compile, baseline=baseline)


# -- informativity classifiers ----------------------------------------------------------------
@main.command(short_help="Translate held-out sounds with many generators into a candidate pool.")
@click.argument("generators", type=ExistingPath, nargs=-1, required=True)
@click.option("--data", "store", type=ExistingPath, required=True)
@click.option("--out", "pool_dir", type=PathArg, required=True)
@click.option("--split", type=click.Choice(["train", "val"]), default=None,
              help="Whose sounds to translate. Default: the protocol's classifiers.pool_split (vegas5: val).")
@click.option("--per-model", type=click.IntRange(1), default=None,
              help="Images per model and class. Default: the protocol's.")
@click.option("--draws", "draws_per_sound", type=click.IntRange(1), default=None,
              help="Dropout draws per sound when a class has fewer sounds than --per-model. Default: the protocol's.")
@click.option("--per-run-last", is_flag=True,
              help="A run folder contributes only its latest checkpoint (default: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--overwrite", is_flag=True)
@with_program_options
@_friendly
def pool(generators, store, pool_dir, split, per_model, draws_per_sound, per_run_last, seed, device, overwrite,
         program_timeout, program_memory, unconfined):
    """Translate the validation sounds of STORE (or the split the protocol names) with each
    GENERATOR (checkpoint files or run folders, any mix; every checkpoint of a run folder is one
    model)."""
    from s2i_bench.informativity.pool import build_pool
    from s2i_bench.distributed import check_device

    build_pool(list(generators), store=store, out=pool_dir, split=split, per_model=per_model, seed=seed,
               overwrite=overwrite, device=check_device(device), per_run="last" if per_run_last else "all",
               draws_per_sound=draws_per_sound,
               translator_options={"program_timeout": program_timeout, "program_memory": program_memory,
                                   "unconfined": unconfined})


@main.command(short_help="Label a pool (judge, CSV or the label-server's annotations) and build the balanced sets.")
@click.argument("pool_dir", type=ExistingPath)
@click.option("--judge", "use_judge", is_flag=True, help="Label with the synthetic world's judge.")
@click.option("--from-csv", "csv_path", type=ExistingPath, default=None, help="CSV with image_id,label[,annotator].")
@click.option("--from-annotations", is_flag=True, help="The annotators' labels from `s2i-bench label-server` "
                                                       "(majority; ties left out and counted; agreement reported).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the balanced selection and the parts.")
@_friendly
def label(pool_dir, use_judge, csv_path, from_annotations, seed):
    """Label POOL_DIR with exactly one source, then build the balanced sets of SPEC section 5."""
    from s2i_bench.informativity.labels import label_pool

    label_pool(pool_dir, use_judge=use_judge, csv_path=csv_path, seed=seed, from_annotations=from_annotations)


@main.command("label-server", short_help="A local web page to label a pool's (or an audit's blind set's) images.")
@click.argument("pool_dir", type=ExistingPath)
@click.option("--annotator", required=True, help="Your name (letters, digits, '_', '-', '.'): your labels' file.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (every request needs the token of the printed address, here too).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port.")
@click.option("--overlap", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of the pool every annotator labels (first), for agreement.")
@click.option("--share", default=None, metavar="K/N",
              help="Label only the overlap and the K-th of N parts of the rest.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the order the images are shown in.")
@_friendly
def label_server(pool_dir, annotator, host, port, overlap, share, seed):
    """Serve POOL_DIR's images one at a time (keys 1 / 0 informative or not, u undo, s skip,
    arrows to move); every label is saved at once to POOL_DIR/annotations/ANNOTATOR.jsonl.
    Then `s2i-bench label POOL_DIR --from-annotations` builds the sets. POOL_DIR may also be an
    audit's blind set (AUDIT/blind); then `s2i-bench label-audit estimate AUDIT`."""
    from s2i_bench.informativity.label_server import serve

    serve(pool_dir, annotator, host=host, port=port, seed=seed, overlap=overlap, share=share)


@main.command("train-classifiers", short_help="Train the five informativity CNNs and the class-match classifier.")
@click.argument("pool_dir", type=ExistingPath, required=False)
@click.option("--out", "bundle", type=PathArg, required=True,
              help="Bundle file (.pt); a JSON card is written beside it.")
@click.option("--data", "store", type=ExistingPath, default=None,
              help="Store for the class-match classifier (default: the pool's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--authors", "authors", multiple=True, metavar="CLASS=FILE",
              help="Instead of training: import the authors' state dict for CLASS (give all five; no POOL_DIR).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle (records scored with it keep its sha256).")
@click.option("--class-match-only", is_flag=True,
              help="Only the class-match classifier, on the real frames of --data (no POOL_DIR): for stores without "
                   "labelled pools, such as VGGSound's.")
@protocol_option
@_friendly
def train_classifiers(pool_dir, bundle, store, seed, device, authors, overwrite, class_match_only, protocol_name):
    """Train the five per-class informativity classifiers on a labelled POOL_DIR, or import the
    authors' five classifiers with --authors (sensitivity and specificity then unknown)."""
    from s2i_bench.informativity.authors import classifiers_command
    from s2i_bench.distributed import check_device

    if class_match_only:
        from s2i_bench.informativity.class_match import train_class_match_bundle

        if pool_dir is not None or authors or store is None:
            raise UserError("--class-match-only trains on the real frames of --data STORE: no POOL_DIR, no --authors")
        train_class_match_bundle(store, bundle, seed=seed, device=check_device(device), overwrite=overwrite)
        return

    classifiers_command(pool_dir, bundle, authors=authors, protocol=protocol_name, store=store, seed=seed,
                        device=check_device(device), overwrite=overwrite)


# -- metrics, scoring, report -----------------------------------------------------------------
@main.command(short_help="The paper's metrics of a per-epoch informativity series (CSV).")
@click.argument("series_csv", type=ExistingPath)
@protocol_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--out", type=PathArg, default=None, help="Write the series with replaced epochs to this CSV.")
@_friendly
def metrics(series_csv, protocol_name, as_json, out):
    """Window average, maximum moving average and replaced epochs of SERIES_CSV (columns epoch,
    d_update and one per class key)."""
    protocol = load_protocol(protocol_name or "vegas5")
    from s2i_bench.scoring.command import metrics_command

    metrics_command(series_csv, protocol, as_json=as_json, out=out)


@main.command(short_help="Score a translator's informativity on the test sounds.")
@click.argument("translator", required=False)
@click.option("--translator", "translator_option", default=None, metavar="SPEC",
              help="The same as TRANSLATOR (for a plugin: MODULE:FACTORY or path/to/file.py:FACTORY).")
@click.option("--data", "store", type=ExistingPath, default=None,
              help="Segment store. Default: the embedded default's (demo-work/store, built by `make demo`).")
@click.option("--classifiers", "bundle", type=ExistingPath, default=None,
              help="Classifier bundle. Default: the embedded default's (demo-work/classifiers/bundle.pt).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--samples", type=click.IntRange(1), default=None, help="Images per sound (reports the spread).")
@click.option("--allow-missing", is_flag=True, help="A folder of images: score the sounds that have all their images "
                                                    "(the record lists the missing ones).")
@click.option("--audio-encoder", type=ExistingPath, default=None, help="For the authors' generator state dict.")
@click.option("--embedding-dim", type=int, default=None, help="For the authors' generator state dict.")
@with_program_options
@click.option("--metrics", default="informativity", show_default=True, metavar="M1,M2,...",
              help="Beyond informativity: fid, kid, prdc, iis, retrieval (offline features: the bundle's domain "
                   "extractor, --feature-extractor or --feature-preset), clip_score, aic (a CLIP preset) and ais, "
                   "ais_rank, ais_z (--ais-audio or --ais-audio-preset, with --ais-image or a CLIP preset).")
@click.option("--feature-extractor", type=ExistingPath, default=None, metavar="PROGRAM",
              help="Your own feature network (TorchScript / torch.export + sidecar .json) for fid, kid, prdc, iis.")
@click.option("--feature-preset", default=None, metavar="NAME",
              help="A pinned recipe of the field: inception-pytorch-fid, inception-torch-fidelity, "
                   "inception-torchmetrics, clip-vit-b-32, clip-vit-l-14, hf-clip-vit-b-32 (docs/metrics.md).")
@click.option("--feature-weights", type=ExistingPath, default=None, metavar="FILE",
              help="The preset's checkpoint (a transformers folder for hf-*); Inception: default the torch hub cache. "
                   "Nothing is downloaded.")
@click.option("--ais-audio", type=ExistingPath, default=None, metavar="PROGRAM", help="Audio encoder for AIS.")
@click.option("--ais-audio-preset", default=None, metavar="NAME",
              help="AIS's audio encoder by name: clap-htsat-tiny, clap-htsat-base (a laion_clap checkpoint; the store "
                   "prepared with --audio-rate 48000 or native). Not with --ais-audio.")
@click.option("--ais-audio-weights", type=ExistingPath, default=None, metavar="FILE",
              help="The --ais-audio-preset's laion_clap checkpoint (.pt, read as data). Nothing is downloaded.")
@click.option("--ais-image", type=ExistingPath, default=None, metavar="PROGRAM", help="Image encoder for AIS.")
@click.option("--ais-unaligned", is_flag=True,
              help="Allow AIS between an audio preset and an image preset trained apart (CLAP audio, CLIP images).")
@click.option("--attributes", is_flag=True,
              help="Synthetic stores: does the picture follow the sound? Tone -> hue and loudness -> size per class, "
                   "two-source mixtures, silence / noise / an unknown class (docs/metrics.md, \"Attribute scores\").")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", "records", type=PathArg, default=None, help="metric-informativity.jsonl to append to.")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def score(translator, translator_option, store, bundle, split, seed, samples, allow_missing, audio_encoder,
          embedding_dim, program_timeout, program_memory, unconfined, metrics, feature_extractor, feature_preset,
          feature_weights, ais_audio, ais_audio_preset, ais_audio_weights, ais_image, ais_unaligned, attributes, device,
          records, as_json):
    """Score TRANSLATOR, which is one of:

    \b
      FILE.pt              a checkpoint, the authors' state dict, or a TorchScript /
                           torch.export program (strangers' files: operators checked against
                           an allowlist, run in a separate process with a time limit)
      RUN_FOLDER           every checkpoint of a run that has no record yet
      MODULE:FACTORY       a local plugin: FACTORY(protocol, device) returns an object
      file.py:FACTORY      with translate(batch) -> images (see the README). It is YOUR
                           code, imported and run in this process with your rights: it is
                           NOT inspected or sandboxed like a TorchScript file.
      reference:NAME       real-frame, retrieval, class-prototype or random-frame
      IMAGES_FOLDER        images answering `s2i-bench export-sounds` (<segment_id>.png or
                           <segment_id>_<k>.png, PNG or JPEG, any size)

    Without --data and --classifiers it scores on the embedded default that `make demo` built."""
    from s2i_bench.scoring.command import score_command

    if translator and translator_option and translator != translator_option:
        raise UserError("give the translator once: as TRANSLATOR or as --translator, not both")
    spec = translator or translator_option
    if not spec:
        raise UserError("missing TRANSLATOR: a checkpoint, a run folder, MODULE:FACTORY, file.py:FACTORY, "
                        "reference:NAME or a folder of images (see `s2i-bench score --help`)")
    score_command(spec, store=store, bundle=bundle, split=split, seed=seed, samples=samples, device=device,
                  records_out=records, as_json=as_json, allow_missing=allow_missing, metrics=metrics,
                  feature_extractor=feature_extractor, ais_audio=ais_audio, ais_image=ais_image,
                  feature_preset=feature_preset, feature_weights=feature_weights, ais_audio_preset=ais_audio_preset,
                  ais_audio_weights=ais_audio_weights, ais_unaligned=ais_unaligned, attributes=attributes,
                  translator_options={"audio_encoder": audio_encoder, "embedding_dim": embedding_dim,
                                      "program_timeout": program_timeout, "program_memory": program_memory,
                                      "unconfined": unconfined})


@main.command(short_help="Is A better than B? Paired tests and intervals for every pair of translators.")
@click.argument("systems", type=ExistingPath, nargs=-1)
@click.option("--data", "store", type=ExistingPath, default=None,
              help="The store the records were scored on (checked). Default: the one the records name.")
@click.option("--classifiers", "bundle", type=ExistingPath, default=None,
              help="The bundle the records were scored with (checked; its test set gives the corrected intervals). "
                   "Default: the one the records name.")
@click.option("--epoch", type=click.IntRange(0), default=None,
              help="Compare at this epoch (default: the last common one).")
@click.option("--window", is_flag=True, help="Compare the series metrics (window average, maximum moving average).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None)
@click.option("--bootstrap", "n_boot", type=click.IntRange(100), default=None,
              help="Replicates (default: the protocol's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--out", type=PathArg, default=None, help="Folder for comparison.json, the table and the figure.")
@click.option("--audit", "audits", type=ExistingPath, multiple=True, metavar="AUDIT",
              help="A label-audit folder (repeatable): also the paired audited differences of the systems it audited "
                   "at the same images.")
@_friendly
def compare(systems, store, bundle, epoch, window, split, n_boot, seed, as_json, out, audits):
    """Compare SYSTEMS pairwise (run folders, metric-*.jsonl files, or folders of seed-S run
    folders that differ only in the training seed) on the same test sounds and classifiers:
    per class and the mean, the difference (raw, corrected, and the judge's truth on synthetic
    data) with a 95% interval, a p-value (exact McNemar / paired bootstrap), Holm-adjusted, and
    the minimum difference detectable with this many sounds."""
    from s2i_bench.report.command import compare_command

    compare_command(systems, store=store, bundle=bundle, epoch=epoch, window=window, split=split, n_boot=n_boot,
                    seed=seed, as_json=as_json, out=out, audits=audits)


# -- label audits: a few labels per system plus the classifiers (prediction-powered inference) ----
@main.group("label-audit", short_help="Audited informativity: label a few images per system, combine with the "
                                      "classifiers.")
def label_audit():
    """Audited informativity: `draw` a seeded sample of each system's scored images into a blind
    set, label it (`s2i-bench label-server AUDIT/blind`, or `label` with the synthetic world's
    judge), `estimate` the audited shares with their intervals, `plan` the labels a half-width
    needs. See docs/metrics.md ("Audited informativity")."""


@label_audit.command("draw", short_help="A seeded sample of each system's scored images, made again and blinded.")
@click.argument("systems", type=ExistingPath, nargs=-1, required=True)
@click.option("--out", type=PathArg, required=True, help="The audit folder to make.")
@click.option("--per-class", type=click.IntRange(1), default=10, show_default=True,
              help="Images to label per class and system.")
@click.option("--data", "store", type=ExistingPath, default=None, help="The store (default: the embedded one).")
@click.option("--classifiers", "bundle", type=ExistingPath, default=None,
              help="The classifiers the records were scored with (default: the embedded ones).")
@click.option("--epoch", default="last", show_default=True, help="A run folder's epoch to audit.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="Default: the protocol's scored split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample and of the blind ids.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an earlier audit folder of --out.")
@_friendly
def label_audit_draw(systems, out, per_class, store, bundle, epoch, split, seed, device, overwrite):
    """SYSTEMS: run folders (their record at --epoch) and records files (every record in them,
    e.g. the reference translators). Each record must come from these classifiers, store and
    split, with per-image decisions."""
    from s2i_bench.distributed import check_device
    from s2i_bench.scoring.audit.draw import draw_audit

    draw_audit(systems, out, store=store, classifiers=bundle, per_class=per_class, seed=seed,
               epoch=None if epoch == "last" else epoch, split=split, device=check_device(device), overwrite=overwrite)


@label_audit.command("label", short_help="The synthetic world's judge labels the blind set (as an annotator).")
@click.argument("audit_dir", type=ExistingPath)
@click.option("--judge", "use_judge", is_flag=True, required=True, help="Label with the synthetic world's judge.")
@click.option("--judge-noise", type=click.FloatRange(0, 0.5), default=0.0, show_default=True,
              help="Flip each label with this probability (an imperfect annotator).")
@click.option("--annotator", default="judge", show_default=True, help="The name its labels go under.")
@_friendly
def label_audit_label(audit_dir, use_judge, judge_noise, annotator):
    """People label AUDIT/blind with `s2i-bench label-server AUDIT/blind --annotator NAME`."""
    from s2i_bench.scoring.audit.labelling import label_with_judge

    label_with_judge(audit_dir, annotator=annotator, noise=judge_noise)


@label_audit.command("estimate", short_help="Audited shares with 95% intervals -> AUDIT/records.jsonl.")
@click.argument("audit_dir", type=ExistingPath)
@click.option("--score", type=click.Choice(["auto", "decision", "probability"]), default="auto", show_default=True,
              help="The classifier output combined with the labels (auto: the probability where records keep it).")
@click.option("--allow-partial", is_flag=True, help="Use the labelled images when some are not labelled yet.")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def label_audit_estimate(audit_dir, score, allow_partial, as_json):
    from s2i_bench.scoring.audit.estimate import estimate_audit, format_audited

    recs = estimate_audit(audit_dir, score=score, allow_partial=allow_partial)
    click.echo(format_audited(recs, as_json=as_json))


@label_audit.command("plan", short_help="Labels per class for a target half-width.")
@click.argument("sources", type=ExistingPath, nargs=-1, required=True)
@click.option("--half-width", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="The 95% interval's half-width to reach (0.05: +-5 points).")
@_friendly
def label_audit_plan(sources, half_width):
    """SOURCES: an audit folder (its first labels), records files or run folders (their
    classifiers' sensitivity and specificity, before any label)."""
    from s2i_bench.scoring.audit.planner import format_plan, plan_labels

    click.echo(format_plan(plan_labels(sources, half_width), half_width))


@main.command("export-sounds", short_help="The sounds of a split as WAV files, for systems that run elsewhere.")
@click.option("--data", "store", type=ExistingPath, default=None,
              help="Segment store. Default: the embedded default's (demo-work/store).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--out", type=PathArg, required=True, help="Folder to write (new or empty, or an earlier export).")
@click.option("--audio-context-s", type=float, default=None,
              help="Also write the C s centred on each segment (the store must be prepared with a context that long).")
@click.option("--samples", type=click.IntRange(1), default=1, show_default=True,
              help="Images per sound: seeds per row.")
@click.option("--seed", type=int, default=None, help="Scoring seed. Default: the protocol's scoring.seed.")
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier export in OUT.")
@click.option("--sample-rate", type=click.IntRange(1000, 192_000), default=None, metavar="HZ",
              help="Write the sounds at HZ (your encoder's rate, e.g. 48000): from the store's high-rate copy "
                   "(prepare --audio-rate). Default: the store's 16 kHz.")
@_friendly
def export_sounds(store, split, out, audio_context_s, samples, seed, overwrite, sample_rate):
    """Write every segment's sound of a split as a mono WAV (16 kHz, or --sample-rate) with a
    manifest.csv (opaque segment ids, the seeds to draw each image with; never the class). Run
    your system on them anywhere, save the images as <segment_id>.png, then
    `s2i-bench score IMAGES_FOLDER`."""
    from s2i_bench import defaults
    from s2i_bench.data.export import export_sounds

    export_sounds(store if store is not None else defaults.store(), out, split=split, audio_context_s=audio_context_s,
                  samples=samples, seed=seed, overwrite=overwrite, sample_rate=sample_rate)


@main.command(short_help="The paper's figures and tables for a set of runs.")
@click.argument("inputs", type=ExistingPath, nargs=-1)
@click.option("--out", type=PathArg, default=None,
              help="Report folder. Default with the embedded default's runs: demo-work/report-all.")
@click.option("--figures", is_flag=True, help="Render figures as well as tables.")
@click.option("--data", "store", type=ExistingPath, default=None, help="Store (Table 1, Figs. 15/16).")
@click.option("--classifiers", "bundle", type=ExistingPath, default=None, help="Bundle card (classifier table).")
@click.option("--format", "formats", default="png", show_default=True, help="Comma-separated: png,pdf,svg.")
@click.option("--overwrite", is_flag=True,
              help="Write over files in OUT that the report did not write (or that were changed since).")
@click.option("--audit", "audits", type=ExistingPath, multiple=True, metavar="AUDIT",
              help="A label-audit folder (repeatable): the audited estimates of the INPUTS' records it audited.")
@_friendly
def report(inputs, out, figures, store, bundle, formats, overwrite, audits):
    """Render the report for INPUTS (run folders or metric-*.jsonl files) into OUT. OUT must be new,
    empty or an earlier report: the user's own files there are never overwritten or deleted.
    Without INPUTS: the embedded default's runs (the demo's and any trained on its store since)
    and its reference translators, with its store and classifiers."""
    from s2i_bench.report.command import report_command

    report_command(inputs, out, figures=figures, store=store, bundle=bundle, formats=formats, overwrite=overwrite,
                   audits=audits)


@main.command(short_help="Systems side by side: metrics with intervals, win rates, significant differences.")
@click.argument("inputs", type=ExistingPath, nargs=-1)
@click.option("--out", type=PathArg, default=None,
              help="Leaderboard folder. Default with the embedded default's runs: demo-work/leaderboard.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--bootstrap", "n_boot", type=click.IntRange(100), default=1000, show_default=True,
              help="Replicates of the intervals and paired tests.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--skip-refused", is_flag=True,
              help="Build the board without a refused bundle (listed on the page with its reason) instead of stopping.")
@click.option("--overwrite", is_flag=True, help="Write over files in OUT that the leaderboard did not write.")
@_friendly
def leaderboard(inputs, out, split, n_boot, seed, skip_refused, overwrite):
    """A static page (offline, sortable) and CSV/LaTeX tables of INPUTS (run folders, folders of
    seed-S runs, metric-*.jsonl records, results bundles from `bundle-results`, verified): each
    system's metrics with 95% intervals, HEIM's win rates, and the pairwise differences that are
    significant after Holm. Systems scored with another protocol, classifiers, store or feature
    space stand on another board. Without INPUTS: the embedded default's runs and references."""
    from s2i_bench.report.leaderboard import leaderboard_command

    leaderboard_command(inputs, out, split=split, seed=seed, n_boot=n_boot, skip_refused=skip_refused,
                        overwrite=overwrite)


@main.command("bundle-results", short_help="Pack one system's records, provenance and sample sheets into a zip.")
@click.argument("source", type=ExistingPath)
@click.option("--out", type=PathArg, required=True, help="The bundle to write (system.zip).")
@click.option("--run", default=None, metavar="NAME", help="The system, when SOURCE holds records of several.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@_friendly
def bundle_results(source, out, run, overwrite):
    """Pack SOURCE (a run folder or a metric-*.jsonl records file) for a leaderboard: its records,
    the run's options and log, the sample sheets the records name, and a manifest with every
    file's sha256 and every record's checksum (corruption checks: `leaderboard` also checks each
    record against itself, the manifest and the protocol)."""
    from s2i_bench.report.results_bundle import bundle_command

    bundle_command(source, out, run=run, overwrite=overwrite)


@main.command(short_help="The whole study on the embedded synthetic world (what `make demo` runs).")
@click.option("--out", type=PathArg, default=Path("demo-work"), show_default=True,
              help="Working folder (videos, store, runs, and the report in OUT/report).")
@click.option("--report", "report_dir", type=PathArg, default=None, help="Report folder. Default: OUT/report.")
@click.option("--reference", type=PathArg, default=Path("results/demo"), show_default=True,
              help="The committed study to compare the headline with (read only).")
@protocol_option
@click.option("--force", is_flag=True, help="Redo every step.")
@click.option("--update-reference", "update_only", is_flag=True,
              help="Instead of running: copy the finished report in OUT/report over --reference (the committed study).")
@_friendly
def demo(out, report_dir, reference, protocol_name, force, update_only):
    """synth -> prepare -> train translators -> pool -> label -> classifiers -> score -> report.
    Writes only under OUT; the committed reference changes only with --update-reference."""
    from s2i_bench.demo import run_demo, update_reference

    if update_only:
        update_reference(report_dir or out / "report", reference)
        return
    protocol = load_protocol(protocol_name or "synth")
    run_demo(out=out, report_dir=report_dir, protocol=protocol, force=force, reference=reference)


if __name__ == "__main__":
    main()
