"""A transfer set's scores: data-free ones from the teacher's outputs on the set, and distances to
the training data.

Data-free scores (`data_free_scores`) read only the teacher's outputs on the set itself, never
the training data: `effective_classes`, `fill`, `mean_confidence`, `mean_margin` (labels only),
`soft_effective_classes` (logits), `within_class_spread` and `feature_spread` (features).
Distances (`training_distances`) compare the set's features with the training set's: Hausdorff,
average and partial Hausdorff, Fréchet, coverage. `DIRECTIONS` says which way each is expected
to go with student accuracy (+1: higher is better); `dfkd.analysis.rank` uses it for the verdict.

Exactness: every score is a closed form evaluated in float64. Nearest-neighbour distances are
exact (`dfkd.stages.neighbours`, run to the end for every row; each distance measured directly
in float64); the k-th neighbour radii of coverage are exact too. The Fréchet distance uses a
numerical matrix square root; its relative residual is reported beside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dfkd.errors import DfkdError
from dfkd.stages.neighbours import kth_neighbour_distances, nearest_distances

COVERAGE_K = 5  # Naeem et al. (2020) use k = 5
DIRECTIONS = {
    "effective_classes": +1,
    "fill": +1,
    "mean_confidence": +1,
    "mean_margin": +1,
    "soft_effective_classes": +1,
    "within_class_spread": +1,
    "feature_spread": +1,
    "hausdorff": -1,
    "average_hausdorff": -1,
    "partial_hausdorff": -1,
    "frechet": -1,
    "coverage": +1,
}
DATA_FREE = ("effective_classes", "fill", "mean_confidence", "mean_margin",
             "soft_effective_classes", "within_class_spread", "feature_spread")
PARTIAL_QUANTILE = 0.95  # partial Hausdorff: the 95th-percentile nearest-neighbour distance
U64 = 2.0**-53


@dataclass
class SetView:
    """The teacher's outputs on the rows of one transfer set (or one whole source)."""

    label: np.ndarray  # (N,) int64 teacher class
    confidence: np.ndarray  # (N,) max softmax
    margin: np.ndarray  # (N,) top-1 minus top-2 probability
    logits: np.ndarray | None = None  # (N, K)
    features: np.ndarray | None = None  # (N, D)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())



def effective_classes(label: np.ndarray, num_classes: int) -> float:
    """exp(H(p)), p the histogram of the teacher's labels: K for uniform labels, 1 for one class.

    The perplexity of the class histogram (Hill's diversity number of order 1; Hill 1973,
    "Diversity and evenness", Ecology 54). Why it might predict accuracy: the student learns
    each class boundary only from images the teacher puts near it; a set that the teacher
    sees as a few classes (the study's Tables 6-8) leaves the others untaught.
    """
    p = np.bincount(label, minlength=num_classes) / len(label)
    return math.exp(_entropy(p))



def fill(label: np.ndarray, num_classes: int, per_class: int) -> float:
    """sum_c min(n_c, cap) / (K cap): the share of Algorithm 1's class targets the set fills.

    Why: the study's balancing (Nayak et al. 2021, Algorithm 1) assumes that a set whose
    classes reach the cap distils better; fill is 1 exactly when every class does.
    """
    counts = np.bincount(label, minlength=num_classes)
    return float(np.minimum(counts, per_class).sum() / (num_classes * per_class))



def mean_confidence(confidence: np.ndarray) -> float:
    """Mean max-softmax. Images the teacher recognises confidently tend to be in-distribution
    (Hendrycks & Gimpel 2017, "A Baseline for Detecting Misclassified and Out-of-Distribution
    Examples in Neural Networks", ICLR): a proxy for nearness to the training data."""
    return float(np.mean(confidence, dtype=np.float64))



def mean_margin(margin: np.ndarray) -> float:
    """Mean top-1 minus top-2 probability. The margin separates in- from out-of-distribution
    inputs better than confidence alone in some settings (Liang et al. 2018, ODIN, ICLR, use
    the softmax gap; Scheffer et al. 2001 use it as the informativeness of a sample). Why:
    like confidence, a proxy for in-distribution images; a small margin means the images
    lie on class boundaries, where soft labels carry the most dark knowledge, so its sign is
    the question this score tests."""
    return float(np.mean(margin, dtype=np.float64))



def soft_effective_classes(logits: np.ndarray) -> float:
    """exp(H(mean_i softmax(logits_i))): the effective number of classes of the teacher's
    mean soft prediction (its class prior over the set).

    DAFL (Chen et al. 2019, "Data-Free Learning of Student Networks", ICCV) maximises this
    entropy of the batch-mean softmax (its information-entropy loss) so that generated
    images cover the classes evenly; DeepInversion (Yin et al. 2020) and ZSKD (Nayak et al.
    2019) likewise seek class-balanced soft targets. Unlike `effective_classes` it also
    counts the probability mass a set puts on classes it never wins.
    """
    from dfkd.stages.labels import softmax

    prior = np.zeros(logits.shape[1])
    for start in range(0, len(logits), 1 << 16):
        prior += softmax(logits[start : start + (1 << 16)]).sum(axis=0)
    return math.exp(_entropy(prior / len(logits)))



def _rms_spread(x: np.ndarray) -> float:
    """sqrt(mean squared distance to the centroid) = sqrt(trace of the covariance), float64."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.sum(x.var(axis=0))))



def within_class_spread(features: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    """Mean over the classes with >= 2 rows of the RMS distance of a class's features to its
    centroid (sqrt of the trace of its covariance, population form). NaN if no class has 2.

    Intra-class diversity is what contrastive model inversion (Fang et al. 2021, "Contrastive
    Model Inversion for Data-Free Knowledge Distillation", IJCAI) adds to DeepInversion: a
    class shown through near-duplicates teaches the student one point of its region. Why it
    might predict accuracy: a larger spread covers more of each class's region.
    """
    spreads = [_rms_spread(features[label == c]) for c in range(num_classes) if np.count_nonzero(label == c) >= 2]
    return float(np.mean(spreads)) if spreads else float("nan")



def feature_spread(features: np.ndarray) -> float:
    """RMS pairwise feature distance over distinct pairs, exactly, in O(N D):
    mean_{i != j} ||f_i - f_j||^2 = 2 N / (N - 1) * trace(Cov) (population covariance).

    Feature-space diversity of the whole set, as in Naeem et al. (2020)'s diversity and the
    "mode collapse" checks of generative models. NaN for a single row.
    """
    n = len(features)
    if n < 2:
        return float("nan")
    return float(np.sqrt(2.0 * n / (n - 1)) * _rms_spread(features))



def data_free_scores(view: SetView, num_classes: int, per_class: int) -> dict[str, float]:
    """Every data-free score the view allows (feature and logit scores need a features file)."""
    if per_class < 1:
        raise DfkdError(f"per_class must be >= 1 to measure fill, got {per_class}.")
    scores = {
        "effective_classes": effective_classes(view.label, num_classes),
        "fill": fill(view.label, num_classes, per_class),
        "mean_confidence": mean_confidence(view.confidence),
        "mean_margin": mean_margin(view.margin),
    }
    if view.logits is not None:
        scores["soft_effective_classes"] = soft_effective_classes(view.logits)
    if view.features is not None:
        scores["within_class_spread"] = within_class_spread(view.features, view.label, num_classes)
        scores["feature_spread"] = feature_spread(view.features)
    return scores



def partial(d: np.ndarray, q: float) -> float:
    """The ceil(q N)-th smallest value of d (an order statistic, no interpolation)."""
    rank = max(1, math.ceil(q * len(d)))
    return float(np.partition(d, rank - 1)[rank - 1])



def frechet(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Squared Fréchet distance between Gaussian fits of two feature sets, as in FID (Heusel
    et al. 2017): ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), float64, sample
    covariances (N - 1).

    Method: scipy.linalg.sqrtm (Schur), imaginary parts dropped. Returns (value, relative
    residual ||M^2 - S_a S_b||_F / ||S_a S_b||_F of the computed root M), the error measure.
    """
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise DfkdError(f"the Fréchet distance needs >= 2 rows per set, got {len(a)} and {len(b)}.")
    mu = a.mean(axis=0) - b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    product = cov_a @ cov_b
    root = linalg.sqrtm(product)
    if not np.isfinite(root).all():  # singular product: FID's fix, a small ridge on both
        ridge = 1e-6 * np.eye(len(cov_a))
        product = (cov_a + ridge) @ (cov_b + ridge)
        root = linalg.sqrtm(product)
    root = np.real(root)
    scale = np.linalg.norm(product)
    residual = float(np.linalg.norm(root @ root - product) / scale) if scale > 0 else 0.0
    value = float(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))
    return max(value, 0.0), residual



def training_distances(
    transfer: np.ndarray, train: np.ndarray, *, k: int = COVERAGE_K, q: float = PARTIAL_QUANTILE, device: str = "cpu",
    radius: np.ndarray | None = None,
) -> tuple[dict[str, float], dict]:
    """Distances between a transfer set's features (A) and the training set's (B).

    Returns (distances, details). Distances: `hausdorff` (max of the directed maxima),
    `average_hausdorff` ((mean_a d(a, B) + mean_b d(b, A)) / 2; Aydin et al. 2021),
    `partial_hausdorff` (max of the two directed q-quantiles; Huttenlocher et al. 1993, the
    K-th ranked distance), `frechet` (squared, as FID), `coverage` (Naeem et al. 2020: the
    share of training points b whose ball of radius = distance to b's k-th nearest other
    training point holds a transfer point, strictly: d(b, A) < r_k(b)). `radius`: those radii,
    when already computed (`coverage_radii_file`: once per target, not once per set).
    """
    if transfer.shape[1] != train.shape[1]:
        raise DfkdError(
            f"transfer-set features are {transfer.shape[1]}-dimensional but the training features are "
            f"{train.shape[1]}-dimensional; all features must come from the same teacher."
        )
    ab = nearest_distances(transfer, train, device=device)  # (N_a,) each transfer row to train
    ba = nearest_distances(train, transfer, device=device)  # (N_b,) each training row to the set
    if radius is None:
        radius = kth_neighbour_distances(train, k, device=device)  # (N_b,)
    elif radius.shape != (len(train),):
        raise DfkdError(f"{len(radius)} coverage radii for {len(train)} training rows; re-run coverage_radii.")
    value, residual = frechet(transfer, train)
    distances = {
        "hausdorff": float(max(ab.max(), ba.max())),
        "average_hausdorff": float((ab.mean() + ba.mean()) / 2),
        "partial_hausdorff": max(partial(ab, q), partial(ba, q)),
        "frechet": value,
        "coverage": float(np.mean(ba < radius)),
    }
    details = {
        "directed_ab": float(ab.max()), "directed_ba": float(ba.max()),
        "mean_ab": float(ab.mean()), "mean_ba": float(ba.mean()),
        "partial_ab": partial(ab, q), "partial_ba": partial(ba, q), "partial_quantile": q,
        "coverage_k": k, "frechet_sqrtm_residual": residual,
        "n_train": int(len(train)), "dim": int(train.shape[1]),
    }
    return distances, details
