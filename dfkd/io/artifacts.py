"""Reading and writing artifacts: atomic, with provenance, with errors that name the file.

Formats: HDF5 for arrays, parquet for tables, JSON for metrics, torch files for model
weights and checkpoints (always loaded with `weights_only=True`). Every write goes to a
temporary file in the destination folder, is fsynced, then renamed into place, so a killed
job never leaves a file that looks complete.

Every provenance record written here also gets `content_sha256`: a digest of the artifact's
payload (not of its provenance), so that `dfkd audit` can tell a file edited by hand after it
was written. `content_digest(path)` recomputes it for any artifact type.

One module on purpose, though long: every format's writer and reader keeps one contract (write
atomically, record provenance and the content digest, verify and name the file on read), and
splitting formats, atomic writes and digests apart would spread that contract over three files.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from dfkd.errors import DfkdError
from dfkd.io.provenance import PROVENANCE_KEY, provenance_json

T = TypeVar("T")


# ---------------------------------------------------------------------------- atomic writes
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it into place.

    The temporary file is `.{name}.{pid}@{host}.XXXX.tmp`. A writer killed for real (SIGKILL,
    a node that dies) cannot remove its own: the next write of the same artifact on the same
    host removes those whose process is gone (`sweep_dead_temporaries`). A full disk (ENOSPC,
    EDQUOT) becomes a DfkdError that names the artifact, after the temporary file is removed
    (so that the error line itself can still be written to a log on that disk).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead_temporaries(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{_writer_tag()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _raise_if_no_space(exc, path)
        raise
    os.close(fd)
    os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are shared like any file
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _raise_if_no_space(exc, path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _writer_tag() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _no_space(exc: BaseException | None) -> BaseException | None:
    """The ENOSPC/EDQUOT error in an exception's chain, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _raise_if_no_space(exc: BaseException, path: Path) -> None:
    found = _no_space(exc)
    if found is not None:
        what = "no space left on device" if found.errno == errno.ENOSPC else "disk quota exceeded (no space left)"
        raise DfkdError(
            f"{path}: {what} while writing it; nothing was written there. "
            "Free space on that disk, then re-run (snakemake --rerun-incomplete)."
        ) from None


def sweep_dead_temporaries(path: str | Path) -> list[Path]:
    """Remove `path`'s temporary files left by writers on this host whose process is gone.

    Only names that `atomic_path` makes (`.{name}.{pid}@{host}.XXXX.tmp`) with this host's
    name are touched; a live writer's file, another host's and any other file are left alone.
    """
    path = Path(path)
    host, removed = socket.gethostname(), []
    prefix = f".{path.name}."
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        tag = name[len(prefix):-len(".tmp")].rsplit(".", 1)[0]  # {pid}@{host}
        pid, _, owner = tag.partition("@")
        if owner != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            (path.parent / name).unlink()
            removed.append(path.parent / name)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (another user's counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process
        return True
    return True


class _SpaceGuard:
    """A binary file object for h5py that keeps a full disk's error away from HDF5.

    HDF5 (2.0) crashes the process (segmentation fault at close) after a write fails with
    ENOSPC. Writes through this object never fail for HDF5: a full disk is recorded and the
    write skipped, HDF5 finishes, and `check()` raises the recorded error (the file is garbage
    then; `atomic_path` removes it and names the artifact). Other errors reach HDF5 as before.
    """

    def __init__(self, path: Path):
        self._file = open(path, "w+b", buffering=0)
        self.error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        start = self._file.tell()
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += self._file.write(view[done:])
                return len(view)
            except OSError as exc:
                if exc.errno not in NO_SPACE_ERRNOS:
                    raise
                self.error = exc
        self._file.seek(start + len(view))
        return len(view)

    def readinto(self, buffer) -> int:
        return self._file.readinto(buffer)

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def truncate(self, size: int | None = None) -> int:
        try:
            return self._file.truncate(size)
        except OSError as exc:
            if exc.errno not in NO_SPACE_ERRNOS:
                raise
            self.error = self.error or exc
            return size if size is not None else self._file.tell()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._file.close()

    def check(self) -> None:
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def _h5_file_for_writing(tmp: Path) -> Iterator[Any]:
    """h5py.File(tmp, "w") through a `_SpaceGuard`; a full disk raises after HDF5 has closed."""
    import h5py

    guard = _SpaceGuard(tmp)
    try:
        handle = h5py.File(guard, "w")
        try:
            yield handle
        finally:
            handle.close()
        guard.check()
    finally:
        guard.close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DfkdError(f"{what} not found: {path}. Build it first (snakemake makes it).")


def files_by_source(paths) -> dict[str, Path]:
    """Map each file's stem (its source name, as in labels/{source}.parquet) to its path."""
    named: dict[str, Path] = {}
    for path in map(Path, paths):
        if path.stem in named:
            raise DfkdError(f"two files share the source name '{path.stem}': {named[path.stem]} and {path}.")
        named[path.stem] = path
    return named


# ---------------------------------------------------------------------------- JSON
def write_json(path: str | Path, payload: Mapping[str, Any], provenance: Mapping | None) -> None:
    body = dict(payload)
    if provenance is not None:
        body["provenance"] = _with_digest(provenance, _json_digest(payload))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """A JSON file's body. With `verify` (stages), a dfkd artifact whose payload no longer matches
    the digest recorded at write time is refused (a flipped digit would be a silently wrong number);
    audit, show and compare read with verify=False to report such a file instead."""
    path = Path(path)
    _require_file(path, "JSON file")
    try:
        body = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DfkdError(f"{path} is not valid JSON ({_one_line(exc)}); delete it and re-run its rule.") from exc
    if verify and isinstance(body, dict) and isinstance(body.get("provenance"), dict):
        recorded = body["provenance"].get(CONTENT_KEY)
        if recorded is not None and _json_digest(body) != recorded:
            raise _corrupt(path)
    return body


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


REMAKE = ("Delete it and re-run the rule that makes it: `snakemake {path}` (Snakemake does not remake a "
          "missing file whose products exist; the next `snakemake` then re-runs what was made from it).")


def _corrupt(path: Path) -> DfkdError:
    return DfkdError(
        f"{path} is corrupt: its content no longer matches the digest recorded when dfkd wrote it "
        f"(it changed on disk since). {REMAKE.format(path=path)}"
    )


_VERIFIED: set[tuple] = set()  # verify_content's memory: (path, inode, size, mtime, ctime) of files found intact


def verify_content(path: str | Path) -> None:
    """Refuse an input artifact whose payload differs from its recorded `content_sha256`.

    Stages call this (through the CLI) on every input artifact before reading it, so that bytes
    flipped on disk, a truncated file or a file replaced by zeros end the stage with one line
    naming the file, not with a traceback or a silently wrong number. Artifacts that record no
    digest (older dfkd, raw files) are only checked to be readable. Remembered per process.
    """
    path = Path(path)
    _require_file(path, "Artifact")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key in _VERIFIED:
        return
    suffix = path.suffix.lower()
    recorded, current = None, None
    try:
        if suffix == ".json":
            read_json(path)  # verifies
        elif suffix == ".pt":
            state = load_torch(path)
            raw = state.get("provenance")
            recorded = json.loads(raw).get(CONTENT_KEY) if isinstance(raw, str) else None
            current = _torch_digest(state) if recorded is not None else None
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(PROVENANCE_KEY.encode())
            recorded = json.loads(raw).get(CONTENT_KEY) if raw is not None else None
            current = _table_digest(table) if recorded is not None else None
        elif suffix in (".h5", ".hdf5"):
            with open_h5(path) as handle:
                raw = handle.attrs.get(PROVENANCE_KEY)
                recorded = json.loads(raw).get(CONTENT_KEY) if raw is not None else None
                current = _h5_digest(handle) if recorded is not None else None
        else:
            return
    except DfkdError:
        raise
    except Exception as exc:  # h5py, pyarrow, json: many types for a damaged file
        raise DfkdError(
            f"{path} cannot be read to the end ({type(exc).__name__}: {_one_line(exc)}); it is damaged or "
            f"truncated. {REMAKE.format(path=path)}"
        ) from None
    if recorded is not None and current != recorded:
        raise _corrupt(path)
    _VERIFIED.add(key)


# ---------------------------------------------------------------------------- HDF5
def write_h5(
    path: str | Path,
    arrays: Mapping[str, np.ndarray],
    provenance: Mapping | None,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write whole arrays to an HDF5 file (chunked, so that readers can stream it)."""
    with atomic_path(path) as tmp:
        with _h5_file_for_writing(tmp) as handle:
            for name, array in arrays.items():
                array = np.ascontiguousarray(array)
                chunks = (min(len(array), 4096),) + array.shape[1:] if array.ndim and len(array) else None
                handle.create_dataset(name, data=array, chunks=chunks)
            for key, value in (attrs or {}).items():
                handle.attrs[key] = value
            if provenance is not None:  # last: the digest covers the datasets and the other attrs
                handle.attrs[PROVENANCE_KEY] = provenance_json(_with_digest(provenance, _h5_digest(handle)))


class H5Writer:
    """Stream rows into datasets of known final length, then rename the file into place.

    Used where the whole array would not fit in memory (features of 1M images).
    """

    def __init__(self, path: str | Path, provenance: Mapping | None):
        self.path = Path(path)
        self.provenance = provenance
        self._ctx = atomic_path(self.path)

    def __enter__(self):
        self._tmp = self._ctx.__enter__()
        self._file = _h5_file_for_writing(self._tmp)
        try:
            self.handle = self._file.__enter__()
        except BaseException as error:
            if not self._ctx.__exit__(type(error), error, error.__traceback__):
                raise
        return self

    def create(self, name: str, shape: tuple[int, ...], dtype) -> Any:
        chunks = (min(shape[0], 4096),) + tuple(shape[1:]) if shape and shape[0] else None
        return self.handle.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)

    def __exit__(self, exc_type, exc, tb):
        failure = None
        try:
            if exc_type is None and self.provenance is not None:
                digest = _h5_digest(self.handle)  # reads the datasets back once, before the rename
                self.handle.attrs[PROVENANCE_KEY] = provenance_json(_with_digest(self.provenance, digest))
        except BaseException as error:
            failure = error
        try:  # closes HDF5's file, then raises a full disk met while writing it
            self._file.__exit__(*((type(failure), failure, failure.__traceback__) if failure else (exc_type, exc, tb)))
        except BaseException as error:
            failure = failure or error
        if exc_type is None and failure is not None:  # through atomic_path: it removes the temp file
            if not self._ctx.__exit__(type(failure), failure, failure.__traceback__):
                raise failure
            return False
        return self._ctx.__exit__(exc_type, exc, tb)


def open_h5(path: str | Path):
    """Open an HDF5 artifact for reading, turning a missing or corrupt file into a DfkdError."""
    import h5py

    path = Path(path)
    _require_file(path, "HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DfkdError(
            f"{path} is not a readable HDF5 file ({exc}); it may be truncated. "
            "Delete it and re-run the rule that makes it."
        ) from exc


def h5_dataset(handle, name: str, ndim: int | None = None, dtypes: Sequence[str] = ()):
    """Return dataset `name` of an open file after checking it exists, its rank and dtype."""
    if name not in handle:
        raise DfkdError(
            f"{handle.filename} has no dataset '{name}' (it has: {sorted(handle.keys())})."
        )
    dataset = handle[name]
    if ndim is not None and dataset.ndim != ndim:
        raise DfkdError(
            f"{handle.filename}:/{name} has shape {dataset.shape}; expected {ndim} dimensions."
        )
    if dtypes and dataset.dtype.kind + str(dataset.dtype.itemsize) not in dtypes and str(dataset.dtype) not in dtypes:
        raise DfkdError(
            f"{handle.filename}:/{name} has dtype {dataset.dtype}; expected one of {list(dtypes)}."
        )
    return dataset


def read_h5_array(
    path: str | Path, name: str, ndim: int | None = None, dtypes: Sequence[str] = ()
) -> np.ndarray:
    with open_h5(path) as handle:
        dataset = h5_dataset(handle, name, ndim, dtypes)
        try:
            return dataset[()]
        except OSError as exc:
            raise DfkdError(f"{path}:/{name} cannot be read ({exc}); the file is corrupt.") from exc


def read_h5_provenance(path: str | Path) -> dict[str, Any] | None:
    with open_h5(path) as handle:
        raw = handle.attrs.get(PROVENANCE_KEY)
    return json.loads(raw) if raw is not None else None


def read_partial(partial: Path, fingerprint_key: str, fingerprint: str, read: Callable[[Any], T], who: str) -> T | None:
    """A stage's checkpoint file, read by `read(open_h5_handle)` when its `fingerprint_key` attr
    equals `fingerprint`; None (saying why on stderr) when there is none, it belongs to other
    settings or another teacher, or it is unreadable: the stage then starts afresh."""
    import h5py

    if not partial.is_file():
        return None
    try:
        with h5py.File(partial, "r") as handle:
            if handle.attrs.get(fingerprint_key) != fingerprint:
                print(f"{who}: {partial} belongs to other settings or another teacher; starting afresh",
                      file=sys.stderr, flush=True)
                return None
            return read(handle)
    except (OSError, KeyError, ValueError) as exc:
        print(f"{who}: {partial} is unreadable ({exc}); starting afresh", file=sys.stderr, flush=True)
        return None


# ---------------------------------------------------------------------------- parquet
def write_parquet(path: str | Path, frame, provenance: Mapping | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    if provenance is not None:
        record = _with_digest(provenance, _table_digest(table))
        metadata[PROVENANCE_KEY.encode()] = provenance_json(record).encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | Path, required_columns: Sequence[str] = ()):
    import pyarrow.parquet as pq

    path = Path(path)
    _require_file(path, "Parquet file")
    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DfkdError(
            f"{path} is not a readable parquet file ({exc}). Delete it and re-run its rule."
        ) from exc
    missing = [column for column in required_columns if column not in frame.columns]
    if missing:
        raise DfkdError(f"{path} lacks columns {missing} (it has {list(frame.columns)}).")
    return frame


def read_parquet_provenance(path: str | Path) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(PROVENANCE_KEY.encode())
    return json.loads(raw) if raw is not None else None


# ---------------------------------------------------------------------------- torch files
def save_torch(path: str | Path, state: Mapping[str, Any]) -> None:
    """Save a dict of tensors and plain values (never arbitrary objects) atomically.

    A `provenance` entry (JSON string, as in model.pt) gets the content digest added.
    """
    import torch

    state = dict(state)
    if isinstance(state.get("provenance"), str):
        record = json.loads(state["provenance"])
        state["provenance"] = provenance_json(_with_digest(record, _torch_digest(state)))
    buffer = io.BytesIO()  # torch's own file writer reports a full disk without errno ("unexpected pos")
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())


def load_torch(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or model file with `weights_only=True` (no pickled code runs).

    torch's own refusal is many lines and suggests `weights_only=False`, which would run
    whatever code the file holds: the user sees what the file is and that dfkd refuses instead.
    """
    import pickle
    import warnings

    import torch

    path = Path(path)
    _require_file(path, "Checkpoint")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DfkdError(
            f"{path} is not a dfkd tensor file: it holds {_pickled_what(str(exc), path)}, and dfkd refuses to "
            "unpickle code (dfkd files hold only tensors and plain values; it loads them with "
            "weights_only=True). Do not load it unsafely; if dfkd made it, delete it and re-run its rule."
        ) from None
    except Exception as exc:
        detail = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())  # one line for the CLI
        detail = " ".join(s for s in re.split(r"(?<=\.) ", detail) if "weights_only" not in s)  # never that hint
        if not _is_zip(path):  # torch's own words are then about unpickling, not about the file
            with open(path, "rb") as handle:
                head = handle.read(8)
            detail = f"not a zip archive, as torch files are; its first bytes are {head.hex(' ') or 'none'}"
        else:
            detail = f"{type(exc).__name__}: {detail}"
        raise DfkdError(
            f"{path} cannot be loaded as a dfkd checkpoint ({detail}). "
            "It may be truncated or not written by dfkd; delete it and re-run its rule."
        ) from None
    if not isinstance(state, dict):
        raise DfkdError(f"{path} holds a {type(state).__name__}, not a dfkd checkpoint dict.")
    return state


def _is_zip(path: Path) -> bool:
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _pickled_what(message: str, path: Path | None = None) -> str:
    """What torch's weights-only unpickler refused, in a few words: the global it met, else the
    globals the file's pickle would import (read from its opcodes; nothing runs)."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return f"a pickled Python object ({found.group(1)})"
    names = pickled_globals(path) if path is not None else []
    if names:
        return f"pickled Python code or objects (it would import {', '.join(names)})"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    if found:
        return f"pickled Python code or objects ({found.group(1).strip().rstrip('.')})"
    return "pickled Python code or objects"


def pickled_globals(path: str | Path, limit: int = 3) -> list[str]:
    """The `module.name` globals a pickle (a plain one, or a torch zip's data.pkl) would import,
    read with pickletools' opcode walker, which executes nothing; [] when unreadable."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(name) if name else b""
        else:
            data = Path(path).read_bytes()
        found, strings = [], []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                strings.append(arg)
            elif op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
        return list(dict.fromkeys(found))[:limit]
    except Exception:  # a damaged file: say what torch said instead
        return []


# ---------------------------------------------------------------------------- content digests
CONTENT_KEY = "content_sha256"  # the provenance key holding the payload digest
ARTIFACT_SUFFIXES = (".h5", ".parquet", ".json", ".pt")
_DIGEST_BLOCK = 1 << 26  # bytes of an HDF5 dataset hashed per read


def content_digest(path: str | Path) -> str:
    """sha256 of an artifact's payload, as recorded at write time in its provenance.

    HDF5: every dataset (name, dtype, shape, bytes; sorted by name) and every attribute but the
    provenance. Parquet: every column (name, type, values, nulls), chunking and schema metadata
    ignored. JSON: the canonical dump of the payload without `provenance`. Torch files: every
    entry but `provenance` (tensors by dtype, shape and bytes; dicts in sorted key order).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ARTIFACT_SUFFIXES and suffix != ".hdf5":
        raise DfkdError(f"{path}: no content digest for '{suffix}' files (dfkd artifacts are {ARTIFACT_SUFFIXES}).")
    _require_file(path, "Artifact")
    if suffix == ".json":
        body = read_json(path, verify=False)
        if not isinstance(body, dict):
            raise DfkdError(f"{path} holds a JSON {type(body).__name__}, not a dfkd artifact object.")
        return _json_digest(body)
    if suffix == ".pt":
        return _torch_digest(load_torch(path))
    try:
        if suffix == ".parquet":
            return _parquet_file_digest(path)
        with open_h5(path) as handle:
            return _h5_digest(handle)
    except DfkdError:
        raise
    except Exception as exc:  # h5py and pyarrow raise many types for damaged files
        raise DfkdError(
            f"{path} cannot be read to the end ({type(exc).__name__}: {exc}); it may be truncated. "
            "Delete it and re-run the rule that makes it."
        ) from exc


def _with_digest(provenance: Mapping, digest: str) -> dict[str, Any]:
    """A copy of `provenance` with the content digest (the caller's dict is left as it was)."""
    return {**provenance, CONTENT_KEY: digest}


def _frame(digest, *parts: Any) -> None:
    """Feed length-prefixed parts, so that no two different sequences hash alike."""
    for part in parts:
        data = part if isinstance(part, (bytes, bytearray, memoryview)) else str(part).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)


def _json_digest(payload: Mapping[str, Any]) -> str:
    # Round-trip through JSON first, so that the digest at write time (tuples, int keys) equals
    # the one recomputed from the file.
    body = json.loads(json.dumps({k: v for k, v in payload.items() if k != "provenance"}))
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _h5_digest(handle) -> str:
    """Digest of an open HDF5 file's datasets and non-provenance attributes (streamed)."""
    import h5py

    digest = hashlib.sha256()
    names: list[str] = []
    handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    for name in sorted(names):
        dataset = handle[name]
        dtype = dataset.dtype
        _frame(digest, "dataset", name, str(dtype.descr) if dtype.fields else dtype.str, dataset.shape)
        if dtype.kind == "O":  # variable-length strings or bytes: element by element
            for value in np.asarray(dataset[()]).reshape(-1):
                _frame(digest, value if isinstance(value, bytes) else str(value))
            continue
        if dataset.ndim == 0 or dataset.size == 0:
            digest.update(np.ascontiguousarray(dataset[()]).tobytes())
            continue
        row_bytes = max(1, dataset.size // dataset.shape[0] * dtype.itemsize)
        rows = max(1, _DIGEST_BLOCK // row_bytes)
        if dataset.chunks and rows > dataset.chunks[0]:
            rows -= rows % dataset.chunks[0]  # whole chunks per read
        for start in range(0, dataset.shape[0], rows):
            digest.update(np.ascontiguousarray(dataset[start : start + rows]))
    for key in sorted(handle.attrs):
        if key != PROVENANCE_KEY:
            _frame(digest, "attr", key, _attr_bytes(handle.attrs[key]))
    return digest.hexdigest()


def _attr_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return b"str:" + value.encode()
    if isinstance(value, bytes):
        return b"bytes:" + value
    array = np.asarray(value)
    if array.dtype.kind == "O":
        return b"obj:" + repr([v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1).tolist()]).encode()
    return f"{array.dtype.str}{array.shape}:".encode() + array.tobytes()


def _parquet_file_digest(path: Path) -> str:
    import pyarrow.parquet as pq

    return _table_digest(pq.read_table(path))


def _table_digest(table) -> str:
    """Digest of an arrow table's columns: independent of chunking and schema metadata.

    Dictionary columns are hashed as their decoded values and large/small string and binary
    types alike, so that the digest of the table in memory (at write time) equals the digest of
    the table read back from the parquet file.
    """
    import pyarrow as pa

    digest = hashlib.sha256()
    _frame(digest, "rows", table.num_rows)
    for name, column in zip(table.column_names, table.columns):
        dtype = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        nulls, lengths, values = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
        offset = 0
        for chunk in column.chunks:
            if pa.types.is_dictionary(chunk.type):
                chunk = chunk.dictionary_decode()
            _hash_arrow_chunk(chunk, dtype, offset, nulls, lengths, values)
            offset += len(chunk)
        _frame(digest, "column", name, _canonical_type(dtype), nulls.digest(), lengths.digest(), values.digest())
    return digest.hexdigest()


def _canonical_type(dtype) -> str:
    text = str(dtype)
    return {"large_string": "string", "large_utf8": "string", "utf8": "string",
            "large_binary": "binary"}.get(text, text)


def _hash_arrow_chunk(chunk, dtype, offset: int, nulls, lengths, values) -> None:
    import pyarrow as pa

    if not len(chunk):
        return
    valid = chunk.is_valid().to_numpy(zero_copy_only=False) if chunk.null_count else None
    if valid is not None:
        nulls.update((np.flatnonzero(~valid) + offset).astype("<i8").tobytes())
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_binary(dtype) \
            or pa.types.is_large_binary(dtype):
        chunk = chunk.fill_null("" if "string" in str(dtype) else b"").cast(pa.large_binary())
        _, offsets_buffer, data_buffer = chunk.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype="<i8")[chunk.offset : chunk.offset + len(chunk) + 1]
        lengths.update(np.diff(offsets).astype("<i8").tobytes())
        if data_buffer is not None:
            values.update(memoryview(data_buffer)[int(offsets[0]) : int(offsets[-1])])
    elif pa.types.is_boolean(dtype):
        values.update(chunk.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8).tobytes())
    elif pa.types.is_primitive(dtype) and not pa.types.is_null(dtype) and dtype.bit_width % 8 == 0:
        # the value buffer itself (exact for every fixed-width type), null slots zeroed
        width = dtype.bit_width // 8
        raw = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)
        raw = raw[chunk.offset * width : (chunk.offset + len(chunk)) * width].reshape(len(chunk), width)
        if valid is not None:
            raw = raw.copy()
            raw[~valid] = 0
        values.update(np.ascontiguousarray(raw))
    else:  # nested or unusual types: element by element (slow, but dfkd writes none)
        for value in chunk.to_pylist():
            _frame(values, repr(value))


def _torch_digest(state: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()
    _feed_value(digest, {key: value for key, value in state.items() if key != "provenance"})
    return digest.hexdigest()


def _feed_value(digest, value: Any) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        _frame(digest, "tensor", str(tensor.dtype), tuple(tensor.shape))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, np.ndarray):
        _frame(digest, "ndarray", value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        _frame(digest, "dict", len(value))
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed_value(digest, key)
            _feed_value(digest, value[key])
    elif isinstance(value, (list, tuple)):
        _frame(digest, "list", len(value))
        for item in value:
            _feed_value(digest, item)
    else:  # None, bool, int, float, str, torch.dtype/device ...: their repr is exact
        _frame(digest, type(value).__name__, repr(value))
