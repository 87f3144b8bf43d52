"""`dfkd <stage> ...`: one subcommand per workflow stage, usable by hand or from Snakemake.

Stage settings arrive as one JSON object (`--params`), the same config slice that the
Snakemake rule records as its params. Errors the user can fix print as one clear message
(exit code 2), never as a traceback.

Long because it is the whole command surface: each subcommand is a few-line function that calls
its stage and a parser block; no logic lives here.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from dfkd.io.artifacts import files_by_source
from dfkd.errors import DfkdError


class MissingParam(DfkdError, KeyError):
    """A key a stage reads is not in its --params (a DfkdError; still a KeyError for `except KeyError`)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class _Params(dict):
    """A --params object (and each object inside it): a missing key names itself, no KeyError traceback."""

    where = ""

    def __missing__(self, key):
        raise MissingParam(
            f"--params lacks the key '{self.where}{key}'. Pass the stage's whole config slice, as the "
            "workflow's rule builds it (`dfkd show --command ARTIFACT` prints the command that made an artifact)."
        )


def _mark_params(value: _Params, where: str = "") -> _Params:
    value.where = where
    for key, inner in value.items():
        if isinstance(inner, _Params):
            _mark_params(inner, f"{where}{key}.")
    return value


def _json_arg(text: str) -> dict:
    try:
        value = json.loads(text, object_hook=_Params)
    except json.JSONDecodeError as exc:
        raise DfkdError(f"--params is not valid JSON ({exc}): {text[:200]}") from exc
    if not isinstance(value, dict):
        raise DfkdError("--params must be a JSON object")
    return _mark_params(value)


def _whole_number(minimum: int, what: str):
    """An argparse type: an integer >= minimum; anything else is a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ({what})") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum} ({what})")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return value


THREADS = _whole_number(1, "torch CPU threads; omit it for torch's choice")
BATCH = _whole_number(1, "images per batch")
ROWS = _whole_number(1, "rows; a 0-row transfer set is never useful")
SEED = _whole_number(0, "a seed")


# ---------------------------------------------------------------------------- subcommands
def cmd_validate(args) -> None:
    from dfkd.config import load_config

    # several files merge as Snakemake merges `--configfile`; the built targets' data must be on disk
    config = load_config(*args.config, check_data=True)
    print(f"{' + '.join(args.config)}: valid ({len(config['targets'])} targets, {len(config['sources'])} sources, "
          f"{len(config['transfer_sets'])} transfer sets)")


def cmd_prepare(args) -> None:
    from dfkd.stages.prepare import prepare_source
    from dfkd.sources import TargetSpec

    params = _json_arg(args.params)
    spec = TargetSpec(channels=params["channels"], image_size=params["image_size"])
    prepare_source(args.name, params["source"], spec, params.get("split"), Path(args.out), params)


def cmd_train_teacher(args) -> None:
    from dfkd.stages.teacher import DEFAULT_MIN_ACCURACY, train_teacher

    params = _json_arg(args.params)
    # the warning threshold is no training setting: --min-accuracy, else the block's, else the default
    teacher = params.get("teacher")
    in_block = teacher.pop("min_accuracy", None) if isinstance(teacher, dict) else None
    threshold = next(v for v in (args.min_accuracy, in_block, DEFAULT_MIN_ACCURACY) if v is not None)
    # A checkpoint made with other settings belongs to an outdated job: start afresh.
    train_teacher(Path(args.train), Path(args.test), params, Path(args.out_dir),
                  fresh_on_mismatch=True, min_accuracy=threshold, device=args.device)


def cmd_import_teacher(args) -> None:
    from dfkd.stages.teacher import DEFAULT_MIN_ACCURACY, import_teacher

    threshold = args.min_accuracy if args.min_accuracy is not None else DEFAULT_MIN_ACCURACY
    import_teacher(Path(args.file), _json_arg(args.params), Path(args.out_dir),
                   Path(args.test) if args.test else None, min_accuracy=threshold, device=args.device)


def cmd_features(args) -> None:
    from dfkd.stages.features import extract_features

    extract_features(Path(args.model), Path(args.data), Path(args.out), args.batch_size, device=args.device)


def cmd_fill(args) -> None:
    from dfkd.stages.fill import fill_source

    fill_source(Path(args.teacher), _json_arg(args.params), Path(args.out), Path(args.report),
                checkpoint_seconds=args.checkpoint_seconds)


def cmd_synthesize(args) -> None:
    from dfkd.stages.synthesize import synthesize_source

    synthesize_source(Path(args.teacher), _json_arg(args.params), Path(args.out), Path(args.report),
                      labels=[Path(p) for p in args.labels or []],
                      total_like=Path(args.total_like) if args.total_like else None,
                      checkpoint_seconds=args.checkpoint_seconds)


def cmd_label(args) -> None:
    from dfkd.stages.labels import label_source

    label_source(Path(args.features), Path(args.out))


def _params_instead_of(args, flags: dict, holds: str) -> dict | None:
    """The workflow's `--params` (JSON), refusing the hand-typed flags it stands for; None
    when it is not given."""
    if args.params is None:
        return None
    given = [flag for flag, value in flags.items() if value is not None]
    if given:
        raise DfkdError(f"--params holds {holds}; drop {', '.join(given)}.")
    return _json_arg(args.params)


def cmd_assemble(args) -> None:
    from dfkd.stages.balance import assemble_files

    flags = {"--num-classes": args.num_classes, "--unbalanced": args.unbalanced or None, "--per-class": args.per_class,
             "--total": args.total, "--classes": args.classes, "--size": args.size, "--seed": args.seed,
             "--prefer": args.prefer}
    recipe = _params_instead_of(args, flags, "the whole recipe")  # as dfkd.slices.assemble_slice makes it
    if recipe is not None:
        options = {key: recipe[key] for key in ("num_classes", "balanced", "per_class", "total", "classes", "size", "seed")}
        options["prefer"] = recipe.get("prefer", "random")
    else:
        if args.num_classes is None:
            raise DfkdError("give --num-classes (the teacher's class count), or the recipe as --params.")
        options = {"num_classes": args.num_classes, "balanced": not args.unbalanced, "per_class": args.per_class,
                   "total": args.total, "classes": args.classes, "size": args.size, "seed": args.seed or 0,
                   "prefer": args.prefer or "random"}
    if options["total"] is None and args.total_like:
        from dfkd.io.artifacts import read_parquet

        options["total"] = len(read_parquet(args.total_like, ["index"]))
    assemble_files([Path(p) for p in args.labels], options.pop("num_classes"), Path(args.out),
                   Path(args.counts) if args.counts else None, **options)


def cmd_distill(args) -> None:
    from dfkd.stages.distill import distill_student

    distill_student(
        Path(args.teacher), Path(args.manifest), files_by_source(args.data),
        files_by_source(args.features) if args.features else None,
        Path(args.test) if args.test else None, _json_arg(args.params), Path(args.out_dir), fresh_on_mismatch=True,
        device=args.device,
    )


def cmd_hausdorff(args) -> None:
    from dfkd.device import pick_device
    from dfkd.stages.hausdorff import hausdorff_files

    result = hausdorff_files(
        Path(args.a), Path(args.b), Path(args.out),
        Path(args.rows_a) if args.rows_a else None, Path(args.rows_b) if args.rows_b else None,
        device=str(pick_device(args.device)),
    )
    print(f"H = {result['hausdorff']:.6g} (A->B {result['directed_ab']:.6g}, B->A {result['directed_ba']:.6g})")


def cmd_distance(args) -> None:
    from dfkd.stages.distance import transfer_set_distance

    transfer_set_distance(Path(args.manifest), files_by_source(args.features), Path(args.train_features), Path(args.out),
                          device=args.device)


def cmd_score(args) -> None:
    from dfkd.stages.score import format_scores, score_files

    payload = score_files(
        [Path(p) for p in args.labels], args.num_classes, Path(args.out),
        [Path(p) for p in args.features] if args.features else None, args.per_class,
        seed=args.seed, rank_by=args.rank_by,
    )
    print(format_scores(payload))


def cmd_quality(args) -> None:
    from dfkd.stages.quality import quality_files

    params = _params_instead_of(args, {"--num-classes": args.num_classes, "--per-class": args.per_class},
                                "num_classes and per_class")  # as dfkd.slices.quality_slice makes it
    if params is not None:
        num_classes, per_class = params["num_classes"], params["per_class"]
    elif args.num_classes is None or args.per_class is None:
        raise DfkdError("give --num-classes and --per-class, or both as --params.")
    else:
        num_classes, per_class = args.num_classes, args.per_class
    payload = quality_files(
        Path(args.manifest), [Path(p) for p in args.labels], [Path(p) for p in args.features],
        num_classes, per_class, Path(args.out),
        Path(args.train_features) if args.train_features else None,
        Path(args.train_radii) if args.train_radii else None,
    )
    print(", ".join(f"{name} {value:.4g}" for name, value in {**payload["scores"], **payload.get("distances", {})}.items()))


def cmd_coverage_radii(args) -> None:
    from dfkd.stages.quality import coverage_radii_file

    radii = coverage_radii_file(Path(args.train_features), Path(args.out))
    print(f"coverage radii of {len(radii)} training rows: median {float(sorted(radii)[len(radii) // 2]):.4g}")


def cmd_quality_table(args) -> None:
    from dfkd.analysis.study.quality_table import write_quality_table

    write_quality_table(Path(args.target_dir), _json_arg(args.params), Path(args.out_csv), Path(args.out_md),
                        Path(args.out_json), Path(args.out_tex), Path(args.figures_dir))
    print(Path(args.out_md).read_text().split("Verdicts:", 1)[-1].strip())


def cmd_report(args) -> None:
    from dfkd.analysis.report import build_summary

    build_summary(Path(args.target_dir), _json_arg(args.params), Path(args.out_csv), Path(args.out_md))


def cmd_table(args) -> None:
    from dfkd.analysis.study.tables import write_table

    table = write_table(Path(args.target_dir), _json_arg(args.params), Path(args.out_csv), Path(args.out_md), Path(args.out_json),
                        Path(args.out_tex) if args.out_tex else None)
    print("\n".join(table.verdicts))


def cmd_plot_table(args) -> None:
    from dfkd.analysis.study.figures import plot_table

    plot_table(Path(args.table_json), Path(args.out))


def cmd_plot_counts(args) -> None:
    from dfkd.analysis.report import plot_counts

    plot_counts(Path(args.counts), Path(args.out), args.title)


def cmd_audit(args) -> int:
    from dfkd.tools.audit import run_audit

    text, code = run_audit(args.root, as_json=args.json, lineage=args.lineage, include_untracked=args.all)
    print(text)
    return code


def cmd_show(args) -> None:
    from dfkd.tools.show import show, show_command

    print(show_command(args.artifact) if args.print_command else show(args.artifact))


def cmd_plot_curves(args) -> None:
    from dfkd.tools.curves import plot_curves

    plot_curves([Path(p) for p in args.log_csv], Path(args.out), labels=args.labels, title=args.title)


def cmd_publish(args) -> None:
    from dfkd.tools.publish import publish

    copied = publish(Path(args.target_dir), Path(args.docs_dir), args.note)
    print(f"copied {len(copied)} files to {args.docs_dir}; index: {Path(args.docs_dir) / 'README.md'}")


def cmd_compare(args) -> None:
    from dfkd.tools.compare import compare_paths

    print(compare_paths(Path(args.a), Path(args.b), show_equal=args.all))


def cmd_claim(args) -> None:
    from dfkd.analysis.claims import decide_all, format_decisions, parse_claim
    from dfkd.schema import schema_default

    claims = [parse_claim(text) for text in args.claims]
    if args.better is not None:
        claims.insert(0, (args.better, args.than if args.than_value is None else args.than_value))
    elif args.than is not None or args.than_value is not None:
        raise DfkdError("--than and --than-value need --better (or write the claim as 'A > B').")
    if not claims:
        raise DfkdError("no claim given: use --better A --than B, or claims such as 'A > B' 'C > 79.62'.")
    min_effect = args.min_effect if args.min_effect is not None else schema_default("study", "min_effect")
    decisions = decide_all(Path(args.target_dir), claims, args.seeds, min_effect)
    if args.json:
        records = [{**d, "claim": d["claim"].as_record()} for d in decisions]
        print(json.dumps(records[0] if len(records) == 1 else {"claims": records}, indent=2))
    else:
        print(format_decisions(decisions))


# ---------------------------------------------------------------------------- device, command line
DEVICE_HELP = ("cpu, cuda or cuda:N; auto picks CUDA when present (default: auto). Not part of the "
               "config slice: changing it re-runs nothing")


def _option_parser(*args, **kwargs) -> argparse.ArgumentParser:
    """A parent parser holding one option that several subcommands share (argparse `parents=`)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(*args, **kwargs)
    return parent


THREADS_OPTION = _option_parser("--threads", type=THREADS, help="torch CPU threads (default: torch's choice, usually all cores)")
DEVICE_OPTION = _option_parser("--device", default="auto", help=DEVICE_HELP)


def _recorded(func):
    """Run a subcommand with its command line recorded in every provenance it writes; the device
    that --device names is checked first (an unavailable one is a one-line error), then passed
    to the stage by the subcommand."""

    def run(args):
        from dfkd.io.provenance import recording_command

        if getattr(args, "device", None) is not None:
            from dfkd.device import pick_device

            pick_device(args.device)
        with recording_command(getattr(args, "argv", None) or sys.argv[1:]):
            return func(args)

    return run


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfkd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check config files (schema, cross-field rules, data of the built targets)")
    p.add_argument("config", nargs="+", help="config YAML files, later ones merged over earlier ones as Snakemake's "
                                             "--configfile does (e.g. config.yaml presets/full.yaml)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("prepare", help="convert a source to the target's spec: data/{source}.h5")
    p.add_argument("--name", required=True, help="the source's name (stored in the file's attrs and logs)")
    p.add_argument("--params", required=True,
                   help="JSON: {source: {kind, ...}, split, channels, image_size}; image_size in pixels")
    p.add_argument("--out", required=True, help="output HDF5 file, e.g. results/{target}/data/{source}.h5")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train-teacher", parents=[THREADS_OPTION, DEVICE_OPTION], help="train the teacher: teacher/model.pt, metrics.json, log.csv")
    p.add_argument("--train", required=True, help="training data (HDF5 from `prepare`, with labels)")
    p.add_argument("--test", required=True, help="test data (HDF5 from `prepare`, with labels)")
    p.add_argument("--params", required=True, help="JSON: the target's model I/O and teacher block")
    p.add_argument("--out-dir", required=True, help="folder for model.pt, metrics.json, log.csv, checkpoint.pt")
    p.add_argument("--min-accuracy", type=_fraction, help="warn (stderr, metrics.json) below this test accuracy, "
                                                           "0..1 (default: the params' teacher.min_accuracy, else 0.5)")
    p.set_defaults(func=cmd_train_teacher)

    p = sub.add_parser("import-teacher", parents=[THREADS_OPTION, DEVICE_OPTION], help="a pretrained teacher from a file (teacher.load): teacher/model.pt, metrics.json")
    p.add_argument("--file", required=True, help="the teacher file (state_dict, checkpoint, TorchScript or .pt2)")
    p.add_argument("--params", required=True, help="JSON: the target's model I/O, `target` (its name) and `load` block")
    p.add_argument("--test", help="test data (HDF5 from `prepare`) to measure its accuracy (default: none)")
    p.add_argument("--out-dir", required=True, help="folder for model.pt and metrics.json")
    p.add_argument("--min-accuracy", type=_fraction, help="warn (stderr, metrics.json) below this test accuracy, "
                                                           "0..1 (default: 0.5)")
    p.set_defaults(func=cmd_import_teacher)

    p = sub.add_parser("features", parents=[THREADS_OPTION, DEVICE_OPTION], help="teacher features and logits of a data file")
    p.add_argument("--model", required=True, help="teacher model file (teacher/model.pt)")
    p.add_argument("--data", required=True, help="data file of one source (data/{source}.h5)")
    p.add_argument("--out", required=True, help="output HDF5 file (features/{source}.h5)")
    p.add_argument("--batch-size", type=BATCH, default=2048,
                   help="images per forward pass; bounds memory, not the result (default: 2048)")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("fill", parents=[THREADS_OPTION], help="draw from a generator until every teacher class is full: data/{source}.h5")
    p.add_argument("--teacher", required=True, help="teacher model file (teacher/model.pt) that labels the draws")
    p.add_argument("--params", required=True, help="JSON: {source, fill: {...}, per_class, num_classes, channels, image_size}")
    p.add_argument("--out", required=True, help="data/{source}.h5 (its checkpoint: data/{source}.partial.h5)")
    p.add_argument("--report", required=True, help="data/{source}.fill.json")
    p.add_argument("--checkpoint-seconds", type=float, default=30.0, help="seconds between checkpoints (default: 30)")
    p.set_defaults(func=cmd_fill)

    p = sub.add_parser("synthesize", parents=[THREADS_OPTION], help="images made from the teacher (impressions; a class-conditional fill)")
    p.add_argument("--teacher", required=True, help="teacher model file (teacher/model.pt)")
    p.add_argument("--params", required=True, help="JSON: {source, block: {...}} or {source, set, replicate, fill: "
                                                   "{...}, recipe: {...}}, with num_classes, channels, image_size, mean, std")
    p.add_argument("--labels", nargs="+", help="a fill's: labels files of the set's sources before it, in order")
    p.add_argument("--total-like", help="a fill's: labels file whose row count is the set's default total")
    p.add_argument("--out", required=True, help="data/{source}.h5, or data/sets/{set}/seed{k}/{source}.h5 for a fill")
    p.add_argument("--report", required=True, help="its report, {out without .h5}.synthesis.json")
    p.add_argument("--checkpoint-seconds", type=float, default=30.0, help="seconds between checkpoints (default: 30)")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("label", help="teacher labels of a source from its features file")
    p.add_argument("--features", required=True, help="features file of one source (features/{source}.h5)")
    p.add_argument("--out", required=True, help="output parquet file (labels/{source}.parquet)")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("assemble", help="build a (class-balanced) transfer set from labels files, in order")
    p.add_argument("--labels", nargs="+", required=True, help="labels parquet files; the first is the base")
    p.add_argument("--params", help="JSON: the set's recipe as the workflow passes it (dfkd.slices.assemble_slice), "
                                    "in place of the recipe options below")
    p.add_argument("--num-classes", type=_whole_number(1, "the teacher's classes"), help="the teacher's class count K")
    p.add_argument("--out", required=True, help="output manifest (transfer/{set}.parquet)")
    p.add_argument("--counts", help="output per-class counts CSV (default: not written)")
    p.add_argument("--unbalanced", action="store_true", help="the base source alone, up to --total rows (default: balanced)")
    p.add_argument("--per-class", type=ROWS, help="rows per class, at most (default: total // classes)")
    p.add_argument("--total", type=ROWS, help="rows in the set, at most (default: the base's row count)")
    p.add_argument("--total-like", help="a labels file whose row count is the default --total (the training set)")
    p.add_argument("--classes", type=_whole_number(1, "classes kept"), help="keep classes 0..k-1 only (default: all K)")
    p.add_argument("--size", type=ROWS, help="a fixed total, size // k rows per kept class; replaces --total and "
                                            "--per-class (default: none)")
    p.add_argument("--seed", type=SEED, help="seed of the random picks within a source (default: 0)")
    p.add_argument("--prefer", choices=("random", "confident", "margin_low", "margin_high"),
                   help="which rows of a class a source gives first: random, most confident, smallest or largest "
                        "teacher margin (top-1 minus top-2 probability; ties at random) (default: random)")
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("distill", parents=[THREADS_OPTION, DEVICE_OPTION], help="distil a student on a transfer set")
    p.add_argument("--teacher", required=True, help="teacher model file (teacher/model.pt)")
    p.add_argument("--manifest", required=True, help="transfer set (transfer/{set}.parquet)")
    p.add_argument("--data", nargs="+", required=True, help="data files of the set's sources (stem = source)")
    p.add_argument("--features", nargs="*", help="features files (stem = source), for cached teacher logits "
                                                 "(default: none; the teacher runs online)")
    p.add_argument("--test", help="the target's test data (data/test.h5); without it the student is scored by its "
                                  "agreement with the teacher on 10%% of the transfer rows, held out")
    p.add_argument("--params", required=True, help="JSON: the target's model I/O and student block (+ variant keys)")
    p.add_argument("--out-dir", required=True, help="run folder for model.pt, metrics.json, log.csv, checkpoint.pt")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("hausdorff", parents=[THREADS_OPTION, DEVICE_OPTION], help="exact Hausdorff distance between two feature files")
    p.add_argument("a", help="features file A (HDF5 with a `features` dataset)")
    p.add_argument("b", help="features file B")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--rows-a", help="a parquet whose `index` column selects rows of A (default: all rows)")
    p.add_argument("--rows-b", help="a parquet whose `index` column selects rows of B (default: all rows)")
    p.set_defaults(func=cmd_hausdorff)

    p = sub.add_parser("distance", parents=[THREADS_OPTION, DEVICE_OPTION], help="Hausdorff distance of a transfer set (any sources) to the training set")
    p.add_argument("--manifest", required=True, help="transfer set (transfer/{set}.parquet)")
    p.add_argument("--features", nargs="+", required=True, help="features files of the set's sources (stem = source)")
    p.add_argument("--train-features", required=True, help="features of the training set (features/train.h5)")
    p.add_argument("--out", required=True, help="output JSON file (distance/{set}.json)")
    p.set_defaults(func=cmd_distance)

    p = sub.add_parser("score", help="rank candidate sources and their balanced mix by data-free scores (no training data)")
    p.add_argument("--labels", nargs="+", required=True, help="labels parquet files, in recipe order (stem = source)")
    p.add_argument("--num-classes", type=int, required=True, help="the teacher's class count K")
    p.add_argument("--out", required=True, help="JSON: candidates best first, per-score rankings")
    p.add_argument("--features", nargs="+", help="features files, one per labels file in the same order")
    p.add_argument("--per-class", type=int, help="class cap of fill and of the mix (default: first file's rows // K)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mix's random picks")
    p.add_argument("--rank-by", default="fill", help="the score that orders the candidates (default: fill)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("quality", parents=[THREADS_OPTION], help="data-free scores of a transfer set, and distances to the training set")
    p.add_argument("--manifest", required=True, help="transfer set (transfer/{set}.parquet)")
    p.add_argument("--labels", nargs="+", required=True, help="labels files of the set's sources (stem = source)")
    p.add_argument("--features", nargs="+", required=True, help="features files of the set's sources (stem = source)")
    p.add_argument("--params", help="JSON: {num_classes, per_class} as the workflow passes it (dfkd.slices.quality_slice), "
                                    "in place of the two options below")
    p.add_argument("--num-classes", type=int, help="the teacher's class count K")
    p.add_argument("--per-class", type=int, help="the set's per-class target (rows)")
    p.add_argument("--train-features", help="features/train.h5: adds the distances to the training set")
    p.add_argument("--train-radii", help="coverage radii of those features (dfkd coverage-radii); else computed here")
    p.add_argument("--out", required=True, help="output JSON file: the set's scores and distances")
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("coverage-radii", parents=[THREADS_OPTION], help="each training row's distance to its 5th nearest other training row")
    p.add_argument("--train-features", required=True, help="features/train.h5")
    p.add_argument("--out", required=True, help="output HDF5 file (dataset radii)")
    p.set_defaults(func=cmd_coverage_radii)

    p = sub.add_parser("quality-table", help="rank correlations of every transfer-set score with mean student accuracy")
    p.add_argument("--target-dir", required=True, help="the target's results folder (results/{target})")
    p.add_argument("--params", required=True, help="JSON: {target, seeds, runs: [{set, variant}]}, as the workflow passes it")
    p.add_argument("--out-csv", required=True, help="output rows: one per run, scores, distances, accuracy over seeds (CSV)")
    p.add_argument("--out-md", required=True, help="output correlations and verdicts (Markdown)")
    p.add_argument("--out-json", required=True, help="output rows, correlations, verdicts and provenance (JSON)")
    p.add_argument("--out-tex", required=True, help="output correlations (LaTeX, booktabs)")
    p.add_argument("--figures-dir", required=True, help="folder for one scatter figure per metric (quality_{metric}.png)")
    p.set_defaults(func=cmd_quality_table)

    p = sub.add_parser("report", help="the summary table and class-count figures of a target")
    p.add_argument("--target-dir", required=True, help="the target's results folder (results/{target})")
    p.add_argument("--params", required=True, help="JSON: the report's config slice, as the workflow passes it")
    p.add_argument("--out-csv", required=True, help="output summary table (CSV)")
    p.add_argument("--out-md", required=True, help="output summary table (Markdown)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("table", help="one of the study's tables (config study.tables) from a target's results")
    p.add_argument("--target-dir", required=True, help="the target's results folder (results/{target})")
    p.add_argument("--params", required=True, help="the table's config slice (JSON), as the workflow passes it")
    p.add_argument("--out-csv", required=True, help="output table (CSV; accuracies in percent)")
    p.add_argument("--out-md", required=True, help="output table with title and verdicts (Markdown)")
    p.add_argument("--out-json", required=True, help="output rows, verdicts and provenance (JSON)")
    p.add_argument("--out-tex", help="output table as LaTeX (booktabs; mean ± sd cells); default: none")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plot-table", help="error-bar figure of a study table (main, table1, table2, table5) from its JSON")
    p.add_argument("--table-json", required=True, help="the table's JSON (results/{target}/tables/{table}.json)")
    p.add_argument("--out", required=True, help="output figure (PNG)")
    p.set_defaults(func=cmd_plot_table)

    p = sub.add_parser("plot-counts", help="bar chart of a transfer set's class counts")
    p.add_argument("--counts", required=True, help="class counts CSV (transfer/{set}.counts.csv)")
    p.add_argument("--title", default="", help="figure title (default: none)")
    p.add_argument("--out", required=True, help="output PNG file")
    p.set_defaults(func=cmd_plot_counts)

    p = sub.add_parser("plot-curves", help="test accuracy and loss per epoch of one or more runs (from log.csv)")
    p.add_argument("--log-csv", nargs="+", required=True, help="log.csv files (students/{run}/log.csv, teacher/log.csv)")
    p.add_argument("--labels", nargs="+", help="one legend label per log.csv (default: each file's folder name)")
    p.add_argument("--title", default="", help="figure title (default: none)")
    p.add_argument("--out", required=True, help="output PNG file")
    p.set_defaults(func=cmd_plot_curves)

    p = sub.add_parser("publish", help="copy a target's measured tables and figures into the docs, with date, machine and commit")
    p.add_argument("target_dir", help="a target's results folder, e.g. results/fmnist")
    p.add_argument("docs_dir", help="the docs folder to copy into, e.g. docs/results/fmnist")
    p.add_argument("--note", default="", help="a line for the index, e.g. how the run was made (default: none)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("compare", help="config, provenance and metric differences of two artifacts, runs or results trees")
    p.add_argument("a", help="an artifact file, a run folder (students/{run}) or a results tree")
    p.add_argument("b", help="the same kind of path to compare with A")
    p.add_argument("--all", action="store_true", help="also list what is equal (default: differences only)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("claim", help="decide 'run A beats run B (or a number)' from paired seeds, with a 95%% interval "
                                     "(several claims: one family, Holm-adjusted)")
    p.add_argument("target_dir", help="a target's results folder, e.g. results/fmnist")
    p.add_argument("claims", nargs="*", help="claims 'A > B' or 'A > NUMBER', e.g. 'natural_bal.strong > natural_bal'")
    p.add_argument("--better", help="the run claimed better: a set or set.variant, e.g. natural_bal.strong")
    p.add_argument("--min-effect", type=float,
                   help="the smallest difference that matters, in points (default: the schema's study.min_effect)")
    than = p.add_mutually_exclusive_group()
    than.add_argument("--than", help="the run it is compared with, e.g. natural_bal")
    than.add_argument("--than-value", type=float, help="a number in percent to beat, e.g. a paper's 79.62")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds to pair (default: every seed both runs finished)")
    p.add_argument("--json", action="store_true", help="print the claim as JSON")
    p.set_defaults(func=cmd_claim)

    p = sub.add_parser("audit", help="check a results tree against its recorded provenance (exit 1 unless all ok)")
    p.add_argument("root", nargs="?", default=None,
                   help="folder (or one artifact) to audit (default: results; with --lineage, the results "
                        "folder that holds ARTIFACT)")
    p.add_argument("--json", action="store_true", help="a JSON list of {path, status, reasons, stage, inputs}")
    p.add_argument("--lineage", metavar="ARTIFACT", help="print ARTIFACT's chain of inputs back to the raw sources")
    p.add_argument("--all", action="store_true", help="also list files without provenance (CSV, logs, checkpoints)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("show", help="summarize an artifact (.h5, .parquet, .json, .pt) and its provenance")
    p.add_argument("artifact", help="an artifact file: data/features .h5, labels/transfer .parquet, .json, .pt")
    p.add_argument("--command", action="store_true", dest="print_command",
                   help="print only the `dfkd ...` command that made ARTIFACT, ready to paste")
    p.set_defaults(func=cmd_show)

    for command in sub.choices.values():  # every stage records its command line; some pick a device
        command.set_defaults(func=_recorded(command.get_default("func")))
    return parser


def _set_threads(threads: int | None) -> None:
    """Use exactly the cores the scheduler gave this job (oversubscribed OpenMP is ~10x slower)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _interrupt(signum, frame) -> None:
    """Ctrl-C: inside training (which traps SIGTERM to save a checkpoint), do what SIGTERM does;
    elsewhere stop as KeyboardInterrupt (main prints one line)."""
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if callable(on_sigterm):
        on_sigterm(signal.SIGTERM, frame)
    else:
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in provenance as `dfkd ...`
    previous = signal.signal(signal.SIGINT, _interrupt) if _main_thread() else None
    try:
        _set_threads(getattr(args, "threads", None))
        _verify_inputs(args)
        code = args.func(args)
    except DfkdError as exc:
        print(f"dfkd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dfkd {args.command}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
    except BrokenPipeError:  # `dfkd audit ... | head` closed our stdout: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush does not fail again
        return 141  # 128 + SIGPIPE, as a shell reports it
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return code or 0  # `audit` returns 1 when it finds problems


# Options that name input artifacts, and the commands that only look at artifacts (they report damage).
INPUT_OPTIONS = ("train", "test", "model", "data", "teacher", "features", "labels", "total_like", "manifest",
                 "train_features", "train_radii", "table_json", "rows_a", "rows_b", "a", "b")
INSPECTING_COMMANDS = frozenset({"audit", "show", "compare", "publish", "validate", "claim", "import-teacher"})


def _verify_inputs(args) -> None:
    """Before a stage reads anything: every input artifact must hold what dfkd wrote (its content
    digest), so that a damaged file ends the stage with one line naming it (dfkd.io.artifacts.verify_content)."""
    from dfkd.io.artifacts import ARTIFACT_SUFFIXES, verify_content

    if args.command in INSPECTING_COMMANDS:
        return
    for option in INPUT_OPTIONS:
        values = getattr(args, option, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and value.lower().endswith(ARTIFACT_SUFFIXES) \
                    and Path(value).name != "checkpoint.pt" and Path(value).is_file():
                verify_content(value)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
