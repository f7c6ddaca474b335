"""report.md for a benchmark run: headline table, ablations, reference points, method notes."""

from __future__ import annotations

from typing import Any

from entrorouter.baselines.base import REGISTRY
from entrorouter.evaluation.metrics import PAPER_COST_REDUCTION, best_cost_reduction
from entrorouter.evaluation.resplits import (
    against_the_targets,
    statement_table,
    statement_texts,
    study_protocol,
    time_taken,
    violation_table,
)

# What a resplit study must share with a fixed-split run to check that run's rule.
STUDY_SETTINGS = ("target_retention", "delta", "encoder", "folds")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _met(r: dict[str, Any], target: float) -> str:
    return "yes" if r["retained"] >= target else "no"


def _ci(r: dict[str, Any], key: str) -> str:
    lo, hi = r["ci"][key]
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def headline_rows(routers: dict[str, dict[str, Any]], labels: dict[str, str], target: float) -> list[str]:
    """One row per router: the chosen point on test (cost reduction first), then curve metrics."""
    rows = [
        "| router | cost reduction [95% CI] | retained [95% CI] | target met | certified | accuracy "
        "| cost / query (US$) | AIQ | APGR | gap to oracle | entropy | expert suppression |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in routers.items():
        ci = "ci" in r
        retained = f"{_pct(r['retained'])} {_ci(r, 'retained')}" if ci else _pct(r["retained"])
        reduction = f"{_pct(r['cost_reduction'])} {_ci(r, 'cost_reduction')}" if ci else _pct(r["cost_reduction"])
        label = f"**{labels.get(name, name)}**" if name == "entrorouter" else labels.get(name, name)
        certified = {True: "yes", False: "**no**"}.get(r.get("calibration", {}).get("certified"), "—")
        rows.append(
            f"| {label} | {reduction} | {retained} | {_met(r, target)} | {certified} | {r['accuracy']:.3f} "
            f"| {r['cost']:.3g} | {r['aiq']:.4f} | {r['apgr']:.3f} | {r['gap_to_oracle']:.3f} | {r['entropy']:.2f} "
            f"| {_pct(r['expert_suppression'])} |"
        )
    return rows


def hindsight_rows(results: dict[str, Any], routers: dict[str, dict[str, Any]], target: float) -> list[str]:
    """How much each router's chosen point saves vs the best point of its test curve.

    The best test point is hindsight (choosing it would be tuning on test): it separates what
    a router's curve can do from what a choice made without test data gets.
    """
    strongest = {key: results[key] for key in ("strongest_accuracy", "strongest_cost")}
    rows = []
    for name, r in routers.items():
        if name in ("oracle", "random") or not r.get("curve"):
            continue
        best = best_cost_reduction(r["curve"], **strongest, target=target)
        best_text = "none" if best is None else _pct(best)
        rows.append(f"| {name} | {_pct(r['retained'])} | {_pct(r['cost_reduction'])} | {best_text} |")
    return [
        "### Chosen point vs the best of the test curve (hindsight)",
        "",
        f"The best cost reduction among the points of each router's test curve that keep {_pct(target)} "
        "of the strongest model's test accuracy: never used to choose anything, it shows how much the "
        "risk-controlled choice leaves on the table.",
        "",
        "| router | retained (chosen) | cost reduction (chosen) | best cost reduction on the test curve |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


def certificate_rows(results: dict[str, Any], entro: dict[str, Any], target: float) -> list[str]:
    """EntroRouter's point under three statements about retention, weakest first: what the chosen
    point's margin costs, and which part of it the test set's finite size asks for."""
    m = results["n_test"]
    batch = f"a batch of {m} queries (the test set's size)"
    statements = statement_texts(target, results["config"]["delta"], batch=batch)
    statements["expected"] += f" ({entro['calibration']['n']} calibration queries)"
    rows = []
    for key, statement in statements.items():
        c = entro["certificates"][key]
        if c is None:
            rows.append(f"| {statement} | no point certified | — |")
            continue
        rows.append(
            f"| {statement} | {_pct(c['oof_retained'])} / {_pct(c['oof_cost_reduction'])} "
            f"| {_pct(c['retained'])} / {_pct(c['cost_reduction'])} |"
        )
    return [
        "### What the guarantee costs (EntroRouter)",
        "",
        "The point the fixed-sequence scan of the out-of-fold curve reaches under three statements about "
        "retention, from the weakest to the one the chosen point makes, each deployed at its spend and measured "
        "on test (so the test columns of the first two rows are measurements, never a choice). The first "
        "margin covers the calibration's own sampling noise; the second, the noise of a finite batch, "
        f"which a guarantee for the next {m} queries must cover however many queries calibrated it.",
        "",
        "| the point's statement | out of fold: retained / cost reduction | test: retained / cost reduction |",
        "|---|---|---|",
        *rows,
        "",
    ]


def one_fit_rows(results: dict[str, Any], target: float) -> list[str]:
    """The routers too slow to cross-fit, beside the same protocol's fits of the others."""
    one_fit, routers = results["one_fit"], results["routers"]
    lines = [
        f"## Measured with one fit: {', '.join(one_fit)}",
        "",
        "Too slow to cross-fit here (each fit fine-tunes an encoder), these routers are fitted once on every "
        "fold but fold 0, their point is chosen on fold 0 by the old rule and measured once on test. The other "
        "rows are the same protocol's fits of the cross-fitted routers (their fold-0 fits), so all rows here "
        "compare with each other, not with the headline.",
        "",
        "| router | protocol | retained | cost reduction | target met | AIQ |",
        "|---|---|---|---|---|---|",
    ]
    rows = [(n, "one fit", r) for n, r in one_fit.items()]
    rows += [
        (n, "fold-0 fit of the cross-fitted router", r["legacy_rule"]) for n, r in routers.items() if "legacy_rule" in r
    ]
    for name, protocol, r in rows:
        lines.append(
            f"| {name} | {protocol} | {_pct(r['retained'])} | {_pct(r['cost_reduction'])} | {_met(r, target)} "
            f"| {r['aiq']:.4f} |"
        )
    lines.append("")
    for name, r in one_fit.items():
        lines.append(f"- `{name}`: fitted in {r['fit_seconds'] / 60:.1f} min.")
        for role, d in r["aiq_minus"].items():
            who = "EntroRouter's" if role == "entrorouter" else f"the best baseline's ({d['router']})"
            lines.append(
                f"  AIQ minus {who} (same protocol): {d['difference']:+.4f} "
                f"[95% paired-bootstrap CI {d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]."
            )
    return [*lines, ""]


def resplit_rows(results: dict[str, Any], study: dict[str, Any] | None) -> list[str]:
    """The check of the guarantee: the violation rates of the resplit study beside this report.

    One fixed split draws the test set once, so it cannot say how often the chosen point
    misses the target; the resplit study (`benchmark --resplits N`, resplits.json in the same
    folder) can, and is summarised here when it was run with this run's settings.
    """
    lines = ["## The guarantee over resplits", ""]
    rerun = f"`entrorouter benchmark --dataset {results['dataset']} --resplits 10 --out <this folder>`"
    if study is None:
        return [
            *lines,
            f"Not measured for this run: {rerun} repeats the protocol on 10 random train/test resplits and adds "
            "every router's violation rate here and in resplits.md.",
            "",
        ]
    ours = {"dataset": results["dataset"], **{key: results["config"][key] for key in STUDY_SETTINGS}}
    try:  # a KeyError below can only be the study's
        return [*lines, *study_rows(study, ours, rerun)]
    except KeyError as missing:  # written by an older version, or edited by hand
        return [*lines, f"The resplits.json beside this report lacks the field {missing}: rerun {rerun}.", ""]


def study_rows(study: dict[str, Any], ours: dict[str, Any], rerun: str) -> list[str]:
    """The study's protocol, time and violation table, or why it does not check this run
    (``ours``: this run's dataset and STUDY_SETTINGS)."""
    differ = [f"{key} {study[key]} (this run: {ours[key]})" for key in STUDY_SETTINGS if study[key] != ours[key]]
    if study["dataset"] != ours["dataset"] or differ:
        what = ", ".join(differ) or f"dataset {study['dataset']}"
        return [
            f"The resplit study beside this report was run with other settings ({what}), so it does not check "
            f"this run's rule: rerun {rerun}.",
            "",
        ]
    return [
        f"From resplits.json beside this report (resplits.md has its command): {study_protocol(study)}. "
        + time_taken(study),
        "",
        *violation_table(study),
        *statement_table(study),
        *against_the_targets(study),
    ]


def render_report(
    results: dict[str, Any], *, command: str, seconds: float, resplit_study: dict[str, Any] | None = None
) -> str:
    """report.md of a fixed-split run; ``resplit_study``: the resplits.json of the same folder, if any."""
    cfg = results["config"]
    routers = results["routers"]
    target = cfg["target_retention"]
    lines = [
        f"# Benchmark: {results['dataset']}",
        "",
        f"Generated by `{command}` in {seconds / 60:.1f} min (seed {cfg['seed']}, encoder {cfg['encoder']}).",
        "",
        f"- Train: {results['n_train']} queries, {results['folds']} folds (stratified by task, seed {cfg['seed']}); "
        f"test: {results['n_test']} queries, {len(results['models'])} models.",
        f"- Strongest single model S (on the training split): **{results['strongest_model']}**, test accuracy "
        f"{results['strongest_accuracy']:.3f} at {results['strongest_cost']:.3g} US$/query. "
        f"Oracle (cheapest correct model): {results['oracle_accuracy']:.3f} at {results['oracle_cost']:.3g} US$/query.",
        f"- Operating points: every router is cross-fitted ({results['folds']} folds) and routes each held-out "
        "fold along its knob; on that out-of-fold curve the cheapest knob whose one-sided "
        f"{1 - cfg['delta']:.0%} lower confidence bound of retention (paired with S, for a test set of this size) "
        f"reaches {target:.1%} is chosen by fixed-sequence testing from the most expensive knob down "
        "(`entrorouter/router/calibration.py`). The router is then refitted on all training rows, set to the "
        "knob that spends on the training queries what the fold routers spent at the certified knob, and "
        "measured once on test. Brackets: 95% paired-bootstrap intervals on test.",
        "- AIQ / APGR: area under the upper convex hull of the test cost–accuracy curve, cost normalised "
        "between the cheapest and the strongest model (see `entrorouter/evaluation/metrics.py`).",
        "",
        f"## Headline: cost reduction at {_pct(target)} retention",
        "",
        *headline_rows(routers, {}, target),
        "",
    ]
    comparison = results.get("aiq_vs_best_baseline")
    if comparison:
        lo, hi = comparison["ci"]
        lines += [
            f"EntroRouter's AIQ minus the best baseline's ({comparison['baseline']}): "
            f"{comparison['difference']:+.4f} [95% paired-bootstrap CI {lo:+.4f}, {hi:+.4f}].",
            "",
        ]
    legacy = {n: r["legacy_rule"] for n, r in routers.items() if "legacy_rule" in r}
    if legacy:
        lines += [
            "### The old rule, beside the new one (kept for one release)",
            "",
            "The old protocol fits on 80% of train and picks the cheapest point whose paired-bootstrap "
            f"{cfg['selection_quantile']:.0%}-quantile of retention on the other 20% (fold 0) reaches {_pct(target)}.",
            "",
            "| router | new rule: retained / cost reduction | old rule: retained / cost reduction | old rule met |",
            "|---|---|---|---|",
            *[
                f"| {n} | {_pct(routers[n]['retained'])} / {_pct(routers[n]['cost_reduction'])} "
                f"| {_pct(p['retained'])} / {_pct(p['cost_reduction'])} | {_met(p, target)} |"
                for n, p in legacy.items()
            ],
            "",
        ]
    entro = routers.get("entrorouter")
    if entro:
        baselines = {n: r for n, r in routers.items() if n not in ("entrorouter", "oracle", "random")}
        # Cost reduction only counts at a point the rule certified (an uncertified router keeps its most
        # accurate knob, which may still miss the target by far).
        certified = {n: r for n, r in baselines.items() if r["calibration"]["certified"]}
        best_name = max(certified, key=lambda n: certified[n]["cost_reduction"]) if certified else None
        cal = entro["calibration"]
        verdict = [
            "## Against the targets",
            "",
            f"- EntroRouter's chosen point keeps {_pct(entro['retained'])} of S on test "
            f"({'meets' if entro['retained'] >= target else 'misses'} the {_pct(target)} target) at "
            f"{_pct(entro['cost_reduction'])} lower cost (the paper's bar: {100 * PAPER_COST_REDUCTION:g}%). "
            f"Out of fold it was estimated at "
            f"{_pct(cal['retained'])} (lower bound {_pct(cal['retained_lower'])}), "
            f"{'certified' if cal['certified'] else 'NOT certified: no point reached the target'}.",
        ]
        if best_name:
            verdict.append(
                f"- Cost reduction at the target: EntroRouter {_pct(entro['cost_reduction'])}, best certified baseline "
                f"{best_name} {_pct(baselines[best_name]['cost_reduction'])}; AIQ {entro['aiq']:.4f} vs "
                f"{max(baselines.values(), key=lambda r: r['aiq'])['aiq']:.4f} (the best baseline by AIQ)."
            )
        lines += [*verdict, "", *hindsight_rows(results, routers, target), *certificate_rows(results, entro, target)]
    lines += resplit_rows(results, resplit_study)
    if "one_fit" in results:
        lines += one_fit_rows(results, target)
    if "ablations" in results:
        lines += [
            "## Ablations (the collapse story)",
            "",
            "Each variant changes one component of the full method; same data and seed. To keep the run short the "
            "ablations use the old protocol (one fit on 80% of train, point chosen on fold 0 by the old rule), "
            "so their rows are comparable with each other, not with the headline.",
            "",
            *headline_rows(results["ablations"], {n: r["label"] for n, r in results["ablations"].items()}, target),
            "",
            "Entropy over training: `entropy.png`. Final-step diagnostics:",
            "",
            "| variant | policy entropy (last step) | usage entropy (last step) | suppression (last step) |",
            "|---|---|---|---|",
        ]
        for r in results["ablations"].values():
            last = (r.get("training_curve") or [{}])[-1]
            lines.append(
                f"| {r['label']} | {last.get('entropy', float('nan')):.3f} | "
                f"{last.get('usage_entropy', float('nan')):.3f} | {_pct(last.get('suppression', 0.0))} |"
            )
        lines.append("")
    lines += [
        "## Single models (test)",
        "",
        "| model | accuracy | cost / query (US$) | coverage |",
        "|---|---|---|---|",
    ]
    for model, s in sorted(results["single_models"].items(), key=lambda kv: -kv[1]["accuracy"]):
        lines.append(f"| {model} | {s['accuracy']:.3f} | {s['cost']:.3g} | {_pct(s['coverage'])} |")
    lines += [
        "",
        "## Routers",
        "",
        *[
            f"- `{name}`: {cls.description}"
            for name, cls in REGISTRY.items()
            if name in routers or name in results.get("one_fit", {})
        ],
        "- `oracle`: the cheapest model that gets the query right (an upper bound that reads the answers).",
        "- `random`: the expected result of a uniform choice among the models.",
        "",
        "Plots: `curves.png` (cost–accuracy), `usage.png` (usage shares)"
        + (", `entropy.png` (entropy over training)." if "ablations" in results else "."),
        "",
    ]
    return "\n".join(lines)
