"""The device a stage runs on: chosen once, by the command line, and passed to the stage.

`pick_device("auto")` is CUDA when present, else the CPU; "cpu", "cuda" or "cuda:N" name one.
An unavailable device is a one-line DfkdError, never a silent fall-back to another device.
The device is no setting of any job: it is on the command line (`--device`), never in a
config slice, so changing it re-runs nothing.
"""
from __future__ import annotations

import re

import torch

from dfkd.errors import DfkdError

DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"


def pick_device(requested: str | torch.device | None = "auto") -> torch.device:
    """The torch device `requested` names (None or "auto": CUDA when present, else the CPU)."""
    if isinstance(requested, torch.device):
        return requested
    choice = (requested or "auto").strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", choice)
    if match is None:
        raise DfkdError(f"device '{choice}' is not one of {DEVICE_CHOICES}.")
    if not torch.cuda.is_available():
        raise DfkdError(f"device '{choice}': CUDA is not available here (torch {torch.__version__}); "
                        "use --device cpu or auto.")
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise DfkdError(f"device '{choice}': only {count} CUDA device(s) visible (cuda:0..cuda:{count - 1}).")
    return torch.device(choice)


def describe_device(device: torch.device) -> str:
    """'cpu', or 'cuda (its name)', for metrics and logs."""
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"
