"""Quality of a transfer set: data-free scores, and distances to the training data.

Inputs: the teacher's outputs on the set's rows: `labels/{source}.parquet` (`index`, `label`,
`confidence`, `margin`), optionally `features/{source}.h5` (`features` [N, D], `logits`
[N, K]) and a manifest `transfer/{set}.parquet` (`source`, `index`, ...) naming the rows;
optionally the training set's `features/train.h5`. Outputs: `quality/{set}.json`
(`quality_files`) and the candidate ranking of `dfkd score` (`score_files`).

Data-free scores (`data_free_scores`) read only the teacher's outputs on the set itself,
never the training data: `effective_classes`, `fill`, `mean_confidence`, `mean_margin`
(labels only), `soft_effective_classes` (logits), `within_class_spread` and
`feature_spread` (features). Distances (`training_distances`) compare the set's features
with the training set's: Hausdorff, average and partial Hausdorff, Fréchet, coverage.
`DIRECTIONS` says which way each is expected to go with student accuracy (+1: higher is
better); `dfkd.analysis.rank` uses it for the verdict.

Exactness: every score is a closed form evaluated in float64. Nearest-neighbour distances
are exact (hausdorff's blocked search, run to the end for every row; each distance measured
directly in float64); the k-th neighbour radii of coverage are exact too (float64 blocked
products, candidates re-measured directly and certified by a rounding-error bound, rows
that fail the bound measured in full). The Fréchet distance uses a numerical matrix square
root; its relative residual is reported beside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from dfkd.io.artifacts import h5_dataset, open_h5, read_h5_array, read_parquet, write_json
from dfkd.device import pick_device
from dfkd.errors import DfkdError
from dfkd.io.provenance import make_provenance
from dfkd.stages.neighbours import kth_neighbour_distances, nearest_distances
from dfkd.io.rows import gather_manifest

LABEL_COLUMNS = ("index", "label", "confidence", "margin")
PARTIAL_QUANTILE = 0.95  # partial Hausdorff: the 95th-percentile nearest-neighbour distance
COVERAGE_K = 5  # Naeem et al. (2020) use k = 5
U64 = 2.0**-53

# Expected sign of the rank correlation with student accuracy (+1: higher is better).
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


# ---------------------------------------------------------------------------- the set's rows
@dataclass
class SetView:
    """The teacher's outputs on the rows of one transfer set (or one whole source)."""

    label: np.ndarray  # (N,) int64 teacher class
    confidence: np.ndarray  # (N,) max softmax
    margin: np.ndarray  # (N,) top-1 minus top-2 probability
    logits: np.ndarray | None = None  # (N, K)
    features: np.ndarray | None = None  # (N, D)


def read_labels(path: Path, num_classes: int) -> pd.DataFrame:
    """A labels parquet, checked: not empty, classes within 0..K-1, finite confidences."""
    frame = read_parquet(path, required_columns=LABEL_COLUMNS)
    if frame.empty:
        raise DfkdError(f"{path} holds no rows; a source without images cannot be scored. Re-run `dfkd label`.")
    label = frame["label"].to_numpy()
    if not np.issubdtype(label.dtype, np.integer):
        raise DfkdError(f"{path}: column 'label' has dtype {label.dtype}; expected integers. Re-run `dfkd label`.")
    bad = label[(label < 0) | (label >= num_classes)]
    if len(bad):
        raise DfkdError(
            f"{path} holds class {int(bad[0])} ({len(bad)} rows out of range) but --num-classes is {num_classes}; "
            "pass the teacher's class count, or labels made by this target's teacher."
        )
    if not frame["index"].is_unique:
        raise DfkdError(f"{path} lists a row index more than once; re-run `dfkd label`.")
    for column in ("confidence", "margin"):
        if not np.isfinite(frame[column].to_numpy(dtype=np.float64)).all():
            raise DfkdError(f"{path}: column '{column}' holds NaN or infinite values; re-run `dfkd label`.")
    return frame


def _check_features_file(path: Path, labels_path: Path, n_labels: int, num_classes: int) -> None:
    """The features file of a labels file: as many rows, K logits."""
    with open_h5(path) as handle:
        features = h5_dataset(handle, "features", ndim=2, dtypes=("f4", "f8"))
        logits = h5_dataset(handle, "logits", ndim=2, dtypes=("f4", "f8"))
        if features.shape[0] != n_labels or logits.shape[0] != n_labels:
            raise DfkdError(
                f"{path} has {features.shape[0]} rows but its labels file {labels_path} has {n_labels}; "
                "pass the features and labels files of the same sources, in the same order."
            )
        if logits.shape[1] != num_classes:
            raise DfkdError(f"{path}:/logits has {logits.shape[1]} classes but --num-classes is {num_classes}.")


def gather_view(
    manifest: pd.DataFrame,
    labels: Mapping[str, pd.DataFrame],
    features_files: Mapping[str, Path] | None = None,
) -> SetView:
    """The teacher's outputs on a manifest's rows (`source`, `index`), in manifest order.

    `labels` maps each source to its labels frame (rows found by their `index`);
    `features_files` (optional) maps each source to its features file.
    """
    from dfkd.stages.hausdorff import gather_features

    n = len(manifest)
    label, confidence, margin = np.empty(n, np.int64), np.empty(n), np.empty(n)
    logits = None
    sources = manifest["source"].to_numpy()
    index = manifest["index"].to_numpy(dtype=np.int64)
    for name in dict.fromkeys(sources.tolist()):
        if name not in labels:
            raise DfkdError(f"no labels file given for source '{name}' of the manifest (given: {sorted(labels)}).")
        rows = np.flatnonzero(sources == name)
        frame = labels[name]
        where = pd.Index(frame["index"].to_numpy()).get_indexer(index[rows])
        if (where < 0).any():
            raise DfkdError(
                f"the manifest asks for row {int(index[rows][where < 0][0])} of source '{name}', which its labels "
                "file lacks; the manifest and the labels do not match. Re-run the stale rule."
            )
        label[rows] = frame["label"].to_numpy()[where]
        confidence[rows] = frame["confidence"].to_numpy(dtype=np.float64)[where]
        margin[rows] = frame["margin"].to_numpy(dtype=np.float64)[where]
    if features_files is not None:
        logits = gather_manifest(manifest, features_files, "logits", ndim=2).astype(np.float64)  # (M, K)
    features = gather_features(manifest, features_files) if features_files is not None else None
    return SetView(label, confidence, margin, logits, features)


# ---------------------------------------------------------------------------- data-free scores
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


# ---------------------------------------------------------------------------- distances
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


# ---------------------------------------------------------------------------- coverage radii, once per target
def coverage_radii_file(train_features: Path, out: Path, k: int = COVERAGE_K, device: str = "auto") -> np.ndarray:
    """Write `radii` (N_train,) float64, each training row's distance to its k-th nearest other
    training row (`kth_neighbour_distances`), to the HDF5 file `out`; return them.

    Coverage needs them for every transfer set but they depend on the training features
    alone: one job per target computes them (an O(N^2 D) search) instead of one per set.
    """
    from dfkd.io.artifacts import write_h5
    train = read_h5_array(train_features, "features", ndim=2)  # (N_train, D)
    radii = kth_neighbour_distances(train, k, device=str(pick_device(device)))
    write_h5(out, {"radii": radii}, make_provenance("coverage_radii", {"coverage_k": k},
                                                    inputs={"train_features": Path(train_features)}),
             attrs={"coverage_k": k})
    return radii


def read_coverage_radii(path: Path, train_features: Path, k: int) -> np.ndarray:
    """The radii of `coverage_radii_file`, refused unless made with this k from these very features."""
    from dfkd.io.artifacts import read_h5_provenance
    from dfkd.io.provenance import file_sha256

    radii = read_h5_array(path, "radii", ndim=1, dtypes=("f8",))
    provenance = read_h5_provenance(path) or {}
    made_from = provenance.get("inputs", {}).get("train_features", {}).get("sha256")
    made_with = provenance.get("config", {}).get("coverage_k")
    if made_with != k:
        raise DfkdError(f"{path} holds radii for k={made_with}; coverage needs k={k}. Re-run coverage_radii.")
    if made_from != file_sha256(train_features):
        raise DfkdError(f"{path} was computed from other training features than {train_features}; "
                        "re-run coverage_radii.")
    return radii


# ---------------------------------------------------------------------------- files
def _named(files) -> dict[str, Path]:
    """Files by source name: a mapping as given, or a list named by file stem."""
    from dfkd.io.artifacts import files_by_source

    if isinstance(files, Mapping):
        return {str(name): Path(path) for name, path in files.items()}
    return files_by_source(files)


def _present_directions(*parts: Mapping[str, float]) -> dict[str, int]:
    return {name: DIRECTIONS[name] for part in parts for name in part if name in DIRECTIONS}


def quality_of_set(
    manifest: Path,
    labels_files,
    features_files,
    num_classes: int,
    per_class: int,
    train_features: Path | None = None,
    train_radii: Path | None = None,
    device: str = "auto",
) -> dict:
    """The quality payload of one transfer set (`quality/{set}.json` without provenance).

    `labels_files` / `features_files`: lists of `labels/{source}.parquet` /
    `features/{source}.h5` (file stem = source) or mappings source -> path; they must cover
    the manifest's sources. With `train_features`, the distances to the training set too;
    `train_radii` (`coverage_radii_file` of those features) saves recomputing coverage's radii.
    """
    manifest_path = Path(manifest)
    frame = read_parquet(manifest_path, required_columns=["source", "index", "label"])
    if frame.empty:
        raise DfkdError(f"{manifest_path} holds no rows; an empty transfer set cannot be scored.")
    labels = {name: read_labels(path, num_classes) for name, path in _named(labels_files).items()}
    features = _named(features_files) if features_files is not None else None
    view = gather_view(frame, labels, features)
    scores = data_free_scores(view, num_classes, per_class)
    payload = {
        # transfer/{set}/seed{k}.parquet (dfkd.io.layout), or a flat {set}.parquet given by hand
        "set": manifest_path.parent.name if manifest_path.stem.startswith("seed") else manifest_path.stem.split(".")[0],
        "n": int(len(frame)),
        "num_classes": int(num_classes),
        "per_class": int(per_class),
        "sources": list(dict.fromkeys(frame["source"].astype(str).tolist())),
        "class_counts": np.bincount(view.label, minlength=num_classes).tolist(),
        "scores": scores,
    }
    if train_features is not None:
        if view.features is None:
            raise DfkdError("distances to the training set need the set's features files; pass --features.")
        train = read_h5_array(train_features, "features", ndim=2)  # (N_train, D)
        radius = None if train_radii is None else read_coverage_radii(train_radii, train_features, COVERAGE_K)
        payload["distances"], payload["distance_details"] = training_distances(
            view.features, train, device=str(pick_device(device)), radius=radius
        )
    payload["directions"] = _present_directions(scores, payload.get("distances", {}))
    return payload


def quality_files(
    manifest: Path,
    labels_files,
    features_files,
    num_classes: int,
    per_class: int,
    out: Path,
    train_features: Path | None = None,
    train_radii: Path | None = None,
    device: str = "auto",
) -> dict:
    """`quality_of_set`, written to `out` (JSON with provenance); returns the payload."""
    if train_radii is not None and train_features is None:
        raise DfkdError("--train-radii needs --train-features (the radii are those features' own).")
    payload = quality_of_set(manifest, labels_files, features_files, num_classes, per_class, train_features,
                             train_radii, device)
    inputs = {"manifest": Path(manifest)}
    inputs.update({f"labels/{name}": path for name, path in _named(labels_files).items()})
    if features_files is not None:
        inputs.update({f"features/{name}": path for name, path in _named(features_files).items()})
    if train_features is not None:
        inputs["train_features"] = Path(train_features)
    if train_radii is not None:
        inputs["train_radii"] = Path(train_radii)
    config = {"num_classes": num_classes, "per_class": per_class, "coverage_k": COVERAGE_K,
              "partial_quantile": PARTIAL_QUANTILE}
    write_json(out, payload, make_provenance("quality", config, inputs=inputs))
    return payload


# ---------------------------------------------------------------------------- dfkd score
def _ranking(candidates: list[dict]) -> dict[str, list[str]]:
    """Per score, the candidates' names best first (by DIRECTIONS); NaN last."""
    ranking = {}
    for score in dict.fromkeys(name for c in candidates for name in c["scores"]):
        have = [c for c in candidates if score in c["scores"]]
        key = [DIRECTIONS[score] * c["scores"][score] for c in have]
        order = sorted(range(len(have)), key=lambda i: (math.isnan(key[i]), -key[i] if not math.isnan(key[i]) else 0))
        ranking[score] = [have[i]["name"] for i in order]
    return ranking


def _collapse(what: str, view: SetView, scores: Mapping[str, float], num_classes: int) -> str | None:
    """`dfkd.stages.collapse`'s one line when the teacher puts most of these rows in one class, else None."""
    from dfkd.stages.collapse import collapse_line

    return collapse_line(what, np.bincount(view.label, minlength=num_classes), scores.get("soft_effective_classes"))


def score_sources(
    labels_files: Sequence[Path],
    num_classes: int,
    features_files: Sequence[Path] | None = None,
    per_class: int | None = None,
    *,
    seed: int = 0,
    rank_by: str = "fill",
) -> dict:
    """Scores of each source alone and of the balanced mix Algorithm 1 assembles from them
    in order (`dfkd.stages.balance.assemble`, in memory), ranked best first by `rank_by`.

    `features_files[i]` belongs to `labels_files[i]`. `per_class` defaults to the first
    source's rows // K (assemble's default); the mix takes at most `per_class` per class.
    """
    from dfkd.stages.balance import assemble

    labels_paths = [Path(p) for p in labels_files]
    named = _named(labels_paths)
    labels = {name: read_labels(path, num_classes) for name, path in named.items()}
    features = None
    if features_files is not None:
        if len(features_files) != len(labels_paths):
            raise DfkdError(
                f"got {len(features_files)} features files for {len(labels_paths)} labels files "
                f"({[str(p) for p in features_files]}); pass one features file per labels file, in the same order."
            )
        features = dict(zip(named, map(Path, features_files)))
        for name, path in features.items():
            _check_features_file(path, named[name], len(labels[name]), num_classes)
    first = next(iter(labels))
    cap = len(labels[first]) // num_classes if per_class is None else per_class
    if cap < 1:
        raise DfkdError(
            f"{named[first]} has {len(labels[first])} rows, fewer than --num-classes={num_classes}; pass --per-class."
        )
    if rank_by not in DATA_FREE:
        raise DfkdError(f"--rank-by must be one of {list(DATA_FREE)}, got '{rank_by}'.")

    candidates = []
    for name, frame in labels.items():
        rows = pd.DataFrame({"source": name, "index": frame["index"].to_numpy()})
        view = gather_view(rows, {name: frame}, None if features is None else {name: features[name]})
        candidates.append({"name": name, "kind": "source", "sources": [name], "n": int(len(rows)),
                           "scores": data_free_scores(view, num_classes, cap)})
        candidates[-1]["collapse"] = _collapse(f"source `{name}`", view, candidates[-1]["scores"], num_classes)
    mix, counts = assemble(list(labels.items()), num_classes, balanced=True, per_class=cap,
                           total=cap * num_classes, seed=seed)
    if not mix.empty:
        view = gather_view(mix, labels, features)
        candidates.append({"name": "mix:" + "+".join(labels), "kind": "mix", "sources": list(labels),
                           "n": int(len(mix)), "short_classes": int(counts["short"].sum()),
                           "scores": data_free_scores(view, num_classes, cap)})
        candidates[-1]["collapse"] = _collapse(f"their balanced mix `{candidates[-1]['name']}`", view,
                                               candidates[-1]["scores"], num_classes)
    ranking = _ranking(candidates)
    if rank_by not in ranking:
        raise DfkdError(f"--rank-by {rank_by} needs the features files; pass --features.")
    by_name = {c["name"]: c for c in candidates}
    return {
        "num_classes": int(num_classes),
        "per_class": int(cap),
        "seed": int(seed),
        "rank_by": rank_by,
        "candidates": [by_name[name] for name in ranking[rank_by]],
        "ranking": ranking,
        "directions": _present_directions(*(c["scores"] for c in candidates)),
    }


def score_files(
    labels_files: Sequence[Path],
    num_classes: int,
    out: Path,
    features_files: Sequence[Path] | None = None,
    per_class: int | None = None,
    *,
    seed: int = 0,
    rank_by: str = "fill",
) -> dict:
    """`score_sources`, written to `out` (JSON with provenance); returns the payload."""
    payload = score_sources(labels_files, num_classes, features_files, per_class, seed=seed, rank_by=rank_by)
    inputs = {f"labels/{Path(p).stem}": Path(p) for p in labels_files}
    inputs.update({f"features/{Path(p).stem}": Path(p) for p in features_files or []})
    config = {"num_classes": num_classes, "per_class": payload["per_class"], "rank_by": rank_by}
    write_json(out, payload, make_provenance("score", config, inputs=inputs, seed=seed))
    return payload


def format_scores(payload: Mapping) -> str:
    """A plain-text table of `score_sources`'s candidates, best first, then one line per collapsed
    candidate (`dfkd.stages.collapse`)."""
    names = list(payload["ranking"])
    header = ["candidate", "n"] + names
    rows = [[c["name"], str(c["n"])] + [f"{c['scores'][s]:.4g}" if s in c["scores"] else "-" for s in names]
            for c in payload["candidates"]]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lower = [s for s in names if payload["directions"][s] < 0]
    note = f"; lower is better: {', '.join(lower)}" if lower else "; higher is better for every score"
    collapses = [c["collapse"] for c in payload["candidates"] if c.get("collapse")]
    return "\n".join(lines + [f"ranked by {payload['rank_by']}, per_class={payload['per_class']}{note}", *collapses])
