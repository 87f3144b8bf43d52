"""`dfkd audit`, `dfkd show` and content digests, on a tiny chain built by the real stage functions.

The chain (under `<dir>/results/t/`, paths recorded relative to `<dir>`, as Snakemake records them):
raw/images.bin -> data/noise.h5 -> features/noise.h5 -> labels/noise.parquet -+
data/train.h5 -> teacher/model.pt -> features/train.h5 -> labels/train.parquet -+-> transfer/mix.parquet
transfer/mix.parquet + features -> distance/mix.json; transfer + teacher -> students/mix/metrics.json
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import fresh_copy
from dfkd import cli
from dfkd.io.artifacts import (
    CONTENT_KEY, H5Writer, content_digest, load_torch, save_torch, write_h5, write_json, write_parquet,
)
from dfkd.tools.audit import Auditor, read_provenance, run_audit
from dfkd.stages.balance import assemble_files
from dfkd.stages.distance import transfer_set_distance
from dfkd.errors import DfkdError
from dfkd.stages.features import extract_features
from dfkd.stages.labels import label_source
from dfkd.models import build_model, model_record
from dfkd.io.provenance import make_provenance
from dfkd.tools.show import show

T = Path("results/t")
DOWNSTREAM_OF_NOISE = ["data/noise.h5", "features/noise.h5", "labels/noise.parquet", "transfer/mix.parquet",
                       "distance/mix.json", "students/mix/metrics.json"]
TRAIN_SIDE = ["data/train.h5", "teacher/model.pt", "features/train.h5", "labels/train.parquet"]


def _build_chain(workdir: Path) -> None:
    rng = np.random.default_rng(0)
    (workdir / "raw").mkdir()
    (workdir / "raw" / "images.bin").write_bytes(rng.bytes(64))
    cwd = os.getcwd()
    os.chdir(workdir)  # stage functions record input paths as given: relative, like Snakemake's
    try:
        write_h5(T / "data/noise.h5", {"images": rng.integers(0, 256, (24, 1, 32, 32), dtype=np.uint8)},
                 make_provenance("prepare", {"source": {"kind": "noise"}}, {"raw/0": "raw/images.bin"}, seed=1),
                 {"source": "noise", "kind": "noise"})
        write_h5(T / "data/train.h5", {"images": rng.integers(0, 256, (30, 1, 32, 32), dtype=np.uint8),
                                       "labels": np.arange(30, dtype=np.int64) % 10},
                 make_provenance("prepare", {"split": "train"}, seed=0),
                 {"source": "train", "class_names": json.dumps([str(i) for i in range(10)])})
        torch.manual_seed(0)
        model = build_model("lenet5", 1, 10, 32)
        provenance = make_provenance("teacher", {"epochs": 0}, {"train": T / "data/train.h5"}, seed=0)
        save_torch(T / "teacher/model.pt", model_record(model, "lenet5", 1, 10, 32, [0.5], [0.5], provenance))
        write_json(T / "teacher/metrics.json", {"test_accuracy": 0.1}, provenance)
        for source in ("noise", "train"):
            extract_features(T / "teacher/model.pt", T / f"data/{source}.h5", T / f"features/{source}.h5", 16)
            label_source(T / f"features/{source}.h5", T / f"labels/{source}.parquet")
        assemble_files([T / "labels/noise.parquet", T / "labels/train.parquet"], 10, T / "transfer/mix.parquet",
                       T / "transfer/mix.counts.csv", balanced=True, per_class=3, seed=0)
        transfer_set_distance(T / "transfer/mix.parquet",
                              {"noise": T / "features/noise.h5", "train": T / "features/train.h5"},
                              T / "features/train.h5", T / "distance/mix.json")
        write_json(T / "students/mix/metrics.json", {"test_accuracy": 0.2, "log": [{"epoch": 1}]},
                   make_provenance("distill", {"temperature": 20},
                                   {"manifest": T / "transfer/mix.parquet", "teacher": T / "teacher/model.pt"}))
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("chain")
    _build_chain(workdir)
    return workdir


@pytest.fixture
def chain(template, tmp_path, monkeypatch):
    """A fresh copy of the chain (copied elsewhere: inputs resolve against ROOT's parent)."""
    return fresh_copy(template, tmp_path, monkeypatch)


def _audit(chain: Path) -> dict[str, str]:
    """{path under results/t: status} of an audit of the chain's results folder."""
    text, _ = run_audit(chain / "results", as_json=True)
    return {entry["path"].split("results/t/", 1)[1]: entry["status"] for entry in json.loads(text)}


# ---------------------------------------------------------------------------- audit
def test_fresh_chain_audits_ok(chain, capsys):
    statuses = _audit(chain)
    assert set(statuses) == set(DOWNSTREAM_OF_NOISE + TRAIN_SIDE + ["teacher/metrics.json"])
    assert set(statuses.values()) == {"ok"}
    assert cli.main(["audit", str(chain / "results")]) == 0
    out = capsys.readouterr().out
    assert "11 ok" in out and "no content digest" not in out
    entries = json.loads(run_audit(chain / "results", as_json=True)[0])
    assert all(entry["content_checked"] for entry in entries)


def test_editing_data_by_hand_makes_it_modified_and_everything_downstream_stale(chain, capsys):
    with h5py.File(chain / T / "data/noise.h5", "r+") as handle:
        handle["images"][0, 0, 0, 0] ^= 1
    statuses = _audit(chain)
    assert statuses["data/noise.h5"] == "modified"
    assert all(statuses[name] == "stale" for name in DOWNSTREAM_OF_NOISE[1:]), statuses
    assert all(statuses[name] == "ok" for name in TRAIN_SIDE + ["teacher/metrics.json"]), statuses
    assert cli.main(["audit", str(chain / "results")]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.split()[1].endswith("features/noise.h5"))
    assert line.startswith("stale ")
    assert "input 'data' changed" in line and "data/noise.h5" in line
    assert "1 modified, 5 stale, 5 ok" in out


def test_editing_the_teacher_weights_is_detected(chain):
    path = chain / T / "teacher/model.pt"
    state = load_torch(path)
    first = next(iter(state["state_dict"]))
    state["state_dict"][first] += 1
    torch.save(state, path)  # by hand: the recorded provenance (and digest) kept as it was
    statuses = _audit(chain)
    assert statuses["teacher/model.pt"] == "modified"
    assert statuses["features/train.h5"] == statuses["distance/mix.json"] == "stale"
    assert statuses["data/train.h5"] == "ok"


def test_parquet_and_json_edits_are_detected(chain):
    labels = chain / T / "labels/train.parquet"
    table = pq.read_table(labels)
    frame = table.to_pandas()
    frame.loc[0, "confidence"] = 0.5
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(table.schema.metadata),
                   labels)
    assert read_provenance(labels)["stage"] == "label"  # provenance kept, content edited
    metrics = chain / T / "students/mix/metrics.json"
    body = json.loads(metrics.read_text())
    body["test_accuracy"] = 0.99
    metrics.write_text(json.dumps(body))
    statuses = _audit(chain)
    assert statuses["labels/train.parquet"] == "modified" and statuses["students/mix/metrics.json"] == "modified"
    assert statuses["transfer/mix.parquet"] == "stale" and statuses["labels/noise.parquet"] == "ok"


def test_deleted_inputs_are_reported_missing(chain):
    (chain / T / "labels/noise.parquet").unlink()
    (chain / "raw/images.bin").unlink()
    statuses = _audit(chain)
    assert statuses["data/noise.h5"] == "missing input"
    assert statuses["features/noise.h5"] == "stale"  # made from an artifact whose input is gone
    assert statuses["transfer/mix.parquet"] == "missing input"
    assert statuses["distance/mix.json"] == "stale" and "labels/noise.parquet" not in statuses
    entry = next(e for e in json.loads(run_audit(chain / "results", as_json=True)[0])
                 if e["path"].endswith("transfer/mix.parquet"))
    assert any("input 'labels/noise' missing" in reason for reason in entry["reasons"])


@pytest.mark.parametrize("name", ["features/train.h5", "labels/train.parquet", "distance/mix.json", "teacher/model.pt"])
def test_truncated_files_are_unreadable(chain, name):
    path = chain / T / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    statuses = _audit(chain)
    assert statuses[name] == "unreadable"
    if name != "distance/mix.json":
        assert statuses["distance/mix.json"] == "stale"


def test_json_output_and_exit_codes(chain, capsys):
    assert cli.main(["audit", str(chain / "results"), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert {"path", "status", "reasons", "stage", "inputs"} <= set(entries[0])
    features = next(e for e in entries if e["path"].endswith("features/noise.h5"))
    assert features["stage"] == "features"
    assert {i["role"]: i["state"] for i in features["inputs"]} == {"data": "ok", "teacher": "ok"}
    assert cli.main(["audit", str(chain / "nowhere")]) == 2
    assert "nowhere not found" in capsys.readouterr().err


def test_untracked_files_only_with_all(chain, capsys):
    (chain / T / ".features.h5.tmp").write_bytes(b"partial")  # an atomic write in progress: skipped
    assert cli.main(["audit", str(chain / "results"), "--all"]) == 0
    out = capsys.readouterr().out
    assert "untracked" in out and "mix.counts.csv" in out and ".tmp" not in out
    assert cli.main(["audit", str(chain / "results")]) == 0
    assert "counts.csv" not in capsys.readouterr().out


def test_artifacts_without_a_digest_are_checked_through_their_inputs(chain):
    path = chain / T / "students/mix/metrics.json"
    body = json.loads(path.read_text())
    del body["provenance"][CONTENT_KEY]  # as written by an older dfkd
    path.write_text(json.dumps(body))
    entry = Auditor(chain / "results").check(path)
    assert entry.status == "ok" and not entry.content_checked


def test_lineage_prints_the_chain_back_to_raw_sources(chain, capsys):
    assert cli.main(["audit", str(chain / "results"), "--lineage", str(chain / T / "distance/mix.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("[distance, ok]")
    text = "\n".join(lines)
    # artifact -> its inputs -> theirs, one level of indentation per step, down to the raw file
    assert "\n  <- features/noise: copy/results/t/features/noise.h5  [features, ok]" \
           "\n    <- data: copy/results/t/data/noise.h5  [prepare, ok]" \
           "\n      <- raw/0: copy/raw/images.bin  [raw source, ok]" \
           "\n    <- teacher: copy/results/t/teacher/model.pt  [teacher, ok]" \
           "\n      <- train: copy/results/t/data/train.h5  [prepare, ok]" in text
    assert "\n  <- manifest: copy/results/t/transfer/mix.parquet  [assemble, ok]" \
           "\n    <- labels/noise: copy/results/t/labels/noise.parquet  [label, ok]" in text
    assert "(inputs shown above)" in text  # a shared input (the teacher) is expanded once

    with h5py.File(chain / T / "data/noise.h5", "r+") as handle:
        handle["images"][1, 0, 0, 0] ^= 1
    assert cli.main(["audit", str(chain / "results"), "--lineage", str(chain / T / "distance/mix.json")]) == 1
    out = capsys.readouterr().out
    assert "[distance, stale]" in out and "[prepare, modified, changed since recorded]" in out


# ---------------------------------------------------------------------------- show
def test_show_summarizes_every_artifact_type(chain, capsys):
    text = show(chain / T / "data/train.h5")
    assert "HDF5" in text and "images" in text and "uint8" in text and "(30, 1, 32, 32)" in text
    assert "classes 0:3 1:3" in text and "class_names" in text
    assert "stage     prepare  (seed 0)" in text and "content   " in text
    assert "raw/0  raw/images.bin" in show(chain / T / "data/noise.h5")
    text = show(chain / T / "transfer/mix.parquet")
    assert "rows:" in text and "label counts: classes" in text and "rows per source: noise" in text
    assert "labels/noise  results/t/labels/noise.parquet" in text
    text = show(chain / T / "distance/mix.json")
    assert "  hausdorff: " in text and "stage     distance" in text and "provenance:" in text
    assert "pair_ab_source_row" in text and '"provenance"' not in text
    text = show(chain / T / "teacher/model.pt")
    assert "arch: lenet5" in text and "weights:" in text and "stage     teacher" in text
    assert cli.main(["show", str(chain / T / "labels/train.parquet")]) == 0
    assert "true_label" in capsys.readouterr().out


def test_show_a_training_checkpoint(tmp_path):
    identity = {"stage": "teacher", "arch": "lenet5", "config": {"teacher": {"epochs": 5}}, "inputs": {"train": "ab" * 32}}
    save_torch(tmp_path / "checkpoint.pt", {"identity": json.dumps(identity), "arch": "lenet5",
                                            "model": {"w": torch.zeros(3)}, "progress": {"epoch": 2, "step": 0}})
    text = show(tmp_path / "checkpoint.pt")
    assert "training checkpoint" in text and "epoch: 2 of 5 completed" in text and "train  abababababab" in text


def test_show_names_missing_and_corrupt_files(tmp_path, capsys):
    with pytest.raises(DfkdError, match="nothing.h5 not found"):
        show(tmp_path / "nothing.h5")
    for name in ("bad.h5", "bad.parquet", "bad.json", "bad.pt"):
        (tmp_path / name).write_bytes(b"\x00not an artifact")
        with pytest.raises(DfkdError, match=name):
            show(tmp_path / name)
    assert cli.main(["show", str(tmp_path / "bad.parquet")]) == 2
    assert "bad.parquet" in capsys.readouterr().err


# ---------------------------------------------------------------------------- digests
def test_digests_are_deterministic_and_recorded(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"logits": rng.normal(size=(5000, 3)).astype(np.float32), "labels": np.arange(5000)}
    for name in ("a", "b"):
        write_h5(tmp_path / f"{name}.h5", arrays, {"stage": "x"}, {"kind": "k"})
    with H5Writer(tmp_path / "c.h5", {"stage": "y"}) as writer:  # streamed in pieces: the same content
        for key, array in arrays.items():
            dataset = writer.create(key, array.shape, array.dtype)
            for start in range(0, len(array), 999):
                dataset[start : start + 999] = array[start : start + 999]
        writer.handle.attrs["kind"] = "k"
    digests = {content_digest(tmp_path / f"{name}.h5") for name in "abc"}
    assert len(digests) == 1 and read_provenance(tmp_path / "c.h5")[CONTENT_KEY] in digests

    frame = pd.DataFrame({"source": ["a", "bb", None] * 100, "index": np.arange(300),
                          "confidence": np.float32(rng.random(300)), "kind": pd.Categorical(["x", "y", "x"] * 100)})
    write_parquet(tmp_path / "a.parquet", frame, {"stage": "x"})
    write_parquet(tmp_path / "b.parquet", frame, {"stage": "other"})  # provenance is not content
    table = pq.read_table(tmp_path / "a.parquet")
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=7)  # other chunking, same content
    digest = content_digest(tmp_path / "a.parquet")
    assert digest == content_digest(tmp_path / "b.parquet") == content_digest(tmp_path / "c.parquet")
    assert read_provenance(tmp_path / "a.parquet")[CONTENT_KEY] == digest

    for name in ("a", "b"):
        write_json(tmp_path / f"{name}.json", {"acc": 0.5, "pair": (1, 2), "per": {3: 1.0}}, {"stage": name})
        state = {"arch": "m", "state_dict": {"w": torch.ones(2, 2), "b": torch.zeros(2, dtype=torch.bfloat16)},
                 "mean": [0.5], "provenance": json.dumps({"stage": name})}
        save_torch(tmp_path / f"{name}.pt", state)
    assert content_digest(tmp_path / "a.json") == content_digest(tmp_path / "b.json") == \
        read_provenance(tmp_path / "a.json")[CONTENT_KEY]
    assert content_digest(tmp_path / "a.pt") == content_digest(tmp_path / "b.pt") == \
        read_provenance(tmp_path / "a.pt")[CONTENT_KEY]

    frame.loc[5, "source"] = "c"
    write_parquet(tmp_path / "d.parquet", frame, {"stage": "x"})
    assert content_digest(tmp_path / "d.parquet") != digest


def test_h5_attrs_are_content(tmp_path):
    write_h5(tmp_path / "a.h5", {"x": np.zeros(3)}, {"stage": "x"}, {"class_names": '["a", "b"]'})
    before = content_digest(tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5", "r+") as handle:
        handle.attrs["class_names"] = '["a", "c"]'
    assert content_digest(tmp_path / "a.h5") != before


def test_artifacts_are_readable_with_plain_libraries(chain):
    """No custom pickles: h5py, pandas/pyarrow, json and torch (weights_only) read everything."""
    with h5py.File(chain / T / "features/noise.h5", "r") as handle:
        assert handle["logits"].shape == (24, 10)
        assert json.loads(handle.attrs["dfkd_provenance"])["stage"] == "features"
    assert len(pd.read_parquet(chain / T / "labels/noise.parquet")) == 24
    assert json.loads(pq.read_schema(chain / T / "transfer/mix.parquet").metadata[b"dfkd_provenance"])["stage"] == "assemble"
    assert json.loads((chain / T / "distance/mix.json").read_text())["provenance"]["stage"] == "distance"
    record = torch.load(chain / T / "teacher/model.pt", weights_only=True)
    assert json.loads(record["provenance"])["stage"] == "teacher"


def test_a_file_hash_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    from dfkd.io import provenance

    path = tmp_path / "x.bin"
    path.write_bytes(b"a" * 100)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    first = provenance.file_sha256(path)
    assert provenance.file_sha256(path) == first and len(opened) == 1  # read once
    with real_open(path, "r+b") as handle:  # in place, same size: new stamps, new hash
        handle.write(b"b")
    assert provenance.file_sha256(path) != first and len(opened) == 2
    os.replace(tmp_path / "x.bin", tmp_path / "y.bin")
    (tmp_path / "x.bin").write_bytes(b"a" * 100)  # a new file under the old name
    assert provenance.file_sha256(path) == first
