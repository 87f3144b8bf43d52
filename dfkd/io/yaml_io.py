"""Strict reading of YAML config files, and Snakemake's way of merging several of them.

PyYAML's `safe_load` lets the last of two equal keys win without a word, and a file that is
not UTF-8 ends in a `UnicodeDecodeError` traceback. `load_yaml` refuses both with one line
that names the file, the key and both lines (or the byte offset).
`merge_config` overlays one config on another as Snakemake merges `--configfile` files
(`snakemake.utils.update_config`): nested mappings update key by key, any other value
replaces the old one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, MutableMapping, Mapping

import yaml

from dfkd.errors import DfkdError


class _DuplicateKey(yaml.MarkedYAMLError):
    def __init__(self, key: Any, first_line: int, second_line: int, mark):
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=mark)
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (merge keys `<<` excepted)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line, key_node.start_mark)
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader's own error names it
                    continue
        return super().construct_mapping(node, deep=deep)


def decode_utf8(data: bytes, path: str | Path) -> str:
    """`data` as text; a one-line DfkdError naming the byte offset (and line) where it is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DfkdError(
            f"{path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}) "
            "cannot be decoded. Save the file as UTF-8."
        ) from None


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML (or JSON) file strictly: UTF-8 only, no key twice in a mapping."""
    path = Path(path)
    if not path.is_file():
        raise DfkdError(f"config file not found: {path}")
    text = decode_utf8(path.read_bytes(), path)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: builds plain values only
    except _DuplicateKey as exc:
        raise DfkdError(
            f"{path}: key {exc.key!r} appears twice in one mapping (lines {exc.first_line} and "
            f"{exc.second_line}); YAML would silently keep the last. Remove one of them."
        ) from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise DfkdError(f"{path} is not valid YAML: {detail}") from None


def merge_config(config: MutableMapping[str, Any], overlay: Mapping[str, Any]) -> MutableMapping[str, Any]:
    """Update `config` in place with `overlay`, as Snakemake merges `--configfile` files."""
    for key, value in overlay.items():
        if isinstance(value, Mapping):
            current = config.get(key, {})
            config[key] = merge_config(current if isinstance(current, MutableMapping) else {}, value)
        else:
            config[key] = value
    return config
