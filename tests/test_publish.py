"""`dfkd publish`: the docs' tables are the workflow's files, copied with date, machine and commit."""
from __future__ import annotations

import json

from dfkd.cli import main


def fake_results(root):
    (root / "tables").mkdir(parents=True)
    (root / "figures").mkdir()
    (root / "tables" / "main.md").write_text("# fm: Main table\n\n| a |\n|---|\n| 1 |\n")
    (root / "tables" / "main.json").write_text(json.dumps({"seeds": [0, 1, 2, 3]}))
    (root / "tables" / "summary.md").write_text("# fm: students distilled on each transfer set\n")
    (root / "figures" / "main.png").write_bytes(b"\x89PNG fake")
    (root / "figures" / "class_counts_x.png").write_bytes(b"\x89PNG other")


def test_publish_copies_the_tables_and_writes_an_index(tmp_path, capsys):
    results, docs = tmp_path / "results" / "fm", tmp_path / "docs" / "fm"
    fake_results(results)
    docs.mkdir(parents=True)
    (docs / "old.md").write_text("# An older table\n")
    assert main(["publish", str(results), str(docs), "--note", "Eight seeds, fixed before the run."]) == 0
    assert "copied 3 files" in capsys.readouterr().out
    assert (docs / "main.md").read_text() == (results / "tables" / "main.md").read_text()
    assert (docs / "figures" / "main.png").read_bytes() == b"\x89PNG fake"
    assert not (docs / "figures" / "class_counts_x.png").exists()
    index = (docs / "README.md").read_text()
    assert "| [main.md](main.md) | fm: Main table | 4 (0, 1, 2, 3) | this time |" in index
    assert "| [old.md](old.md) | An older table | - | earlier (see the file) |" in index
    assert "cores" in index and "dfkd commit" in index and "Eight seeds, fixed before the run." in index
    assert not list(docs.glob("*.tmp*")) and not list(docs.glob(".*"))


def test_publish_without_tables_is_one_line(tmp_path, capsys):
    (tmp_path / "fm").mkdir()
    assert main(["publish", str(tmp_path / "fm"), str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no tables in" in err and "snakemake all_tables" in err and len(err.splitlines()) == 1
