"""Features, labels, distance and report stages, and the CLI's error handling, on tiny files."""
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from dfkd import cli
from dfkd.io.artifacts import files_by_source, read_parquet, save_torch, write_h5, write_json, write_parquet
from dfkd.stages.distance import transfer_set_distance
from dfkd.errors import DfkdError
from dfkd.stages.features import extract_features
from dfkd.stages.labels import label_source, teacher_labels
from dfkd.models import build_model, model_record
from dfkd.analysis.report import build_summary, markdown_table, plot_counts


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet5", 1, 10, 32)
    path = tmp_path / "model.pt"
    save_torch(path, model_record(model, "lenet5", 1, 10, 32, [0.5], [0.5], {"stage": "test"}))
    return path, model


def write_data(path, n, labels=True, shape=(1, 32, 32), seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"images": rng.integers(0, 256, (n, *shape), dtype=np.uint8)}
    if labels:
        arrays["labels"] = rng.integers(0, 10, n).astype(np.int64)
    write_h5(path, arrays, {"stage": "test"})
    return arrays


def test_features_match_the_model_and_stream_in_chunks(tmp_path, teacher_file):
    model_path, model = teacher_file
    arrays = write_data(tmp_path / "d.h5", 37)
    extract_features(model_path, tmp_path / "d.h5", tmp_path / "f.h5", batch_size=8)
    with h5py.File(tmp_path / "f.h5") as handle:
        features, logits = handle["features"][()], handle["logits"][()]
        assert features.shape == (37, 84) and logits.shape == (37, 10)
        np.testing.assert_array_equal(handle["labels"][()], arrays["labels"])
        provenance = json.loads(handle.attrs["dfkd_provenance"])
    assert set(provenance["inputs"]) == {"teacher", "data"}
    x = (torch.from_numpy(arrays["images"]).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        np.testing.assert_allclose(logits, model.eval()(x).numpy(), rtol=1e-4, atol=1e-4)


def test_features_reject_images_of_the_wrong_spec(tmp_path, teacher_file):
    write_data(tmp_path / "d.h5", 4, shape=(3, 32, 32))
    with pytest.raises(DfkdError, match=r"uint8 \[N, 1, 32, 32\]"):
        extract_features(teacher_file[0], tmp_path / "d.h5", tmp_path / "f.h5")
    assert not (tmp_path / "f.h5").exists()


def test_labels_are_argmax_confidence_and_margin(tmp_path):
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]], dtype=np.float32)
    frame = teacher_labels(logits)
    assert list(frame["label"]) == [0, 2]
    p = np.exp(2) / (np.exp(2) + 2)
    assert frame["confidence"][0] == pytest.approx(p, rel=1e-6)
    assert frame["margin"][0] == pytest.approx(p - 1 / (np.exp(2) + 2), rel=1e-6)
    write_h5(tmp_path / "f.h5", {"features": np.zeros((2, 4), np.float32), "logits": logits}, {"stage": "t"})
    out = label_source(tmp_path / "f.h5", tmp_path / "l.parquet")
    assert list(out["index"]) == [0, 1] and list(out["true_label"]) == [-1, -1]
    assert read_parquet(tmp_path / "l.parquet", ["index", "label", "confidence"]).shape[0] == 2


def test_labels_refuse_nan_logits(tmp_path):
    logits = np.array([[np.nan, 0.0]], dtype=np.float32)
    write_h5(tmp_path / "f.h5", {"logits": logits}, None)
    with pytest.raises(DfkdError, match="NaN"):
        label_source(tmp_path / "f.h5", tmp_path / "l.parquet")
    assert not (tmp_path / "l.parquet").exists()


def test_distance_of_a_two_source_set(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 6)).astype(np.float32)
    other = rng.normal(size=(20, 6)).astype(np.float32) + 3
    write_h5(tmp_path / "train.h5", {"features": train}, None)
    write_h5(tmp_path / "other.h5", {"features": other}, None)
    manifest = pd.DataFrame({"source": ["train", "other", "train"], "index": [4, 7, 9], "label": [0, 1, 2]})
    write_parquet(tmp_path / "m.parquet", manifest, None)
    result = transfer_set_distance(
        tmp_path / "m.parquet", {"train": tmp_path / "train.h5", "other": tmp_path / "other.h5"},
        tmp_path / "train.h5", tmp_path / "d.json",
    )
    chosen = np.stack([train[4], other[7], train[9]]).astype(np.float64)
    d = np.linalg.norm(chosen[:, None] - train.astype(np.float64)[None], axis=2)
    assert result["directed_ab"] == pytest.approx(d.min(1).max(), rel=1e-9)
    assert result["directed_ba"] == pytest.approx(d.min(0).max(), rel=1e-9)
    assert result["pair_ab_source_row"] == ["other", 7]
    assert json.loads((tmp_path / "d.json").read_text())["provenance"]["stage"] == "distance"


def test_summary_and_chart(tmp_path):
    target = tmp_path / "fmnist"
    write_json(target / "teacher" / "metrics.json", {"test_accuracy": 0.9, "epochs": 2}, None)
    for name, accs, h in (("a", (0.5, 0.6), 3.0), ("b", (0.7, 0.75), 2.0)):
        counts = pd.DataFrame({"class": [0, 1], "before": [5, 0], "after": [5, 4], "short": [False, True]})
        (target / "transfer" / name).mkdir(parents=True, exist_ok=True)
        for seed, acc in enumerate(accs):
            counts.to_csv(target / "transfer" / name / f"seed{seed}.counts.csv", index=False)
            write_json(target / "students" / name / f"seed{seed}" / "metrics.json", {"test_accuracy": acc}, None)
            write_json(target / "distance" / name / f"seed{seed}.json", {"hausdorff": h + seed, "directed_ab": h, "directed_ba": 1.0}, None)
    params = {"target": "fmnist", "distilled": ["a", "b"], "seeds": [0, 1],
              "sets": {"a": {"sources": ["x"], "balanced": False}, "b": {"sources": ["x", "y"], "balanced": True}}}
    frame = build_summary(target, params, tmp_path / "s.csv", tmp_path / "s.md")
    assert frame["accuracy_mean"].tolist() == pytest.approx([55.0, 72.5]) and list(frame["size"]) == [9, 9]
    assert frame["accuracy_sd"].tolist() == pytest.approx([10 / 2 ** 0.5, 5 / 2 ** 0.5])
    assert frame["accuracy_seed1"].tolist() == pytest.approx([60.0, 75.0]) and list(frame["accuracy_n"]) == [2, 2]
    assert frame["hausdorff_mean"].tolist() == pytest.approx([3.5, 2.5])
    assert list(frame["sources"]) == ["x", "x+y"] and list(frame["short_classes"]) == [1, 1]
    text = (tmp_path / "s.md").read_text()
    assert "Teacher test accuracy: 90.00%" in text and "| b | x+y | True |" in text and "72.50 ± 3.54" in text
    plot_counts(target / "transfer" / "a" / "seed0.counts.csv", tmp_path / "c.png", "a")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_summary_warns_of_a_teacher_at_chance(tmp_path):
    target = tmp_path / "fmnist"
    write_json(target / "teacher" / "metrics.json", {"test_accuracy": 0.117, "epochs": 1,
                                                     "warning": "teacher test accuracy 11.70% is below min_accuracy 50.00%"}, None)
    counts = pd.DataFrame({"class": [0, 1], "before": [5, 0], "after": [5, 4]})
    (target / "transfer" / "a").mkdir(parents=True)
    counts.to_csv(target / "transfer" / "a" / "seed0.counts.csv", index=False)
    write_json(target / "distance" / "a" / "seed0.json", {"hausdorff": 1.0, "directed_ab": 1.0, "directed_ba": 1.0}, None)
    build_summary(target, {"target": "t", "distilled": [], "sets": {"a": {"sources": ["x"], "balanced": False}}},
                  tmp_path / "s.csv", tmp_path / "s.md")
    assert "**WARNING: teacher test accuracy 11.70% is below min_accuracy 50.00%**" in (tmp_path / "s.md").read_text()
    # the configured threshold decides, not the one recorded at training time
    build_summary(target, {"target": "t", "distilled": [], "teacher_min_accuracy": 0.1,
                           "sets": {"a": {"sources": ["x"], "balanced": False}}}, tmp_path / "s.csv", tmp_path / "s.md")
    assert "WARNING" not in (tmp_path / "s.md").read_text()
    build_summary(target, {"target": "t", "distilled": [], "teacher_min_accuracy": 0.3,
                           "sets": {"a": {"sources": ["x"], "balanced": False}}}, tmp_path / "s.csv", tmp_path / "s.md")
    assert "**WARNING: teacher test accuracy 11.7% is below min_accuracy 30%" in (tmp_path / "s.md").read_text()


def test_markdown_table_marks_missing_values():
    text = markdown_table(pd.DataFrame({"a": [1.23456, None], "b": ["x", "y"]}))
    assert text.splitlines()[2] == "| 1.235 | x |" and text.splitlines()[3] == "| - | y |"


def test_cli_prints_a_clear_error_without_traceback(tmp_path, capsys):
    code = cli.main(["label", "--features", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "l.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "missing.h5" in err and "Traceback" not in err
    assert cli.main(["train-teacher", "--train", "a", "--test", "b", "--params", "{oops", "--out-dir", "x"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_cli_refuses_two_files_with_one_source_name():
    with pytest.raises(DfkdError, match="share the source name 'noise'"):
        files_by_source(["a/noise.h5", "b/noise.h5"])


def test_corrupt_h5_is_named(tmp_path, teacher_file):
    bad = tmp_path / "d.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(DfkdError, match="not a readable HDF5 file"):
        extract_features(teacher_file[0], bad, tmp_path / "f.h5")


def test_same_inputs_and_seed_give_byte_identical_manifests(tmp_path):
    from dfkd.stages.balance import assemble_files

    rng = np.random.default_rng(1)
    for name, n in (("base", 300), ("extra", 200)):
        frame = pd.DataFrame({"index": np.arange(n), "label": rng.integers(0, 5, n),
                              "confidence": rng.random(n).astype(np.float32)})
        write_parquet(tmp_path / f"{name}.parquet", frame, None)
    labels = [tmp_path / "base.parquet", tmp_path / "extra.parquet"]
    for run in ("one", "two"):
        assemble_files(labels, 5, tmp_path / run / "m.parquet", tmp_path / run / "c.csv", total=200, seed=3)
    assert (tmp_path / "one" / "m.parquet").read_bytes() == (tmp_path / "two" / "m.parquet").read_bytes()
    assert (tmp_path / "one" / "c.csv").read_bytes() == (tmp_path / "two" / "c.csv").read_bytes()
