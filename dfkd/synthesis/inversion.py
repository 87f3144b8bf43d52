"""Generator `inversion`: DeepInversion (Yin et al., "Dreaming to Distill", CVPR 2020).

Images are optimised from Gaussian noise so that the teacher (1) classifies each as its
target class (cross-entropy) while (2) the mean and variance of every BatchNorm layer's
input over the batch match the running statistics the layer stored in training (forward
hooks), under (3) two image priors, total variation and the l2 norm, on randomly jittered
(rolled by up to `jitter` pixels) and flipped copies. The loss, per iteration:

    ce * CE(teacher(x~), c) + bn * sum_l (||mu_l(x~) - mu_l||_2 + ||var_l(x~) - var_l||_2)
    + tv * TV_2(x~) + l2 * ||x~||_2

with x~ the jittered, flipped batch and TV_2 the sum of the l2 norms of the four neighbour
differences (horizontal, vertical, both diagonals), as NVlabs/DeepInversion computes them.

Defaults (`PROPERTIES`) are the paper's CIFAR-10 parameters as its code states them
(cifar10/README.md, the "paper parameters" command of cifar10/deepinversion_cifar10.py):
batch 256 (the block's common `batch`), 2,000 iterations, Adam (betas 0.9, 0.999) at lr
0.05, BN weight 10 on every BatchNorm layer, TV 2.5e-5, l2 0, cross-entropy weight 1, jitter
of +-2 pixels. That
script's argparse defaults differ (lr 0.1, BN weight 100): the README's command is the one
it calls the paper's. The CIFAR-10 script does not flip; the ImageNet one
(deepinversion.py) flips the batch with probability 1/2 every iteration, and so does this
module unless `flip: false`. Adaptive DeepInversion's student-competition term is not
implemented (it needs a student during synthesis).

Where the images live. dfkd feeds a teacher uint8 images as (x / 255 - mean) / std
(dfkd.training.normalize), so the variables optimised are that normalised input, as in
DeepInversion, kept to the range that pixels 0..255 map to (clamped after every step). The
teacher sees each iterate quantised to 256 levels (straight-through: the forward pass uses
the rounded pixels, the gradient passes as if rounding were the identity), so the stored
uint8 images are exactly the ones whose loss was optimised, not a rounding of them.
The result is the last iterate (the CIFAR-10 script's `best_inputs` aliases the optimised
tensor, so it returns the last iterate too).

Soft targets: the one-hot target, the distribution the images were optimised towards (the
cross-entropy term), as `impressions` returns the Dirichlet target it optimised towards. The
teacher re-labels the stored bytes anyway (dfkd.synthesis.driver), so the data file's `kl`
column (KL of the teacher's softmax from the target) is then each stored image's
cross-entropy, -log p_teacher(class made for): how far the teacher agrees. (The teacher's own
softmax as the target would make that column 0 by construction.)

Teachers. Hooks need the BatchNorm layers as Python modules: dfkd's registry models and
teachers from files of form `state_dict` or `torchvision` have them. A TorchScript teacher
runs its layers as compiled code, which ignores Python hooks, and a torch.export program
(.pt2) holds batch norm as graph operations, not layers: both are refused with a one-line
error (`check_teacher`), as is a teacher without BatchNorm; the error names `impressions`
(Data Impressions), which needs no BatchNorm.

Batches. The statistics matched are those of the whole training set, so a batch made for one
class asks its images to look like every class at once in the BatchNorm layers; DeepInversion
interleaves the classes in each batch (targets 0..9, 0..9, ...). How much it matters depends
on the teacher (measured here, 100 to 150 iterations, CPU): on the tests' tiny teacher (global
average pooling right after its last BatchNorm) 30 of 32 images hit their class in batches of
8 mixed classes against 12 of 32 in one-class batches; on the 12-epoch fmnist_bn LeNet-5-BN
teacher, 118 of 120 mixed against 120 of 120 one-class. Callers that can should mix classes
within a batch.

Randomness: the starting noise, jitter offsets and flips are drawn from the `generator`
argument only, so a seeded generator gives the same bytes on the same device and threads.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from dfkd.errors import DfkdError

NAME = "inversion"
ALTERNATIVE = "impressions"
# The settings (keys of a source block of kind `inversion`, or of a fill's generator), as the JSON
# schema that dfkd.synthesis's registry and the config schema read. The batch size is the block's
# common `batch` key (default 256, DeepInversion's), not a setting of its own.
PROPERTIES: dict[str, dict[str, Any]] = {
    "iterations": {
        "type": "integer", "minimum": 1, "maximum": 100_000, "default": 2000,
        "description": "Adam steps per batch (DeepInversion's CIFAR-10 script: 2,000).",
    },
    "lr": {
        "type": "number", "exclusiveMinimum": 0, "maximum": 10, "default": 0.05,
        "description": "Adam learning rate on the normalised input ((x / 255 - mean) / std); the paper's CIFAR-10 "
                       "parameters: 0.05.",
    },
    "ce": {
        "type": "number", "minimum": 0, "default": 1.0,
        "description": "Weight of the cross-entropy between the teacher's output and the class each image is made for.",
    },
    "bn": {
        "type": "number", "minimum": 0, "default": 10.0,
        "description": "Weight of the BatchNorm statistics term (sum over every BatchNorm layer of ||batch mean - "
                       "running mean|| + ||batch var - running var||); the paper's CIFAR-10 parameters: 10.",
    },
    "tv": {
        "type": "number", "minimum": 0, "default": 2.5e-5,
        "description": "Weight of the total-variation prior (l2 norms of neighbour differences); CIFAR-10: 2.5e-5.",
    },
    "l2": {
        "type": "number", "minimum": 0, "default": 0.0,
        "description": "Weight of the l2 norm of the (normalised) input; CIFAR-10: 0.",
    },
    "jitter": {
        "type": "integer", "minimum": 0, "maximum": 64, "default": 2,
        "description": "Each iteration rolls the batch by up to this many pixels on both axes (CIFAR-10: 2).",
    },
    "flip": {
        "type": "boolean", "default": True,
        "description": "Each iteration flips the batch left-right with probability 1/2 (DeepInversion's ImageNet "
                       "code does; its CIFAR-10 script does not).",
    },
}
DEFAULTS: dict[str, Any] = {key: prop["default"] for key, prop in PROPERTIES.items()}
_INTEGERS = {"iterations": 1, "jitter": 0}  # key -> minimum
_POSITIVE = ("lr",)
_WEIGHTS = ("ce", "bn", "tv", "l2")


# ---------------------------------------------------------------------------- settings and spec
def resolve_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """`DEFAULTS` overridden by `settings`, checked (the config schema checks them too, from `PROPERTIES`;
    this covers direct callers); the keys `kind` and `batch` (the block's, not a setting) are ignored."""
    given = {k: v for k, v in (settings or {}).items() if k not in ("kind", "batch")}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise DfkdError(f"generator {NAME}: unknown setting(s) {unknown}; known: {sorted(DEFAULTS)}.")
    resolved = {**DEFAULTS, **given}
    for key, minimum in _INTEGERS.items():
        value = resolved[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise DfkdError(f"generator {NAME}: {key} must be an integer >= {minimum}, got {value!r}.")
    for key in (*_POSITIVE, *_WEIGHTS):
        value = resolved[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise DfkdError(f"generator {NAME}: {key} must be a finite number >= 0, got {value!r}.")
        if key in _POSITIVE and value == 0:
            raise DfkdError(f"generator {NAME}: {key} must be > 0, got {value!r}.")
        resolved[key] = float(value)
    if not isinstance(resolved["flip"], bool):
        raise DfkdError(f"generator {NAME}: flip must be true or false, got {resolved['flip']!r}.")
    return resolved


def _spec(spec: Any, key: str) -> Any:
    """A field of the target spec, given as an object with attributes or as a mapping."""
    if hasattr(spec, key):
        return getattr(spec, key)
    if isinstance(spec, Mapping) and key in spec:
        return spec[key]
    raise DfkdError(f"generator {NAME}: the target spec lacks '{key}' (needs channels, image_size, num_classes, mean, std).")


def _per_channel(values: Sequence[float], channels: int, what: str) -> torch.Tensor:
    values = [float(v) for v in values]
    if len(values) not in (1, channels):
        raise DfkdError(f"generator {NAME}: {what} {values} must have 1 or {channels} values (one per channel).")
    return torch.tensor(values * (channels if len(values) == 1 else 1)).view(1, channels, 1, 1)


# ---------------------------------------------------------------------------- the teacher's BatchNorm layers
def _scripted_batchnorms(teacher: nn.Module) -> int:
    """How many BatchNorm layers run inside TorchScript in a teacher (by their original class name)."""
    return sum(1 for m in teacher.modules() if isinstance(m, torch.jit.ScriptModule)
               and "BatchNorm" in getattr(m, "original_name", ""))


def _graph_batchnorms(teacher: nn.Module) -> int:
    """How many batch-norm operations the fx graphs inside a teacher call as functions (a torch.export
    program's form)."""
    graphs = [m for m in teacher.modules() if isinstance(m, torch.fx.GraphModule)]
    return sum(1 for g in graphs for node in g.graph.nodes
               if node.op == "call_function" and "batch_norm" in str(node.target))


def check_teacher(teacher: nn.Module, where: str = "the teacher") -> list[tuple[str, _BatchNorm]]:
    """The teacher's BatchNorm layers with running statistics, as (name, module), in forward order of
    registration; a one-line DfkdError naming `impressions` when there are none or none can be hooked."""
    layers = [(name, m) for name, m in teacher.named_modules()
              if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None]
    if layers:
        return layers
    scripted, graphed = _scripted_batchnorms(teacher), _graph_batchnorms(teacher)
    if scripted:
        raise DfkdError(f"generator {NAME}: {where} is TorchScript, whose {scripted} BatchNorm layer(s) run as compiled "
                        "code that ignores forward hooks, so their batch statistics cannot be matched; give its weights "
                        f"as teacher.load format state_dict or torchvision, or use generator {ALTERNATIVE}.")
    if graphed:
        raise DfkdError(f"generator {NAME}: {where} is a torch.export program (.pt2), whose {graphed} batch-norm "
                        "operation(s) are graph nodes, not layers that forward hooks can reach; give its weights as "
                        f"teacher.load format state_dict or torchvision, or use generator {ALTERNATIVE}.")
    untracked = any(isinstance(m, _BatchNorm) for m in teacher.modules())
    reason = "its BatchNorm layers keep no running statistics" if untracked else "it has no BatchNorm layer"
    raise DfkdError(f"generator {NAME} (DeepInversion) matches the batch statistics that a teacher's BatchNorm layers "
                    f"stored, but {where} cannot be inverted: {reason}; use generator "
                    f"{ALTERNATIVE} (Data Impressions), which needs none.")


class _StatisticsHooks:
    """Forward hooks on BatchNorm layers: each forward pass records, per layer, the distance
    ||mean - running_mean||_2 + ||var - running_var||_2 of the layer's input over the batch
    (every dimension but the channels; biased variance, as BatchNorm normalises with)."""

    def __init__(self, layers: Sequence[tuple[str, _BatchNorm]]):
        self.names = [name for name, _ in layers]
        self.distances: dict[str, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in layers]

    def _hook(self, name: str):
        def record(module: _BatchNorm, inputs, output) -> None:
            x = inputs[0]  # (N, C, ...) the layer's input
            dims = [0, *range(2, x.ndim)]
            mean, var = x.mean(dims), x.var(dims, unbiased=False)  # (C,)
            self.distances[name] = (torch.linalg.vector_norm(var - module.running_var.to(var.dtype))
                                    + torch.linalg.vector_norm(mean - module.running_mean.to(mean.dtype)))
        return record

    def take(self, where: str) -> list[torch.Tensor]:
        """This forward pass's per-layer distances (in layer order); every hooked layer must have run."""
        missing = [name for name in self.names if name not in self.distances]
        if missing:
            raise DfkdError(f"generator {NAME}: {where}'s BatchNorm layer(s) {missing[:4]} did not run in its forward "
                            f"pass, so their statistics cannot be matched; use generator {ALTERNATIVE}.")
        taken, self.distances = [self.distances[name] for name in self.names], {}
        return taken

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


# ---------------------------------------------------------------------------- priors
def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Sum of the l2 norms of the horizontal, vertical and both diagonal neighbour differences
    (DeepInversion's `loss_var_l2`)."""
    return (torch.linalg.vector_norm(x[:, :, :, :-1] - x[:, :, :, 1:])
            + torch.linalg.vector_norm(x[:, :, :-1, :] - x[:, :, 1:, :])
            + torch.linalg.vector_norm(x[:, :, 1:, :-1] - x[:, :, :-1, 1:])
            + torch.linalg.vector_norm(x[:, :, :-1, :-1] - x[:, :, 1:, 1:]))


# ---------------------------------------------------------------------------- synthesis
def starting_noise(n: int, spec: Any, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The starting point: N(0, 1) in the normalised input space (DeepInversion's randn), clamped
    to the range of valid pixels; float32 [n, C, S, S] on `device`. Drawn on the generator's device."""
    C, S = int(_spec(spec, "channels")), int(_spec(spec, "image_size"))
    z = torch.randn((n, C, S, S), generator=generator, device=generator.device).to(device)
    low, high = _input_range(spec, device)
    return torch.maximum(torch.minimum(z, high), low)


def _input_range(spec: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    C = int(_spec(spec, "channels"))
    mean = _per_channel(_spec(spec, "mean"), C, "mean").to(device)
    std = _per_channel(_spec(spec, "std"), C, "std").to(device)
    return (0 - mean) / std, (1 - mean) / std  # each (1, C, 1, 1)


def to_uint8(z: torch.Tensor, spec: Any) -> torch.Tensor:
    """Normalised input -> the uint8 image dfkd stores (round to nearest of 256 levels), [n, C, S, S]."""
    C = z.shape[1]
    mean = _per_channel(_spec(spec, "mean"), C, "mean").to(z.device)
    std = _per_channel(_spec(spec, "std"), C, "std").to(z.device)
    return (z * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)


def _quantised(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """z as the teacher will see it once stored as uint8; the gradient passes straight through."""
    pixels = (z * std + mean).clamp(0, 1).mul(255).round().div(255)
    return z + ((pixels - mean) / std - z).detach()


def _check_classes(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    if not isinstance(classes, torch.Tensor) or classes.ndim != 1 or classes.dtype != torch.int64 or len(classes) == 0:
        raise DfkdError(f"generator {NAME}: classes must be a non-empty 1-D int64 tensor, got "
                        f"{getattr(classes, 'dtype', type(classes).__name__)} of shape {tuple(getattr(classes, 'shape', ()))}.")
    if int(classes.min()) < 0 or int(classes.max()) >= num_classes:
        raise DfkdError(f"generator {NAME}: classes must lie in 0..{num_classes - 1}, got {int(classes.min())}.."
                        f"{int(classes.max())}.")
    return classes


def bn_distances(teacher: nn.Module, images: torch.Tensor, spec: Any) -> list[float]:
    """Per BatchNorm layer (`check_teacher`'s order), ||mean - running_mean|| + ||var - running_var|| of
    its input over the batch of uint8 `images`, as dfkd feeds them to the teacher (no jitter)."""
    from dfkd.training import normalize

    layers = check_teacher(teacher)
    hooks = _StatisticsHooks(layers)
    device = next((p.device for p in teacher.parameters()), images.device)
    try:
        with torch.no_grad():
            teacher(normalize(images.to(device), _spec(spec, "mean"), _spec(spec, "std")))
        return [float(d) for d in hooks.take("the teacher")]
    finally:
        hooks.close()


def synthesize_batch(
    teacher: nn.Module,
    classes: torch.Tensor,
    spec: Any,
    settings: Mapping[str, Any],
    generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepInversion of one batch: `classes` int64 [n] (the target class of each image) ->
    (images uint8 [n, C, S, S], soft_targets float32 [n, K] one-hot), both on the CPU.

    The n images are optimised together (their batch statistics are matched): splitting a
    request into batches of the block's `batch` is the caller's job (dfkd.synthesis.driver).
    `teacher` must already be on `device`; it is used in eval mode with its weights frozen and
    left as it was found. `spec` gives channels, image_size, num_classes, mean and std
    (attributes or keys).
    """
    s = resolve_settings(settings)
    C, S, K = int(_spec(spec, "channels")), int(_spec(spec, "image_size")), int(_spec(spec, "num_classes"))
    classes = _check_classes(classes, K).to(device)
    layers = check_teacher(teacher)
    mean = _per_channel(_spec(spec, "mean"), C, "mean").to(device)
    std = _per_channel(_spec(spec, "std"), C, "std").to(device)
    low, high = _input_range(spec, device)
    jitter = min(s["jitter"], S - 1)

    z = starting_noise(len(classes), spec, generator, device).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=s["lr"])
    modes = [(m, m.training) for m in teacher.modules()]
    frozen = [(p, p.requires_grad) for p in teacher.parameters()]
    hooks = _StatisticsHooks(layers)
    try:
        teacher.eval()
        for p, _ in frozen:
            p.requires_grad_(False)
        for _ in range(s["iterations"]):
            # DeepInversion's augmentations: one random roll and (maybe) one flip of the whole batch
            dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator, device=generator.device).tolist()
            flip = s["flip"] and bool(torch.rand((), generator=generator, device=generator.device) < 0.5)
            x = torch.roll(_quantised(z, mean, std), shifts=(dy, dx), dims=(2, 3))  # (n, C, S, S)
            if flip:
                x = torch.flip(x, dims=(3,))
            logits = teacher(x)  # (n, K)
            loss = s["ce"] * F.cross_entropy(logits, classes)
            loss = loss + s["bn"] * torch.stack(hooks.take("the teacher")).sum()
            if s["tv"]:
                loss = loss + s["tv"] * total_variation(x)
            if s["l2"]:
                loss = loss + s["l2"] * torch.linalg.vector_norm(x)
            if not torch.isfinite(loss):
                raise DfkdError(f"generator {NAME}: the loss became {float(loss)}; lower lr (now {s['lr']}) or bn "
                                f"(now {s['bn']}).")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                z.copy_(torch.maximum(torch.minimum(z, high), low))  # stay within pixels 0..255
        hooks.close()
        images = to_uint8(z.detach(), spec)  # (n, C, S, S) uint8
    finally:
        hooks.close()
        for p, flag in frozen:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
    targets = F.one_hot(classes.cpu(), K).float()  # (n, K): what the images were optimised towards
    return images.cpu(), targets  # (n, C, S, S) uint8, (n, K) float32
