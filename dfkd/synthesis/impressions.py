"""Data Impressions (ZSKD: Nayak et al., "Zero-Shot Knowledge Distillation in Deep Networks",
ICML 2019; code vcl-iisc/ZSKD): images optimised so that the teacher's softmax at temperature
T matches a soft target sampled from a Dirichlet around the class's similarity to the others.

1. Class similarity: the final layer's weight rows w_k (one per class), each scaled to unit
   length; C = W W^T (cosine similarity of the classes' weight vectors, C[k, k] = 1).
2. Target of an image made for class c with scale beta: y ~ Dir(beta * s_c + EPS), where s_c
   is row c of C min-max normalised to [0, 1] (class c itself gets 1, the least similar 0).
   Half of each class's images in a batch (its 1st, 3rd, ... row) use beta = betas[0] (1.0),
   half betas[1] (0.1): a small beta makes sparse, peaked targets, beta = 1 spread ones.
   ZSKD's released code normalises the matrix, stores it as C and C / 10, then min-max
   normalises each row again before sampling, which undoes the / 10: every impression there is
   drawn at beta = 1. We implement the paper's intent (the scale multiplies the normalised
   row), so beta = 0.1 really is sparser.
3. `aim: top` (the default) conditions the draw on class c being the target's largest entry
   (rejection sampling; a row still not aimed after MAX_TRIES draws has its largest entry
   swapped with entry c). Without it (`aim: none`, ZSKD's plain draw) the teacher's label
   of an impression equals the class it was made for in about half of them on dfkd's FMNIST
   teacher: a fill that needs class c must aim at c.
4. Each image starts from uniform noise in [0, 1]; Adam (lr) minimises the cross-entropy
   between the target and softmax(teacher(x) / T) for `iterations` steps; after each step x is
   clamped to [0, 1] (ZSKD instead min-max rescales the whole batch each step, which couples
   the images of a batch). The stored image is x rounded to uint8.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from dfkd.errors import DfkdError
from dfkd.synthesis.base import SynthesisSpec, quantize, teacher_logits

if TYPE_CHECKING:
    import torch

EPS = 1e-4  # added to every concentration (as ZSKD's code): a Dirichlet needs alpha > 0
MAX_TRIES = 64  # rejection draws per row for `aim: top`

PROPERTIES = {
    "iterations": {
        "type": "integer", "minimum": 1, "maximum": 100_000, "default": 100,
        "description": "Adam steps per batch of impressions (ZSKD: 1,500 at lr 0.001; 100 is where the FMNIST "
                       "teacher's KL-to-target curve flattens at lr 0.05: benchmarks/README.md).",
    },
    "lr": {
        "type": "number", "exclusiveMinimum": 0, "maximum": 10, "default": 0.05,
        "description": "Adam learning rate on the [0, 1] pixels.",
    },
    "temperature": {
        "type": "number", "exclusiveMinimum": 0, "default": 20,
        "description": "Softmax temperature T at which the teacher's output must match the target (ZSKD: 20).",
    },
    "betas": {
        "type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1, "maxItems": 8,
        "default": [1.0, 0.1],
        "description": "Dirichlet concentration scales, used in turn over each class's images (ZSKD: 1.0 and 0.1, half each).",
    },
    "aim": {
        "enum": ["top", "none"], "default": "top",
        "description": "top: the target's largest entry is the class the image is made for; none: ZSKD's plain draw.",
    },
}


def final_layer_weight(teacher: "torch.nn.Module", num_classes: int) -> "torch.Tensor":
    """The (K, D) weight of the teacher's last linear layer: its `head`, else its last Linear of K outputs."""
    from torch import nn

    head = getattr(teacher, "head", None)
    if isinstance(head, nn.Linear) and head.out_features == num_classes:
        return head.weight.detach().float().cpu()
    linear = [m for m in teacher.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not linear:
        raise DfkdError(
            f"impressions need the teacher's final-layer weights, but it has no linear layer with {num_classes} "
            "outputs; use a teacher whose last layer is linear (every dfkd architecture is)."
        )
    return linear[-1].weight.detach().float().cpu()


def class_similarity(weight: "torch.Tensor") -> np.ndarray:
    """C[i, j]: cosine similarity of classes i and j's final-layer weight rows, float64 (K, K)."""
    w = weight.double().numpy()  # (K, D)
    w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    return w @ w.T


def concentrations(similarity: np.ndarray, beta: float) -> np.ndarray:
    """(K, K): row c is beta * (row c of C min-max normalised to [0, 1]) + EPS."""
    low, high = similarity.min(1, keepdims=True), similarity.max(1, keepdims=True)
    rows = (similarity - low) / np.maximum(high - low, 1e-12)
    return beta * rows + EPS


def sample_targets(classes: np.ndarray, similarity: np.ndarray, betas, aim: str, rng: np.random.Generator) -> np.ndarray:
    """float32 (n, K) Dirichlet targets, row i for class classes[i] at scale betas[r % len(betas)],
    r the number of earlier rows of the same class (the betas take turns within each class)."""
    k = similarity.shape[0]
    alphas = [concentrations(similarity, float(beta)) for beta in betas]
    out = np.empty((len(classes), k), np.float64)
    seen = np.zeros(k, np.int64)
    for i, c in enumerate(classes):
        alpha = alphas[seen[c] % len(alphas)][c]
        seen[c] += 1
        for _ in range(MAX_TRIES if aim == "top" else 1):
            y = rng.dirichlet(alpha)
            if aim != "top" or y.argmax() == c:
                break
        if not np.isfinite(y).all() or y.sum() <= 0:  # every gamma draw underflowed: all mass on c
            y = np.eye(k)[c]
        if aim == "top" and y.argmax() != c:
            top = y.argmax()
            y[top], y[c] = y[c], y[top]
        out[i] = y
    return out.astype(np.float32)


def synthesize_batch(teacher: "torch.nn.Module", classes: "torch.Tensor", spec: SynthesisSpec, settings: Mapping,
                     generator: "torch.Generator", device: "torch.device"):
    """Data Impressions for `classes` (int64 [n]): (images uint8 [n, C, S, S], soft targets float32 [n, K])."""
    import torch
    from torch.nn import functional as F

    n = len(classes)
    similarity = class_similarity(final_layer_weight(teacher, spec.num_classes))
    # numpy's Dirichlet, seeded from this batch's torch generator (torch's own takes no generator)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    targets = sample_targets(classes.cpu().numpy(), similarity, settings["betas"], settings["aim"], rng)  # (n, K)
    x = torch.rand((n, spec.channels, spec.image_size, spec.image_size), generator=generator).to(device)
    x.requires_grad_(True)
    target = torch.from_numpy(targets).to(device)
    optimizer = torch.optim.Adam([x], lr=settings["lr"])
    temperature = float(settings["temperature"])
    for _ in range(settings["iterations"]):
        log_p = F.log_softmax(teacher_logits(teacher, x, spec) / temperature, dim=1)  # (n, K)
        loss = -(target * log_p).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return quantize(x).cpu(), torch.from_numpy(targets)
