#!/usr/bin/env python
"""Export a dfkd teacher (teacher/model.pt) as TorchScript, as a torch.export program and as a
bare state_dict: the files a teacher from outside comes in (config `teacher.load`).

    python scripts/export_teacher.py results/fmnist/teacher/model.pt --out-dir teachers/fmnist

writes teacher.ts (torch.jit.trace), teacher.pt2 (torch.export, batch size dynamic) and
teacher.state_dict.pt (torch.save(model.state_dict())), and prints the `teacher.load` blocks
that read them back (presets/own_teacher.yaml).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dfkd.errors import DfkdError
from dfkd.models import load_model


def export_teacher(model_path: Path, out_dir: Path) -> dict[str, Path]:
    """Write the three forms of the teacher in `model_path`; return {format: file}."""
    model, record = load_model(model_path)  # the registry model, CPU, eval mode
    model.requires_grad_(False)
    C, S = record["in_channels"], record["image_size"]
    example = torch.zeros(2, C, S, S)  # (B, C, S, S)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"torchscript": out_dir / "teacher.ts", "export": out_dir / "teacher.pt2",
             "state_dict": out_dir / "teacher.state_dict.pt"}
    torch.jit.save(torch.jit.trace(model, example), str(files["torchscript"]))
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(files["export"]))
    torch.save(model.state_dict(), files["state_dict"])
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a dfkd model file, e.g. results/fmnist/teacher/model.pt")
    parser.add_argument("--out-dir", required=True, help="folder for teacher.ts, teacher.pt2, teacher.state_dict.pt")
    args = parser.parse_args(argv)
    try:
        files = export_teacher(Path(args.model), Path(args.out_dir))
    except DfkdError as exc:
        print(f"export_teacher: error: {exc}", file=sys.stderr)
        return 2
    arch = load_model(args.model)[1]["arch"]
    for form, path in files.items():
        extra = f", arch: {arch}" if form == "state_dict" else ""
        print(f"{path}  ->  teacher: {{load: {{path: {path}, format: {form}{extra}}}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
