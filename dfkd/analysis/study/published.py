"""The study's published numbers (`published.yaml`) and the names it gives its datasets."""
from __future__ import annotations

import functools
from pathlib import Path

import yaml

PUBLISHED_PATH = Path(__file__).parent / "published.yaml"

# torchvision dataset names -> the study's names for them (Tables 6 to 9 are per dataset).
STUDY_DATASETS = {"MNIST": "MNIST", "FashionMNIST": "FMNIST", "CIFAR10": "CIFAR-10", "CIFAR100": "CIFAR-100"}


@functools.lru_cache(maxsize=1)
def published() -> dict:
    """Every published number, by table (callers must not modify it)."""
    return yaml.safe_load(PUBLISHED_PATH.read_text())


def study_dataset(dataset_block: dict) -> str | None:
    """The study's name for a target's dataset ('FMNIST'), or None if the study did not use it."""
    if dataset_block.get("kind") != "torchvision":
        return None
    return STUDY_DATASETS.get(dataset_block.get("name"))


def table_rows(table: str) -> tuple[str | None, dict]:
    """(dataset, {row: numbers}) the study reports for one of tables 1 to 5."""
    entry = published().get(table) or {}
    return entry.get("dataset"), entry.get("rows", {})
