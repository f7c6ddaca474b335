"""Offline capability estimates â[q, k] ≈ P(model k solves query q), from training data only.

These feed the Soft Anchor, fill in rewards of missing outcomes, and (with the residual
policy) are part of every routing decision, so they exist for new queries too.

* :class:`KnnCapability` — mean score of model k over q's nearest training queries
  (cosine), with a Beta prior (``prior_strength`` pseudo-observations) towards k's
  accuracy on q's k-means cluster, itself smoothed towards k's global accuracy.
* :class:`MlpCapability` — one MLP with a sigmoid output per model, masked binary
  cross-entropy on observed outcomes.

``fit`` returns *out-of-fold* estimates for the training rows (leave-one-out for kNN,
K-fold cross-fitting for the MLP): a training query's estimate never sees its own
outcome, exactly as at routing time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from entrorouter.numeric import gelu, sigmoid

if TYPE_CHECKING:
    from torch import nn


@dataclass
class FoldPlan:
    """Cross-fitting folds shared by several fits on subsets of one table.

    ``labels`` are the table-wide fold labels of the rows being fitted (a subset keeps its
    rows' labels), so every fit cross-fits along the same folds. A success net trained on
    "every row except folds E" is then the same net whichever fit asks for it: ``nets``
    memoises it by E (with the estimator's settings and the net's seed), so the K + 1 fits
    of a cross-fitted calibration train 1 + K + K(K−1)/2 nets per estimator instead of
    (K + 1)², routers of one benchmark run that train the same net share it, and no net
    ever sees an excluded fold's outcome.
    """

    labels: np.ndarray
    n_folds: int
    nets: dict[tuple[Any, ...], nn.Module] = field(default_factory=dict)  # torch modules (training)

    def subset(self, rows: np.ndarray) -> FoldPlan:
        return FoldPlan(self.labels[rows], self.n_folds, self.nets)

    @property
    def excluded(self) -> frozenset[int]:
        """Folds with no row here: no net of this fit may learn from them."""
        return frozenset(range(self.n_folds)) - {int(f) for f in np.unique(self.labels)}


class CapabilityEstimator(ABC):
    name: str

    @abstractmethod
    def fit(self, features: np.ndarray, scores: np.ndarray, plan: FoldPlan | None = None) -> np.ndarray:
        """Learn from (n, d) features and (n, K) scores (NaN = missing); return out-of-fold (n, K).

        ``plan``: the folds to cross-fit along (and nets to reuse); None: the estimator's own.
        """

    @abstractmethod
    def predict(self, features: np.ndarray) -> np.ndarray:
        """(m, K) estimates for new queries."""

    @abstractmethod
    def tensors(self) -> dict[str, np.ndarray]:
        """Arrays needed by :meth:`predict`, for the router's safetensors file."""

    @abstractmethod
    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None: ...


# --------------------------------------------------------------------- kNN
def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so dot products are cosine similarities."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans(x: np.ndarray, n_clusters: int, seed: int, iterations: int = 25) -> np.ndarray:
    """Spherical k-means (unit-length rows, cosine assignment), k-means++ seeding."""
    rng = np.random.default_rng(seed)
    n_clusters = min(n_clusters, len(x))
    centroids = [x[rng.integers(len(x))]]
    dist = np.full(len(x), np.inf)
    for _ in range(1, n_clusters):
        dist = np.minimum(dist, ((x - centroids[-1]) ** 2).sum(axis=1))
        total = dist.sum()
        probs = dist / total if total > 0 else np.full(len(x), 1.0 / len(x))
        centroids.append(x[rng.choice(len(x), p=probs)])
    c = np.stack(centroids)
    for _ in range(iterations):
        assign = (x @ c.T).argmax(axis=1)
        for j in range(len(c)):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(axis=0)
        c = normalise(c)
    return c


@dataclass(frozen=True)
class NeighbourGroups:
    """The kNN's training rows, those with identical embeddings (copies of one text) merged.

    Copies tie exactly for every query, and which of them the k nearest took depended on how
    their similarities rounded, which changes with the batch size and BLAS thread count: a
    query's estimate changed with what it was routed beside. A group has one similarity, and
    one that straddles the k-th place gives its rows' mean outcome to each place it fills:
    the same k neighbours, with nothing left to chance.
    """

    vectors: np.ndarray  # (G, d) one per distinct embedding, in order of first occurrence
    hits: np.ndarray  # (G, K) the group's summed scores (missing outcomes count 0)
    observed: np.ndarray  # (G, K) how many of its rows have an outcome
    size: np.ndarray  # (G,) its rows
    of_row: np.ndarray  # (n,) each training row's group

    @classmethod
    def build(cls, train_x: np.ndarray, filled: np.ndarray, observed: np.ndarray) -> NeighbourGroups:
        rows = np.ascontiguousarray(train_x)
        keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        of_row = rank[inverse.ravel()]
        vectors = rows if len(first) == len(rows) else rows[first[order]]
        hits = np.zeros((len(first), filled.shape[1]), dtype=np.float32)
        counts = np.zeros_like(hits)
        np.add.at(hits, of_row, filled)
        np.add.at(counts, of_row, observed)
        return cls(vectors, hits, counts, np.bincount(of_row, minlength=len(first)).astype(np.float32), of_row)

    def k_nearest(
        self,
        k: int,
        top: np.ndarray,
        sims: np.ndarray,
        *,
        own: np.ndarray | None = None,
        own_hits: np.ndarray | None = None,
        own_observed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Summed outcomes (n, K) and their counts over each query's k nearest rows.

        ``top`` (n, t): groups that hold them, with similarities ``sims``; nearer first, equal
        similarities in group order. ``own`` (n,): each query's group when it is a training
        row, whose own outcomes (``own_hits``, ``own_observed``) leave that group.
        """
        order = np.lexsort((top, -sims), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        hits, observed, size = self.hits[top], self.observed[top], self.size[top]
        if own is not None:
            mine = (top == own[:, None]).astype(np.float32)
            hits = hits - mine[..., None] * own_hits[:, None, :]
            observed = observed - mine[..., None] * own_observed[:, None, :]
            size = size - mine
        before = np.cumsum(size, axis=1) - size
        share = np.clip(k - before, 0.0, size) / np.maximum(size, 1.0)  # of each group's rows
        return np.einsum("nt,ntk->nk", share, hits), np.einsum("nt,ntk->nk", share, observed)


class KnnCapability(CapabilityEstimator):
    name = "knn"

    def __init__(self, k: int = 32, prior_strength: float = 4.0, n_clusters: int = 16, seed: int = 0) -> None:
        self.k, self.prior_strength, self.n_clusters, self.seed = (
            k,
            prior_strength,
            n_clusters,
            seed,
        )
        self.train_x: np.ndarray | None = None
        self.train_scores: np.ndarray | None = None
        self.centroids: np.ndarray | None = None
        self.cluster_sum: np.ndarray | None = None  # (C, K) summed scores
        self.cluster_count: np.ndarray | None = None  # (C, K) observed outcomes
        self.global_sum: np.ndarray | None = None  # (K,)
        self.global_count: np.ndarray | None = None  # (K,)
        self._outcomes: tuple[np.ndarray, np.ndarray] | None = None
        self._groups: NeighbourGroups | None = None

    def fit(self, features: np.ndarray, scores: np.ndarray, plan: FoldPlan | None = None) -> np.ndarray:
        # Leave-one-out needs no folds: each training query's own outcome is removed from
        # its prior and from its neighbour set.
        assign = self._fit_table(features, scores)
        filled, observed = self._neighbour_outcomes()
        prior = self._prior(assign, own_sum=filled, own_count=observed)
        return self._leave_one_out(prior)

    def fit_final(self, features: np.ndarray, scores: np.ndarray) -> KnnCapability:
        """Keep the table and its cluster priors only: what :meth:`predict` needs, without the
        training rows' leave-one-out estimates (a router that only routes new queries)."""
        self._fit_table(features, scores)
        return self

    def _fit_table(self, features: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Store the neighbour table, cluster the queries and sum outcomes per cluster; returns
        each training query's cluster."""
        self.train_x = normalise(features)
        self.train_scores = scores.astype(np.float32)
        self._outcomes = self._groups = None
        filled, observed = self._neighbour_outcomes()
        self.global_sum = filled.sum(0)
        self.global_count = observed.sum(0)
        self.centroids = kmeans(self.train_x, self.n_clusters, self.seed)
        assign = self._assign(self.train_x)
        n_c = len(self.centroids)
        self.cluster_sum = np.zeros((n_c, scores.shape[1]), dtype=np.float32)
        self.cluster_count = np.zeros_like(self.cluster_sum)
        np.add.at(self.cluster_sum, assign, filled)
        np.add.at(self.cluster_count, assign, observed)
        return assign

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Estimates for new queries, in NumPy (:mod:`entrorouter.numeric` says why)."""
        x = normalise(features)
        prior = self._prior(self._assign(x))
        groups = self._neighbour_groups()
        k = min(self.k, len(self.train_x))
        n_top = min(k, len(groups.vectors))
        out = np.empty((len(x), groups.hits.shape[1]), dtype=np.float32)
        for start in range(0, len(x), 1024):
            sims = x[start : start + 1024] @ groups.vectors.T
            top = np.argpartition(-sims, n_top - 1, axis=1)[:, :n_top]  # the most similar, in no order
            hits, observed = groups.k_nearest(k, top, np.take_along_axis(sims, top, axis=1))
            out[start : start + 1024] = self._smoothed(hits, observed, prior[start : start + 1024])
        return out

    def _assign(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.centroids.T).argmax(axis=1)

    def _prior(
        self,
        assign: np.ndarray,
        own_sum: np.ndarray | float = 0.0,
        own_count: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """Cluster accuracy smoothed towards the global accuracy (same pseudo-count),
        both without the query's own outcome (``own_*``) when it is a training query."""
        global_acc = (self.global_sum - own_sum) / np.maximum(self.global_count - own_count, 1.0)
        s = self.cluster_sum[assign] - own_sum
        c = self.cluster_count[assign] - own_count
        return (s + self.prior_strength * global_acc) / (c + self.prior_strength)

    def _neighbour_outcomes(self) -> tuple[np.ndarray, np.ndarray]:
        """(training scores with 0 for missing, observed as 0/1), float32, built once: rebuilding
        them per call was most of a single query's routing time."""
        if self._outcomes is None:
            observed = ~np.isnan(self.train_scores)
            filled = np.where(observed, self.train_scores, 0.0).astype(np.float32)
            self._outcomes = (filled, observed.astype(np.float32))
        return self._outcomes

    def _neighbour_groups(self) -> NeighbourGroups:
        if self._groups is None:
            self._groups = NeighbourGroups.build(self.train_x, *self._neighbour_outcomes())
        return self._groups

    def _leave_one_out(self, prior: np.ndarray) -> np.ndarray:
        """``fit``'s estimates for the training rows, each without its own outcome (its copies
        are other rows, and stay neighbours). In torch: on thousands of rows its top-k was 5x
        faster than NumPy's partition (1024 x 10,000 sims)."""
        import torch

        from entrorouter.training.nets import as_float_tensor

        groups = self._neighbour_groups()
        vectors = as_float_tensor(groups.vectors)
        filled, observed = self._neighbour_outcomes()
        k = min(self.k, len(self.train_x) - 1)
        n_top = min(k, len(groups.vectors))
        out = np.empty((len(self.train_x), filled.shape[1]), dtype=np.float32)
        for start in range(0, len(self.train_x), 1024):
            rows = np.arange(start, min(start + 1024, len(self.train_x)))
            own = groups.of_row[rows]
            sims = as_float_tensor(self.train_x[rows]) @ vectors.T
            alone = groups.size[own] == 1
            sims[torch.from_numpy(np.flatnonzero(alone)), torch.from_numpy(own[alone])] = -torch.inf
            top = sims.topk(n_top, dim=1)
            hits, seen = groups.k_nearest(
                k, top.indices.numpy(), top.values.numpy(), own=own, own_hits=filled[rows], own_observed=observed[rows]
            )
            out[rows] = self._smoothed(hits, seen, prior[rows])
        return out

    def _smoothed(self, hits: np.ndarray, observed: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """The neighbours' mean score with ``prior_strength`` pseudo-observations of ``prior``;
        ``hits``/``observed``: (n, K) summed neighbour outcomes (0 where missing) and counts."""
        return (hits + self.prior_strength * prior) / (observed + self.prior_strength)

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            "train_x": self.train_x,
            "train_scores": self.train_scores,
            "centroids": self.centroids,
            "cluster_sum": self.cluster_sum,
            "cluster_count": self.cluster_count,
            "global_sum": self.global_sum,
            "global_count": self.global_count,
        }

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        for key, value in tensors.items():
            setattr(self, key, value)
        self._outcomes = self._groups = None


# --------------------------------------------------------------------- MLP
class StackedSuccessNets:
    """The mean prediction of several success nets of one shape, in one forward pass, in
    NumPy (:mod:`entrorouter.numeric` says why).

    Routing one query through the bagged ensembles net by net took two dozen small torch
    calls, whose fixed overhead cost 0.4 of the 1.8 ms one query's routing took (a default
    router trained on MMLU-Pro; 0.17 ms stacked). Stacked, every net's first layer is one
    matrix product and their second layers one batched product: the same arithmetic per
    net, up to float rounding.
    """

    def __init__(self, states: list[dict[str, np.ndarray]]) -> None:
        """``states``: each net's weights by their state-dict names (``net.0`` reads the input;
        ``net.3``, when there is a hidden layer, writes the logits)."""
        self.n_nets = len(states)
        self.hidden = "net.3.weight" in states[0]
        self.w1 = np.concatenate([s["net.0.weight"] for s in states]).T.copy()  # (D, B·H)
        self.b1 = np.concatenate([s["net.0.bias"] for s in states])
        if self.hidden:
            # (B, H, K), C order: the layout picks the BLAS kernel, and so the results' last bit.
            self.w2 = np.ascontiguousarray(np.stack([s["net.3.weight"].T for s in states]))
            self.b2 = np.stack([s["net.3.bias"] for s in states])[:, None, :]  # (B, 1, K)

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        h = (x @ self.w1 + self.b1).reshape(len(x), self.n_nets, -1).transpose(1, 0, 2)  # (B, n, ·)
        logits = gelu(h) @ self.w2 + self.b2 if self.hidden else h
        return sigmoid(logits).mean(axis=0)


class MlpCapability(CapabilityEstimator):
    """Per-model success predictor; out-of-fold estimates by K-fold cross-fitting.

    After :meth:`fit`, new queries get the mean prediction of the K fold models and the
    model trained on all rows: a bagged ensemble that comes for free with cross-fitting.
    The nets train in torch (:mod:`entrorouter.training.nets`); the estimator keeps their
    weights as arrays and predicts from those, so a loaded router never builds a net.
    """

    name = "mlp"

    def __init__(
        self,
        hidden: int = 256,
        dropout: float = 0.2,
        epochs: int = 25,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        self.hidden, self.dropout, self.epochs, self.lr = hidden, dropout, epochs, lr
        self.weight_decay, self.folds, self.seed = weight_decay, folds, seed
        self.nets = []

    @property
    def nets(self) -> list[nn.Module]:
        """The bagged nets as torch modules (the final one first): those trained, or rebuilt
        from loaded weights on first use."""
        if self._nets is None:
            self._nets = [self._module(state) for state in self._states]
        return self._nets

    @nets.setter
    def nets(self, nets: list[nn.Module]) -> None:
        self._nets = nets
        self._set_states([{k: v.detach().numpy().copy() for k, v in net.state_dict().items()} for net in nets])

    def _set_states(self, states: list[dict[str, np.ndarray]]) -> None:
        self._states = states  # what predict and tensors read
        self._stacked: StackedSuccessNets | None = None  # built on the first predict

    def make_net(self, in_dim: int, n_models: int) -> nn.Module:
        from entrorouter.training.nets import SuccessNet

        return SuccessNet(in_dim, n_models, self.hidden, self.dropout)

    def _module(self, state: dict[str, np.ndarray]) -> nn.Module:
        import torch

        # SuccessNet keys are "net.<layer>.weight|bias": the first layer reads the input,
        # the last one writes one logit per model.
        last_bias = max((k for k in state if k.endswith(".bias")), key=lambda k: int(k.split(".")[1]))
        net = self.make_net(state["net.0.weight"].shape[1], state[last_bias].shape[0])
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        return net.eval()

    def _train(self, x: np.ndarray, scores: np.ndarray, seed: int) -> nn.Module:
        import torch

        from entrorouter.training.nets import train_success_net

        torch.manual_seed(seed)
        net = self.make_net(x.shape[1], scores.shape[1])
        return train_success_net(
            net, x, scores, epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, seed=seed
        )

    def fit(self, features: np.ndarray, scores: np.ndarray, plan: FoldPlan | None = None) -> np.ndarray:
        if plan is None:
            rng = np.random.default_rng(self.seed)
            plan = FoldPlan(rng.permutation(len(features)) % self.folds, self.folds)
        oof = np.empty(scores.shape, dtype=np.float32)
        fold_nets = []
        for fold in np.unique(plan.labels):
            held = plan.labels == fold
            fold_nets.append(self._net(plan, plan.excluded | {int(fold)}, features[~held], scores[~held]))
            oof[held] = self._apply(fold_nets[-1], features[held])
        self.nets = [self._net(plan, plan.excluded, features, scores), *fold_nets]
        return oof

    def _net(self, plan: FoldPlan, excluded: frozenset[int], x: np.ndarray, scores: np.ndarray) -> nn.Module:
        """The net trained on every row of the table except ``excluded`` folds (memoised in ``plan``).

        A net is fixed by its settings, its rows and its training seed, so that is its key.
        Its seed follows the folds it leaves out (the estimator's own seed when it leaves out
        none), so every router with these settings that trains on the same rows gets the same net: a
        success-predictor router's single net (:meth:`fit_final`) is the bagged net of an
        EntroRouter fit on those rows, trained once for both.
        """
        seed = self.seed + sum(1 << (f + 1) for f in excluded)
        key = (type(self).__name__, self.hidden, self.dropout, self.epochs, self.lr, self.weight_decay)
        key += (tuple(sorted(excluded)), seed)
        if key not in plan.nets:
            plan.nets[key] = self._train(x, scores, seed)
        return plan.nets[key]

    def fit_final(self, features: np.ndarray, scores: np.ndarray, plan: FoldPlan | None = None) -> MlpCapability:
        """Train only the model on all rows (no out-of-fold estimates, no bagging).

        With ``plan``, a net with the same settings already trained on the same rows (by
        another router of a benchmark run) is reused: the same net, trained once.
        """
        if plan is None:
            self.nets = [self._train(features, scores, self.seed)]
        else:
            self.nets = [self._net(plan, plan.excluded, features, scores)]
        return self

    @staticmethod
    def _apply(net: nn.Module, x: np.ndarray) -> np.ndarray:
        import torch

        from entrorouter.training.nets import as_float_tensor

        with torch.no_grad():
            return torch.sigmoid(net(as_float_tensor(x))).numpy()

    def predict(self, features: np.ndarray) -> np.ndarray:
        if type(self).make_net is not MlpCapability.make_net:  # a subclass's own net: net by net
            return np.mean([self._apply(net, features) for net in self.nets], axis=0)
        if self._stacked is None:
            self._stacked = StackedSuccessNets(self._states)
        return self._stacked.predict(features)

    def tensors(self) -> dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, state in enumerate(self._states) for k, v in state.items()}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        states: dict[int, dict[str, np.ndarray]] = {}
        for key, value in tensors.items():
            index, name = key.split(".", 1)
            states.setdefault(int(index), {})[name] = value
        self._nets = None
        self._set_states([states[i] for i in sorted(states)])


class MeanCapability(CapabilityEstimator):
    """The average of several estimators' probabilities (a simple, robust ensemble).

    Stacking with per-model weights fitted on the out-of-fold estimates was tried and did
    worse on validation (small data makes the weights noisy), so the parts count equally.
    """

    def __init__(self, parts: dict[str, CapabilityEstimator]) -> None:
        self.parts = parts
        self.name = "+".join(parts)

    def fit(self, features: np.ndarray, scores: np.ndarray, plan: FoldPlan | None = None) -> np.ndarray:
        return np.mean([p.fit(features, scores, plan) for p in self.parts.values()], axis=0)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.mean([p.predict(features) for p in self.parts.values()], axis=0)

    def tensors(self) -> dict[str, np.ndarray]:
        return {f"{name}.{k}": v for name, part in self.parts.items() for k, v in part.tensors().items()}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        for name, part in self.parts.items():
            prefix = f"{name}."
            part.load_tensors({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})


def make_capability(
    name: str, *, knn_k: int, prior_strength: float, n_clusters: int, folds: int, seed: int
) -> CapabilityEstimator:
    """An estimator by name: "knn", "mlp", "logistic", or several joined by "+" (their mean)."""
    parts: dict[str, CapabilityEstimator] = {}
    for part in name.split("+"):
        if part == "knn":
            parts[part] = KnnCapability(knn_k, prior_strength, n_clusters, seed)
        elif part == "mlp":
            parts[part] = MlpCapability(folds=folds, seed=seed)
        elif part == "logistic":
            parts[part] = MlpCapability(hidden=0, dropout=0.0, epochs=40, lr=3e-3, folds=folds, seed=seed)
        else:
            raise ValueError(f"unknown capability estimator {part!r}")
    return next(iter(parts.values())) if len(parts) == 1 else MeanCapability(parts)
