"""PNG plots of a benchmark run: curves, entropy over training, usage shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from entrorouter.data.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_curves(results: dict[str, Any], path: Path) -> Path:
    """Cost–accuracy curves of every router; single models as points; oracle marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, r in results["routers"].items():
        if name in ("oracle", "random"):
            continue
        xs, ys = zip(*r["curve"], strict=True)
        style = {"linewidth": 2.6, "color": "black", "zorder": 5} if name == "entrorouter" else {"linewidth": 1.3}
        ax.plot(xs, ys, marker=".", markersize=3, label=f"{name} (AIQ {r['aiq']:.3f})", **style)
        ax.scatter([r["cost"]], [r["accuracy"]], marker="D", s=30, color=ax.lines[-1].get_color(), zorder=6)
    singles = results["single_models"]
    ax.scatter(
        [s["cost"] for s in singles.values()],
        [s["accuracy"] for s in singles.values()],
        marker="o",
        color="grey",
        s=18,
        label="single models",
        zorder=3,
    )
    strongest = singles[results["strongest_model"]]
    ax.annotate(
        results["strongest_model"],
        (strongest["cost"], strongest["accuracy"]),
        fontsize=7,
        xytext=(-4, 6),
        textcoords="offset points",
        ha="right",
    )
    oracle = results["routers"]["oracle"]
    ax.scatter(
        [oracle["cost"]],
        [oracle["accuracy"]],
        marker="*",
        s=160,
        color="gold",
        edgecolor="black",
        label="oracle (cheapest correct)",
        zorder=7,
    )
    random = results["routers"]["random"]
    ax.scatter([random["cost"]], [random["accuracy"]], marker="x", s=50, color="red", label="random", zorder=7)
    target = results["config"]["target_retention"] * results["strongest_accuracy"]
    ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    ax.text(ax.get_xlim()[1], target, f" {results['config']['target_retention']:.1%} of S", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (US$, log scale)")
    ax.set_ylabel("accuracy on the test split")
    ax.set_title(f"{results['dataset']}: cost–accuracy on test (◆ = risk-controlled operating point)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_entropy(results: dict[str, Any], path: Path) -> Path:
    """Policy entropy and usage entropy over training for each ablation."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=False)
    for name, r in results["ablations"].items():
        curve = r.get("training_curve") or []
        if not curve:
            continue
        steps = [p["step"] for p in curve]
        style = {"linewidth": 2.4, "color": "black"} if name == "entrorouter" else {"linewidth": 1.2}
        left.plot(steps, [p["entropy"] for p in curve], label=r["label"], **style)
        right.plot(steps, [p["usage_entropy"] for p in curve], label=r["label"], **style)
    left.set_title("mean policy entropy (training batches)")
    right.set_title("entropy of marginal model usage (validation)")
    for ax in (left, right):
        ax.set_xlabel("optimiser step (SFT, then RL)")
        ax.set_ylabel("nats")
        ax.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(f"{results['dataset']}: entropy over training (ablations)")
    return _save(fig, path)


def plot_usage(results: dict[str, Any], path: Path) -> Path:
    """Usage share per model at each router's chosen operating point (stacked bars)."""
    plt = _pyplot()
    names = [n for n in results["routers"] if n != "random"]
    if "ablations" in results:
        names += [f"ablation:{n}" for n in results["ablations"] if n != "entrorouter"]

    def usage(name: str) -> dict[str, float]:
        if name.startswith("ablation:"):
            return results["ablations"][name.split(":", 1)[1]]["usage"]
        return results["routers"][name]["usage"]

    models = results["models"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.8))
    left = [0.0] * len(names)
    cmap = plt.get_cmap("tab20")
    for j, model in enumerate(models):
        shares = [usage(n).get(model, 0.0) for n in names]
        ax.barh(names, shares, left=left, color=cmap(j % 20), label=model)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of test queries routed to each model (at the chosen operating point)")
    ax.invert_yaxis()
    ax.legend(fontsize=6, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(f"{results['dataset']}: model usage")
    return _save(fig, path)
