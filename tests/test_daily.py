"""What a researcher uses every day: help texts, the command in provenance (`dfkd show --command`),
`dfkd audit --lineage` without a root, progress lines, `--device`, training curves, LaTeX tables
and `dfkd compare`. The chain is built with the real CLI in a temporary folder (paths relative,
as Snakemake records them)."""
from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import fresh_copy
from dfkd import cli
from dfkd.io.artifacts import content_digest, read_json, save_torch, write_json
from dfkd.tools.audit import read_provenance, results_root_of, run_audit
from dfkd.tools.compare import compare_paths
from dfkd.config import load_config
from dfkd.tools.curves import plot_curves
from dfkd.errors import DfkdError
from dfkd.analysis.export import escape_latex, latex_table
from dfkd.models import build_model, model_record
from dfkd.io.progress import Progress, progress
from dfkd.io.provenance import COMMAND_KEY, make_provenance, recording_command
from dfkd.tools.show import show, show_command
from dfkd.device import pick_device
from dfkd.training import LOG_COLUMNS, write_log_csv

REPO = Path(__file__).resolve().parents[1]
T = Path("results/t")
NOISE = {"source": {"kind": "noise", "count": 40, "seed": 1}, "channels": 1, "image_size": 32}


def _prepare_args(name: str, out: Path, count: int = 40) -> list[str]:
    params = {**NOISE, "source": {**NOISE["source"], "count": count}}
    return ["prepare", "--name", name, "--params", json.dumps(params), "--out", str(out)]


def _build_chain(workdir: Path) -> None:
    """data (prepare CLI) -> features, labels (CLI) -> transfer set (assemble CLI) -> distance (CLI)."""
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        assert cli.main(_prepare_args("noise", T / "data/noise.h5")) == 0
        assert cli.main(_prepare_args("train", T / "data/train.h5", 30)) == 0
        torch.manual_seed(0)
        provenance = make_provenance("teacher", {"epochs": 0}, {"train": T / "data/train.h5"}, seed=0)
        save_torch(T / "teacher/model.pt", model_record(build_model("lenet5", 1, 10, 32), "lenet5", 1, 10, 32,
                                                         [0.5], [0.5], provenance))
        for source in ("noise", "train"):
            assert cli.main(["features", "--model", str(T / "teacher/model.pt"), "--data", str(T / f"data/{source}.h5"),
                             "--out", str(T / f"features/{source}.h5"), "--batch-size", "16", "--device", "cpu"]) == 0
            assert cli.main(["label", "--features", str(T / f"features/{source}.h5"),
                             "--out", str(T / f"labels/{source}.parquet")]) == 0
        assert cli.main(["assemble", "--labels", str(T / "labels/noise.parquet"), "--num-classes", "10",
                         "--out", str(T / "transfer/mix.parquet"), "--unbalanced", "--total", "20"]) == 0
        assert cli.main(["distance", "--manifest", str(T / "transfer/mix.parquet"),
                         "--features", str(T / "features/noise.h5"), "--train-features", str(T / "features/train.h5"),
                         "--out", str(T / "distance/mix.json"), "--device", "cpu"]) == 0
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("daily")
    _build_chain(workdir)
    return workdir


@pytest.fixture
def chain(template, tmp_path, monkeypatch):
    """A fresh copy of the chain (copied elsewhere: inputs resolve against ROOT's parent)."""
    return fresh_copy(template, tmp_path, monkeypatch)


# ---------------------------------------------------------------------------- help texts
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_cli_option_has_help_and_defaults_are_stated():
    missing = [f"{name} {action.option_strings or action.dest}"
               for name, sub in _subparsers(cli.build_parser()).items()
               for action in sub._actions if not isinstance(action, argparse._HelpAction) and not action.help]
    assert missing == []
    for name, sub in _subparsers(cli.build_parser()).items():
        for action in sub._actions:  # a default other than None/False is written in the help text
            if action.default not in (None, False, "", argparse.SUPPRESS) and action.dest != "help":
                assert "default" in action.help, f"{name} {action.option_strings}: {action.help}"


def test_show_on_a_folder_says_what_it_can_show(chain, capsys):
    with pytest.raises(DfkdError) as error:
        show(chain / T)
    message = str(error.value)
    assert "is a folder" in message and ".parquet" in message and "model.pt" in message and "not ''" not in message
    assert "data/noise.h5" in message and "dfkd audit" in message and "\n" not in message
    assert cli.main(["show", str(chain / T / "features")]) == 2
    assert "features/noise.h5" not in capsys.readouterr().err  # names are relative to the folder given
    with pytest.raises(DfkdError, match=r"not '\.csv' files"):
        show(chain / T / "transfer/mix.csv")


# ---------------------------------------------------------------------------- command in provenance
def test_provenance_records_the_command_and_show_prints_it(chain, capsys):
    command = read_provenance(chain / T / "features/noise.h5")[COMMAND_KEY]
    assert command.startswith("dfkd features --model results/t/teacher/model.pt") and "--device cpu" in command
    assert cli.main(["show", "--command", str(chain / T / "features/noise.h5")]) == 0
    assert capsys.readouterr().out.strip() == command
    assert "  command   dfkd features" in show(chain / T / "features/noise.h5")
    prepare = show_command(chain / T / "data/noise.h5")
    assert shlex.split(prepare)[:3] == ["dfkd", "prepare", "--name"]  # JSON params survive shell quoting
    # Plain Python calls record no command; provenance made inside the CLI does not leak out.
    assert COMMAND_KEY not in make_provenance("x")
    with recording_command(["label", "--out", "it's here.parquet"]) as recorded:
        assert make_provenance("x")[COMMAND_KEY] == recorded == "dfkd label --out 'it'\"'\"'s here.parquet'"
    assert COMMAND_KEY not in make_provenance("x")
    with pytest.raises(DfkdError, match=r"records no command.*stage is 'teacher'"):
        show_command(chain / T / "teacher/model.pt")


def test_pasting_the_recorded_command_remakes_the_artifact_bit_for_bit(chain, monkeypatch):
    monkeypatch.chdir(chain)  # where the workflow ran
    for artifact in ("data/noise.h5", "labels/noise.parquet", "distance/mix.json"):
        path = T / artifact
        before = path.read_bytes()
        path.unlink()
        argv = shlex.split(show_command_from_bytes(before, path))
        assert argv[0] == "dfkd" and cli.main(argv[1:]) == 0
        assert path.read_bytes() == before, artifact


def show_command_from_bytes(data: bytes, path: Path) -> str:
    """The command recorded in a deleted artifact (written back to a temporary copy)."""
    copy = path.with_name(f"copy-{path.name}")
    copy.write_bytes(data)
    try:
        return show_command(copy)
    finally:
        copy.unlink()


def test_the_command_is_not_content_and_the_chain_audits_ok(chain):
    text, code = run_audit(chain / "results")
    assert code == 0 and "9 ok" in text, text
    path = chain / T / "distance/mix.json"
    body = json.loads(path.read_text())
    assert body["provenance"][COMMAND_KEY].startswith("dfkd distance")
    assert content_digest(path) == body["provenance"]["content_sha256"]
    body["provenance"][COMMAND_KEY] = "dfkd distance --edited"  # provenance edits are not content edits
    path.write_text(json.dumps(body))
    assert content_digest(path) == body["provenance"]["content_sha256"]


# ---------------------------------------------------------------------------- audit --lineage
def test_lineage_finds_the_results_root_from_the_file(chain, capsys, monkeypatch):
    assert results_root_of(chain / T / "distance/mix.json") == chain / "results"
    assert results_root_of(chain / T / "students/data/metrics.json") == chain / "results"  # a run named `data`
    assert results_root_of(chain / "loose.json") == chain
    elsewhere = chain.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no ./results here: the root comes from the file
    assert cli.main(["audit", "--lineage", str(chain / T / "distance/mix.json")]) == 0
    out = capsys.readouterr().out
    assert "[distance, ok]" in out and f"<- data: {chain}/results/t/data/noise.h5  [prepare, ok]" in out
    assert cli.main(["audit"]) == 2  # without --lineage the default root is still ./results
    assert "results folder results not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------- progress
def test_progress_in_a_log_file_is_plain_periodic_lines():
    stream = io.StringIO()
    with Progress(1000, "features noise", "images", stream=stream, min_seconds=0, tty=False) as bar:
        for _ in range(100):
            bar.update(10)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(":")[1].split("%")[0].strip() for line in lines[:-1]] == [str(p) for p in range(10, 100, 10)]
    assert lines[0].startswith("features noise: 10% (100/1,000 images), ") and "left" in lines[0]
    assert lines[-1].startswith("features noise: 1,000 images in ") and lines[-1].endswith("images/s")
    stream = io.StringIO()  # a short job (under min_seconds between lines) logs only its final line
    assert list(progress(range(5), "label x", "chunks", stream=stream, tty=False)) == list(range(5))
    assert stream.getvalue().count("\n") == 1 and "label x: 5 chunks in" in stream.getvalue()


def test_progress_on_a_terminal_is_a_tqdm_bar():
    stream = io.StringIO()
    with Progress(50, "distill", "steps", stream=stream, tty=True) as bar:
        bar.update(50)
    assert "\r" in stream.getvalue() and "50/50" in stream.getvalue()


def test_stage_logs_are_not_empty(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _build_chain(tmp_path)
    err = capsys.readouterr().err
    for expected in ("prepare noise: loading the noise source", "prepared noise: 40 images",
                     "features noise: 40 images in", "label noise: 40 rows in", "assembled mix: 20 rows (noise 20)",
                     "distance mix A->B: ", "distance mix B->A: "):
        assert expected in err, expected


# ---------------------------------------------------------------------------- device
def test_device_choices_and_one_line_errors(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("DFKD_DEVICE", "gpu")  # no hidden channel: the device is passed, never read from the environment
    assert pick_device() == pick_device("auto")
    with pytest.raises(DfkdError, match=r"device 'gpu' is not one of cpu, cuda, cuda:N or auto"):
        pick_device("gpu")
    with pytest.raises(DfkdError, match=r"device 'cuda:99'") as error:
        pick_device("cuda:99")
    assert "\n" not in str(error.value)


def test_device_flag_is_checked_first_and_not_in_the_params(chain, capsys, monkeypatch):
    monkeypatch.chdir(chain)
    out = T / "features/again.h5"
    code = cli.main(["features", "--model", str(T / "teacher/model.pt"), "--data", str(T / "data/noise.h5"),
                     "--out", str(out), "--device", "cuda:99"])
    err = capsys.readouterr().err
    assert code == 2 and "device 'cuda:99'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert read_provenance(T / "features/noise.h5")["config"] == {"batch_size": 16}  # the device is no setting
    for name in ("train-teacher", "features", "distill", "hausdorff", "distance"):
        assert "--device" in _subparsers(cli.build_parser())[name].format_help(), name


def test_config_device_key(tmp_path):
    config = yaml_config(tmp_path, {})
    assert load_config(config)["device"] == "auto"
    assert load_config(yaml_config(tmp_path, {"device": "cuda:1"}))["device"] == "cuda:1"
    with pytest.raises(DfkdError, match="device"):
        load_config(yaml_config(tmp_path, {"device": "gpu"}))


def yaml_config(tmp_path: Path, extra: dict) -> Path:
    import yaml

    base = yaml.safe_load((REPO / "config.yaml").read_text())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**base, **extra}))
    return path


# ---------------------------------------------------------------------------- curves
def _log(path: Path, accuracies: list[float]) -> Path:
    rows = [{"epoch": i + 1, "loss": 2.0 / (i + 1), "test_accuracy": acc, "lr": 0.01, "seconds": 1.0}
            for i, acc in enumerate(accuracies)]
    write_log_csv(path, rows)
    return path


def test_plot_curves_draws_accuracy_and_loss_per_epoch(tmp_path):
    a = _log(tmp_path / "students/noise/log.csv", [0.1, 0.3, 0.5])
    b = _log(tmp_path / "students/real/log.csv", [0.5, 0.8])
    assert pd.read_csv(a).columns.tolist() == list(LOG_COLUMNS)
    assert cli.main(["plot-curves", "--log-csv", str(a), str(b), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "curves.png")
    assert image.shape[1] > image.shape[0] > 200  # two panels side by side
    with pytest.raises(DfkdError, match="1 label.*2 log.csv"):
        plot_curves([a, b], tmp_path / "x.png", labels=["only one"])
    (tmp_path / "bad.csv").write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(DfkdError, match=r"bad\.csv lacks column\(s\) test_accuracy"):
        plot_curves([tmp_path / "bad.csv"], tmp_path / "x.png")
    with pytest.raises(DfkdError, match="nothing/log.csv not found"):
        plot_curves([tmp_path / "nothing/log.csv"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------- LaTeX
def test_latex_table_is_booktabs_and_escaped():
    frame = pd.DataFrame({"row": ["noise_bal", "a & b"], "acc. (%)": [85.25, np.nan], "n": [10, 20]})
    text = latex_table(frame, "Accuracy of 50% sets", "tab:main")
    lines = text.splitlines()
    assert lines[0] == r"\begin{table}[t]" and lines[-1] == r"\end{table}"
    assert r"\caption{Accuracy of 50\% sets}" in lines and r"\label{tab:main}" in lines
    assert r"\begin{tabular}{lrr}" in lines
    top, mid, bottom = lines.index(r"\toprule"), lines.index(r"\midrule"), lines.index(r"\bottomrule")
    assert top < mid < bottom
    assert lines[top + 1] == r"row & acc. (\%) & n \\"
    assert lines[mid + 1 : bottom] == [r"noise\_bal & 85.2 & 10 \\", r"a \& b & -- & 20 \\"]
    assert escape_latex(r"#$_{}~^\ ") == r"\#\$\_\{\}\textasciitilde{}\textasciicircum{}\textbackslash{} "


# ---------------------------------------------------------------------------- compare
def _metrics(folder: Path, accuracy: float, lr: float, seed: int = 0) -> None:
    provenance = make_provenance("distill", {"student": {"lr": lr, "epochs": 2}}, seed=seed)
    write_json(folder / "metrics.json", {"test_accuracy": accuracy, "arch": "lenet5_half"}, provenance)
    _log(folder / "log.csv", [accuracy / 2, accuracy])


def test_compare_two_runs_shows_config_and_metric_differences(tmp_path, capsys):
    _metrics(tmp_path / "a/students/noise", 0.5, 0.001)
    _metrics(tmp_path / "b/students/noise", 0.625, 0.003)
    assert cli.main(["compare", str(tmp_path / "a/students/noise"), str(tmp_path / "b/students/noise")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("compare runs")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert rows["test_accuracy"][1:] == ["0.5", "0.625", "+0.125"]
    assert rows["config.student.lr"][1:] == ["0.001", "0.003", "+0.002"]
    assert rows["last_epoch.test_accuracy"][1:] == ["0.5", "0.625", "+0.125"]
    assert "arch" not in rows and "config.student.epochs" not in rows  # equal: left out
    assert "config.student.epochs" in compare_paths(tmp_path / "a/students/noise", tmp_path / "b/students/noise",
                                                    show_equal=True)
    files = compare_paths(tmp_path / "a/students/noise/metrics.json", tmp_path / "b/students/noise/metrics.json")
    assert files.startswith("compare artifacts") and "test_accuracy" in files


def test_compare_two_results_trees(chain, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(chain, other)
    _metrics(chain / T / "students/noise", 0.5, 0.001)
    _metrics(other / T / "students/noise", 0.4, 0.001, seed=1)
    _metrics(other / T / "students/extra", 0.3, 0.001)
    same = compare_paths(chain / "results", chain / "results")
    assert "metrics:\n  (no differences)" in same and "only in A:" not in same
    text = compare_paths(chain / "results", other / "results")
    assert text.startswith("compare results trees") and "10 artifacts in both, 0 only in A, 1 only in B" in text
    assert "t/students/noise/metrics.json  test_accuracy  0.5  0.4  -0.1" in text
    assert "t/students/noise/metrics.json  seed" in text and "only in B:\n  t/students/extra/metrics.json" in text
    with pytest.raises(DfkdError, match="one of each"):
        compare_paths(chain / "results", chain / T / "distance/mix.json")
    with pytest.raises(DfkdError, match="nothing not found"):
        compare_paths(chain / "nothing", chain / "results")
    assert read_json(chain / T / "distance/mix.json")["hausdorff"] >= 0
