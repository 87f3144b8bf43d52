"""Teachers from outside: a pretrained classifier that dfkd did not train (config `teacher.load`).

Forms (`load.format`), each loaded without running pickled code:
- `state_dict`: weights of a registry architecture (`load.arch`), as a bare state_dict or a
  checkpoint dict holding one (under `load.key`, else the first of `CHECKPOINT_KEYS`; a dfkd
  model.pt is such a checkpoint). `torch.load(weights_only=True)`.
- `torchvision`: a torchvision classification architecture by name (`load.arch`, e.g. resnet18),
  `torchvision.models.get_model(name, weights=None, num_classes=K)`, plus its weights as above.
- `torchscript`: `torch.jit.load`; TorchScript's unpickler restores tensors and TorchScript
  classes only, and its code is TorchScript, which cannot call Python.
- `export`: a `torch.export` program (.pt2), `torch.export.load` with every `torch.load` inside
  forced to weights_only=True, archives that hold pickled objects refused (torch would unpickle
  them), shape expressions limited to arithmetic over shape symbols (torch sympifies them, which
  runs eval), and every call of the graph a torch op or a Python operator.

`import_teacher` checks the model on one zero batch of the target's shape and writes
teacher/model.pt: for `state_dict` without `layer`, the ordinary dfkd model file (downstream it
is the registry model, exactly as if dfkd had trained it); otherwise a record whose `format`
names the form, holding the weights (`torchvision`) or the file's bytes (`program`, uint8), so
the results folder keeps its teacher whatever happens to the original. `dfkd.models.load_model`
rebuilds either. Features: the registry's `.features`; else the output of module `load.layer`
(a forward hook, nn.Module forms); else the logits, and the record says `features: logits`.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from dfkd.errors import DfkdError
from dfkd.models.registry import MODELS, build_model

FORMATS = ("state_dict", "torchvision", "torchscript", "export")
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
_PROGRAM_FORMATS = ("torchscript", "export")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    detail = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    detail = " ".join(s for s in re.split(r"(?<=\.) ", detail) if "weights_only" not in s)  # never that hint
    return f"{type(exc).__name__}: {detail if len(detail) <= limit else detail[:limit] + ' ...'}"


# ---------------------------------------------------------------------------- the one interface
class ExternalTeacher(nn.Module):
    """Any classifier as a dfkd teacher: `forward(x)` -> logits, `features(x)`, `head(f)`.

    With `layer`, `features(x)` is that module's output (flattened) in a full forward pass, and
    `head(f)` returns that same pass's logits (`head(features(x)) == forward(x)`; a layer need
    not be the input of a linear head). Without it, features are the logits and `head` is the
    identity. The inner model stays in eval mode (an exported program cannot switch modes).
    """

    def __init__(self, inner: nn.Module, layer: str | None, where: str):
        super().__init__()
        self.inner, self.layer = inner, layer
        self._captured: torch.Tensor | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        if layer is not None:
            modules = dict(inner.named_modules())
            if layer not in modules or layer == "":
                names = [n for n in modules if n]
                raise DfkdError(
                    f"{where}: the teacher has no layer '{layer}'; some of its {len(names)} layers: "
                    f"{', '.join(names[-8:]) or 'none'}. Set teacher.load.layer to one of them, or drop it "
                    "(the features are then the logits)."
                )
            modules[layer].register_forward_hook(self._capture)

    def _capture(self, module, args, output) -> None:
        self._captured = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)  # (N, K)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)  # (N, K)
        if self.layer is None:
            return logits
        features, self._captured = self._captured.flatten(1), None  # (N, D)
        self._pending = (features, logits)
        return features

    def head(self, f: torch.Tensor) -> torch.Tensor:
        if self.layer is None:
            return f
        if self._pending is None or self._pending[0] is not f:
            raise DfkdError(f"head(f) of a teacher with layer '{self.layer}' takes the tensor features(x) "
                            "just returned (the layer is not a linear head's input).")
        logits, self._pending = self._pending[1], None
        return logits

    def train(self, mode: bool = True) -> "ExternalTeacher":
        self.training = mode  # the inner model stays as loaded (eval)
        return self


# ---------------------------------------------------------------------------- reading files
def read_weights(path: Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """A state_dict from a bare state_dict or a checkpoint dict, loaded with weights_only=True."""
    from dfkd.io.artifacts import _pickled_what

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = _pickled_what(str(exc), path)
        if "invalid load key" in str(exc) or "GLOBAL" not in str(exc) and "Unsupported" not in str(exc):
            raise DfkdError(f"{path} is not a PyTorch weights file ({_one_line(exc, 120)}); give the file that "
                            "torch.save(model.state_dict(), path) writes, or set teacher.load.format.") from None
        raise DfkdError(f"{path} holds {what}, and dfkd refuses to unpickle code (weights load with "
                        "weights_only=True); save the weights alone: torch.save(model.state_dict(), path).") from None
    except Exception as exc:
        raise DfkdError(f"{path} is not a PyTorch weights file ({_one_line(exc, 160)}); give the file that "
                        "torch.save(model.state_dict(), path) writes, or set teacher.load.format.") from None
    if isinstance(state, dict) and key is not None:
        if key not in state:
            raise DfkdError(f"{path} has no key '{key}' (keys: {sorted(map(str, state))[:10]}); fix teacher.load.key.")
        state = state[key]
    elif isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = next((k for k in CHECKPOINT_KEYS if isinstance(state.get(k), dict)), None)
        if found is None:
            raise DfkdError(f"{path} is a dict without tensors or one of {list(CHECKPOINT_KEYS)} (keys: "
                            f"{sorted(map(str, state))[:10]}); name the key of its state_dict in teacher.load.key.")
        state = state[found]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DfkdError(f"{path} holds no state_dict (name -> tensor); give torch.save(model.state_dict(), path) "
                        "or a checkpoint holding one (teacher.load.key).")
    return dict(state)


def _fit_weights(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, what: str) -> nn.Module:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DfkdError(f"{path}: its weights do not fit {what} ({_one_line(exc)}). Check teacher.load.arch and the "
                        "target's channels, image_size and num_classes against the teacher's.") from None
    return model


def _torchvision_model(name: str, num_classes: int) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise DfkdError(f"teacher.load.arch '{name}' is not a torchvision classification model; e.g. "
                        f"{', '.join(known[:8])} ({len(known)} in all).")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


@contextlib.contextmanager
def _weights_only_loads():
    """Every torch.load in the block runs with weights_only=True, whatever its caller asks."""
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def _check_pt2_archive(data: bytes, where: str) -> None:
    """Refuse a .pt2 whose loading would unpickle objects or parse symbolic shapes (sympify evals)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except zipfile.BadZipFile:
        raise DfkdError(f"{where} is not a torch.export program (.pt2 is a zip archive); export it with "
                        "torch.export.save(torch.export.export(model.eval(), (x,)), path).") from None
    objects = [n for n in names if re.search(r"(custom_obj|opaque_obj)", n.rsplit("/", 1)[-1])]
    if objects:
        raise DfkdError(f"{where} holds pickled objects ({objects[0]}), which dfkd refuses to unpickle; export a "
                        "plain tensor model.")
    for name in names:
        if name.endswith(".json"):
            try:
                tree = json.loads(archive.read(name))
            except ValueError:
                continue
            for expr in _expr_strings(tree):
                if not _safe_expr(expr):
                    raise DfkdError(f"{where} holds the shape expression {expr[:60]!r}, which dfkd refuses to parse "
                                    "(torch evaluates it with sympify); export the model afresh with torch.export.")


# Symbolic shapes of a .pt2 are parsed with sympy.sympify, which runs eval: only plain arithmetic
# over shape symbols (s0, u1, ...) and torch's shape functions may pass.
_SAFE_NAMES = {
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "Max", "Min", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "True", "False", "oo", "Integer", "Rational", "Float",
}


def _expr_strings(tree: Any):
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "expr_str" and isinstance(value, str):
                yield value
            else:
                yield from _expr_strings(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _expr_strings(value)


_SYMBOL = re.compile(r"Symbol\('[a-z]+[0-9]+'(?:, (?:positive|integer|real|nonnegative|finite)=(?:True|False))*\)")


def _safe_expr(expr: str) -> bool:
    expr = _SYMBOL.sub("s0", expr)  # torch writes shape symbols as Symbol('s0', positive=True, integer=True)
    if not re.fullmatch(r"[A-Za-z0-9_ +\-*/%(),.<>=!&|~]*", expr) or re.search(r"\.[A-Za-z_]|__", expr):
        return False
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr)
    return all(re.fullmatch(r"[a-z]+[0-9]+", n) or n in _SAFE_NAMES for n in names)


def _check_graph_calls(module: nn.Module, where: str) -> None:
    """Every call of an exported graph is a torch op or a Python operator (no other Python callable)."""
    import operator

    for node in module.graph.nodes:
        if node.op != "call_function":
            continue
        target = node.target
        if isinstance(target, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
            continue
        if getattr(target, "__module__", None) in ("_operator", "operator") and getattr(operator, target.__name__, None) is target:
            continue
        raise DfkdError(f"{where}: its graph calls {target!r}, not a torch op; dfkd runs only torch ops from a .pt2.")


def _program_module(form: str, data: bytes, where: str) -> nn.Module:
    """The nn.Module of a TorchScript or torch.export file's bytes (on the CPU)."""
    if form == "torchscript":
        try:
            with warnings.catch_warnings():  # "torch.jit.load is deprecated": still the way to read TorchScript
                warnings.simplefilter("ignore")
                module = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:
            raise DfkdError(f"{where} is not a TorchScript file ({_one_line(exc, 160)}); write one with "
                            "torch.jit.save(torch.jit.script(model), path) or set teacher.load.format.") from None
        return module.eval()
    _check_pt2_archive(data, where)
    try:
        with _weights_only_loads(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(io.BytesIO(data))
        module = program.module()
    except DfkdError:
        raise
    except Exception as exc:
        raise DfkdError(f"{where} cannot be loaded as a torch.export program ({_one_line(exc, 160)}); export it "
                        "with torch.export.save(torch.export.export(model.eval(), (x,)), path).") from None
    _check_graph_calls(module, where)
    return module


# ---------------------------------------------------------------------------- records
def record_fields(load: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The model record's form-specific keys (arch, state_dict, ...) from the teacher file of a `teacher.load` block."""
    form, arch, layer = load["format"], load.get("arch"), load.get("layer")
    path = Path(path)
    if not path.is_file():
        raise DfkdError(f"teacher file {path} not found; fix teacher.load.path.")
    if form == "state_dict":
        if arch not in MODELS:
            raise DfkdError(f"teacher.load.arch '{arch}' is not a dfkd architecture (known: {sorted(MODELS)}); "
                            "use format torchvision for torchvision models.")
        fields = {"arch": arch, "state_dict": read_weights(path, load.get("key"))}
    elif form == "torchvision":
        fields = {"arch": arch, "state_dict": read_weights(path, load.get("key"))}
    elif form in _PROGRAM_FORMATS:
        fields = {"arch": form, "state_dict": {},
                  "program": torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)}
    else:
        raise DfkdError(f"teacher.load.format '{form}' is unknown; known: {list(FORMATS)}.")
    if form != "state_dict" or layer is not None:  # else: the ordinary dfkd model file
        fields.update({"format": form, "layer": layer,
                       "features": f"layer {layer}" if layer is not None else "logits"})
    return fields


def model_from_record(record: Mapping[str, Any], where: str) -> nn.Module:
    """Rebuild a teacher whose record has a `format` (see the module docstring), on the CPU, in eval mode."""
    form, layer = record["format"], record.get("layer")
    K = int(record["num_classes"])
    if form == "state_dict":
        inner = build_model(record["arch"], record["in_channels"], K, record["image_size"])
        inner = _fit_weights(inner, record["state_dict"], Path(where), f"arch '{record['arch']}'")
    elif form == "torchvision":
        inner = _fit_weights(_torchvision_model(record["arch"], K), record["state_dict"], Path(where),
                             f"torchvision {record['arch']} with {K} classes")
    elif form in _PROGRAM_FORMATS:
        inner = _program_module(form, record["program"].numpy().tobytes(), where)
    else:
        raise DfkdError(f"{where} holds teacher format '{form}', unknown to this dfkd (known: {list(FORMATS)}).")
    if form in ("state_dict", "torchvision"):
        inner.eval()
    if layer is not None and form == "torchscript":
        raise DfkdError(f"{where}: teacher.load.layer needs a Python model (formats state_dict, torchvision, export); "
                        "a TorchScript teacher gives its logits as features: drop layer.")
    if layer is not None and form == "export":
        raise DfkdError(f"{where}: teacher.load.layer is not supported for a .pt2 program (its graph has no layers); "
                        "drop layer (features are then the logits) or give the weights as format state_dict/torchvision.")
    return ExternalTeacher(inner, layer, where)


@torch.no_grad()
def check_against_target(model: nn.Module, spec: Mapping[str, Any], where: str, target_name: str = "X") -> int:
    """Run one zero batch of the target's shape; the logits must be (2, K). Returns the feature width."""
    C, S, K = spec["channels"], spec["image_size"], spec["num_classes"]
    x = torch.zeros(2, C, S, S)
    try:
        features = model.features(x)
        logits = model.head(features)
    except DfkdError:
        raise
    except Exception as exc:
        raise DfkdError(f"{where} does not take the target's {C}x{S}x{S} images ({_one_line(exc, 200)}); set "
                        f"targets.{target_name}.channels and image_size to the teacher's input.") from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise DfkdError(f"{where} returns {shape} for 2 images, not logits (2, K); give a classifier that returns "
                        "one logits tensor.")
    if logits.shape[1] != K:
        raise DfkdError(f"{where} outputs {logits.shape[1]} classes, but targets.{target_name}.num_classes is {K}; "
                        f"set num_classes: {logits.shape[1]} or give the matching teacher.")
    return int(features.flatten(1).shape[1])
