"""`entrorouter benchmark --resplits N`: is the promise kept on data the choice never saw?

One fixed train/test split cannot check a guarantee: it gives one draw, and the public
splits differ systematically (cheap models score higher on RouterBench's test part than
on its train part). So the whole table is split again N times at random (stratified by
task, the fixed split's test share), the full benchmark protocol runs on each split
(cross-fitted calibration on train, risk-controlled choice, final fit, measured once on
the held-out part), and for every router we report:

* the **violation rate**: the share of resplits whose held-out retention falls below the
  target. The rule promises ≤ δ; with N resplits the count of violations is binomial,
  so the report gives the one-sided binomial p-value of the observed count under a rate
  of exactly δ (a small p-value would say the promise is broken);
* the **mean cost reduction** at the chosen point, and EntroRouter's paired difference
  from each router with a 95% t-interval over the resplits (same split, same queries);
* the same for the old rule (a bootstrap quantile on one validation split), beside it;
* in hindsight, the best cost reduction of each router's held-out curve that kept the
  target: picked on the held-out part itself, so optimistic, it shows what the curve
  allowed beside what a choice made without it got.

Then EntroRouter against the study's targets: the promise, the highest saving of the routers
that keep theirs, and, at the paper's 98.3%, the paper's bar.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import stats

from entrorouter.data.splits import stratified_resplit
from entrorouter.data.table import OutcomeTable
from entrorouter.evaluation.benchmark import Benchmark, BenchmarkConfig
from entrorouter.evaluation.metrics import PAPER_COST_REDUCTION, PAPER_TARGET_RETENTION, best_cost_reduction
from entrorouter.threads import limit_threads


def run_resplit_studies(
    tables: dict[str, OutcomeTable],
    config: BenchmarkConfig,
    *,
    n_resplits: int,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
    on_study: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """The study of the module doc on every table; returns each one's resplits.json content.

    Each table is resplit with its fixed split's test share. With ``jobs`` > 1 that many
    worker processes run resplits side by side, one thread each, torch's and NumPy's (a
    resplit is one long single-threaded job; the machine's cores are the parallelism), and
    the resplits of *all* tables share one queue, the biggest table's first: a worker that
    finishes a table's last resplit goes on with the next table instead of waiting for the
    other worker, and the queue ends with the shortest resplits. Every resplit has its own
    seeds, so the results depend neither on ``jobs`` nor on the order. ``on_study`` gets a
    table's study as soon as its last resplit is done (so a long run writes as it goes).
    """
    say = progress or (lambda message: None)
    order = biggest_first(tables)
    fractions = {name: float(np.mean(tables[name].splits == "test")) for name in order}
    tasks = [(name, r) for name in order for r in range(n_resplits)]
    done: dict[str, dict[int, tuple[dict[str, dict[str, Any]], float]]] = {name: {} for name in order}
    studies: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()

    def finished(name: str, r: int, result: tuple[dict[str, dict[str, Any]], float]) -> None:
        done[name][r] = result
        say(f"{sum(map(len, done.values()))}/{len(tasks)} resplits done ({name} {len(done[name])}/{n_resplits})")
        if len(done[name]) == n_resplits:
            per_split, seconds = zip(*(done[name][i] for i in range(n_resplits)), strict=True)
            studies[name] = {
                "dataset": name,
                "n_resplits": n_resplits,
                "test_fraction": fractions[name],
                "n_queries": tables[name].n_queries,
                "target_retention": config.target_retention,
                "delta": config.delta,
                "folds": config.folds,
                "encoder": config.encoder,
                "jobs": max(jobs, 1),
                "queue": order,
                "resplit_seconds": list(seconds),
                "finished_after_seconds": time.perf_counter() - started,
                "summary": summarise(list(per_split), config.target_retention, config.delta),
                "resplits": list(per_split),
            }
            if on_study is not None:
                on_study(studies[name])

    if jobs <= 1:
        for name, r in tasks:
            step = f"{name} resplit {r + 1}/{n_resplits}"
            finished(
                name,
                r,
                _one_resplit(tables[name], config, r, fractions[name], name, lambda m, s=step: say(f"{s}: {m}")),
            )
    else:
        context = multiprocessing.get_context("spawn")  # no fork: the parent may hold threads
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=limit_threads, initargs=(1,)) as pool:
            futures = {
                pool.submit(_one_resplit, tables[name], config, r, fractions[name], name): (name, r)
                for name, r in tasks
            }
            say(f"running {len(tasks)} resplits, {jobs} at a time")
            try:
                for future in as_completed(futures):
                    finished(*futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    for study in studies.values():
        study["study_seconds"] = time.perf_counter() - started
    return {name: studies[name] for name in order}


def biggest_first(tables: dict[str, OutcomeTable]) -> list[str]:
    """The tables' names, the most queries first (queries, not models, take the time): the order
    that leaves the shortest work for the end when tables run side by side."""
    return sorted(tables, key=lambda name: -tables[name].n_queries)


def _one_resplit(
    table: OutcomeTable,
    config: BenchmarkConfig,
    r: int,
    test_fraction: float,
    dataset: str,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, dict[str, Any]], float]:
    """Resplit ``r``: the benchmark protocol on a fresh stratified split; per router, its figures,
    and the seconds the resplit took (in the process that ran it)."""
    started = time.perf_counter()
    test = stratified_resplit(table, test_fraction, seed=10_000 + r)
    bench = Benchmark(
        table.subset(~test),
        table.subset(test),
        replace(config, seed=r, ablations=False, training_logs=False, legacy_curves=False),
        dataset=dataset,
        progress=progress,
    )
    figures = {
        name: {
            "retained": res["retained"],
            "cost_reduction": res["cost_reduction"],
            "certified": res["calibration"]["certified"],
            "legacy_retained": res["legacy_rule"]["retained"],
            "legacy_cost_reduction": res["legacy_rule"]["cost_reduction"],
            "aiq": res["aiq"],
            "hindsight_cost_reduction": best_cost_reduction(
                res["curve"],
                strongest_accuracy=bench.ref.strongest_accuracy,
                strongest_cost=bench.ref.strongest_cost,
                target=config.target_retention,
            ),
            "certificates": res["certificates"],
        }
        for name, res in bench.run_routers().items()
    }
    return figures, time.perf_counter() - started


def summarise(per_split: list[dict[str, dict[str, Any]]], target: float, delta: float) -> dict[str, Any]:
    routers = list(per_split[0])
    out: dict[str, Any] = {}
    for name in routers:
        rows = [split[name] for split in per_split]
        retained = np.array([r["retained"] for r in rows])
        legacy = np.array([r["legacy_retained"] for r in rows])
        hindsight = [r["hindsight_cost_reduction"] for r in rows if r["hindsight_cost_reduction"] is not None]
        out[name] = {
            "violations": int((retained < target).sum()),
            "violation_rate": float((retained < target).mean()),
            "violation_p_value": binomial_tail(int((retained < target).sum()), len(rows), delta),
            "mean_retained": float(retained.mean()),
            "min_retained": float(retained.min()),
            "mean_cost_reduction": float(np.mean([r["cost_reduction"] for r in rows])),
            "certified_share": float(np.mean([r["certified"] for r in rows])),
            "mean_aiq": float(np.mean([r["aiq"] for r in rows])),
            "legacy_violation_rate": float((legacy < target).mean()),
            "legacy_mean_cost_reduction": float(np.mean([r["legacy_cost_reduction"] for r in rows])),
            "mean_hindsight_cost_reduction": float(np.mean(hindsight)) if hindsight else None,
            "hindsight_resplits": len(hindsight),  # those whose held-out curve kept the target somewhere
            "statements": summarise_statements(rows, target, delta),
        }
    if "entrorouter" in routers:
        for name in routers:
            if name == "entrorouter":
                continue
            diff = np.array([s["entrorouter"]["cost_reduction"] - s[name]["cost_reduction"] for s in per_split])
            out[name]["entrorouter_minus_this_cost_reduction"] = mean_interval(diff)
    return out


def summarise_statements(rows: list[dict[str, Any]], target: float, delta: float) -> dict[str, dict[str, Any]]:
    """Per statement about retention (the benchmark's certificates: no margin, expected retention,
    a batch of the held-out part's size), over the resplits where it certified a point: how often
    that point's held-out retention missed the target, and what it saved."""
    out: dict[str, dict[str, Any]] = {}
    for statement in rows[0]["certificates"]:
        points = [r["certificates"][statement] for r in rows if r["certificates"][statement] is not None]
        retained = np.array([p["retained"] for p in points])
        violations = int((retained < target).sum())
        out[statement] = {
            "certified": len(points),
            "violations": violations,
            "violation_p_value": binomial_tail(violations, len(points), delta),
            "mean_retained": float(retained.mean()) if points else None,
            "min_retained": float(retained.min()) if points else None,
            "mean_cost_reduction": float(np.mean([p["cost_reduction"] for p in points])) if points else None,
        }
    return out


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p): how surprising k violations are if the true rate is p."""
    return float(stats.binom.sf(k - 1, n, p))


def mean_interval(values: np.ndarray) -> dict[str, Any]:
    """Mean with its 95% t-interval."""
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "ci": [mean, mean]}
    half = float(stats.t.ppf(0.975, len(values) - 1)) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return {"mean": mean, "ci": [mean - half, mean + half]}


def render_resplits(study: dict[str, Any], *, command: str) -> str:
    """resplits.md: the violation rates and cost reductions of every router, and what the study took."""
    lines = [
        f"# Resplit study: {study['dataset']}",
        "",
        f"Generated by `{command}`: {study_protocol(study)}.",
        "",
        time_taken(study),
        "",
        *violation_table(study),
        *statement_table(study),
        *against_the_targets(study),
    ]
    return "\n".join(lines)


def study_protocol(study: dict[str, Any]) -> str:
    """How the study resplit the table and chose each point, in one clause."""
    return (
        f"{study['n_resplits']} random train/test resplits of all {study['n_queries']} queries (stratified by task, "
        f"{study['test_fraction']:.0%} test, split seeds 10000–{10_000 + study['n_resplits'] - 1}, router seed = "
        f"resplit index), {study['folds']}-fold cross-fitting, target {study['target_retention']:.1%} of the "
        f"strongest model, δ = {study['delta']}, encoder {study['encoder']}"
    )


def violation_table(study: dict[str, Any]) -> list[str]:
    """What a violation is, then one row per router: violations, p-value, cost reduction, EntroRouter's lead."""
    target, delta = study["target_retention"], study["delta"]
    lines = [
        f"A violation is a resplit whose held-out retention at the chosen point is below {target:.1%}. The rule "
        f"promises a violation rate ≤ δ = {delta}; the p-value is P(at least this many violations) if the true rate "
        f"were exactly δ (below 0.05 would say the promise is broken). *Certified*: the share of resplits where "
        "some point of the router's out-of-fold curve was certified for the target; where none was, the router keeps "
        "its most accurate point, which may still miss the target (a router that is never certified has no claim). "
        "*In hindsight*: the best cost reduction of the router's held-out curve that kept the target, picked on the "
        "held-out part itself (so optimistic), averaged over the resplits where some point kept it.",
        "",
        "| router | certified | violations | p-value | mean retained (min) | mean cost reduction "
        "| EntroRouter − router, cost reduction [95% CI] | in hindsight | old rule: violation rate "
        "| old rule: mean cost reduction |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in sorted(study["summary"].items(), key=lambda kv: -kv[1]["mean_cost_reduction"]):
        paired = s.get("entrorouter_minus_this_cost_reduction")
        paired_text = (
            f"{100 * paired['mean']:+.1f} pts [{100 * paired['ci'][0]:+.1f}, {100 * paired['ci'][1]:+.1f}]"
            if paired
            else "—"
        )
        label = f"**{name}**" if name == "entrorouter" else name
        lines.append(
            f"| {label} | {100 * s['certified_share']:.0f}% | {s['violations']}/{study['n_resplits']} "
            f"| {s['violation_p_value']:.2f} | "
            f"{100 * s['mean_retained']:.1f}% ({100 * s['min_retained']:.1f}%) | "
            f"{100 * s['mean_cost_reduction']:.1f}% | {paired_text} | {hindsight_text(s, study['n_resplits'])} "
            f"| {100 * s['legacy_violation_rate']:.0f}% | {100 * s['legacy_mean_cost_reduction']:.1f}% |"
        )
    return [*lines, ""]


def statement_texts(target: float, delta: float, *, batch: str) -> dict[str, str]:
    """The statements about retention that the benchmark's certificates stand for, weakest first,
    in words (``batch``: the batch the last one is about)."""
    return {
        "estimate": f"the out-of-fold estimate reaches {target:.1%} (no margin: nothing is promised)",
        "expected": f"expected retention ≥ {target:.1%} with {1 - delta:.0%} confidence",
        "batch": f"retention on {batch} ≥ {target:.1%} with {1 - delta:.0%} confidence: **the chosen point**",
    }


def statement_table(study: dict[str, Any]) -> list[str]:
    """EntroRouter's point under each statement about retention, over the resplits: what the
    batch statement's margin buys (its violations) and what it costs (its saving)."""
    entro = study["summary"].get("entrorouter")
    if entro is None:
        return []
    target, n = study["target_retention"], study["n_resplits"]
    statements = statement_texts(target, study["delta"], batch="a batch of the held-out part's size")
    lines = [
        "### What the guarantee costs, over the resplits (EntroRouter)",
        "",
        "The point each statement about retention reaches on EntroRouter's out-of-fold curve (each report.md "
        "shows them on the fixed split), measured on every resplit's held-out part. Only the last statement "
        f"promises what a violation checks, a held-out retention of at least {target:.1%}; the weaker ones save "
        "more, and their violations show what the margin of the last one buys.",
        "",
        "| the point's statement | certified | violations | p-value | mean retained (min) | mean cost reduction |",
        "|---|---|---|---|---|---|",
    ]
    for key, text in statements.items():
        s = entro["statements"][key]
        if s["certified"] == 0:
            lines.append(f"| {text} | 0/{n} | — | — | — | — |")
            continue
        lines.append(
            f"| {text} | {s['certified']}/{n} | {s['violations']}/{s['certified']} | {s['violation_p_value']:.2f} "
            f"| {100 * s['mean_retained']:.1f}% ({100 * s['min_retained']:.1f}%) "
            f"| {100 * s['mean_cost_reduction']:.1f}% |"
        )
    return [*lines, ""]


def hindsight_text(summary: dict[str, Any], n_resplits: int) -> str:
    """A router's mean cost reduction in hindsight, with how many resplits it is over when not all."""
    mean, count = summary["mean_hindsight_cost_reduction"], summary["hindsight_resplits"]
    if mean is None:
        return "none"
    return f"{100 * mean:.1f}%" + ("" if count == n_resplits else f" ({count}/{n_resplits})")


def keeps_its_promise(summary: dict[str, Any]) -> bool:
    """Certified on most resplits, and no more violations than δ makes likely (p ≥ 0.05)."""
    return summary["certified_share"] > 0.5 and summary["violation_p_value"] >= 0.05


def against_the_targets(study: dict[str, Any]) -> list[str]:
    """EntroRouter against the study's targets: its promise, its saving beside the routers that keep
    theirs, and at the paper's retention the paper's bar (with the hindsight that explains a miss)."""
    summary, n = study["summary"], study["n_resplits"]
    entro = summary.get("entrorouter")
    if entro is None:
        return []
    target, delta = study["target_retention"], study["delta"]
    saving = entro["mean_cost_reduction"]
    promise = "within δ = " if keeps_its_promise(entro) else "the promise does not hold at δ = "
    lines = [
        "**Against the targets, over the resplits.**",
        "",
        f"- The promise: EntroRouter's point missed the {target:.1%} target on {entro['violations']}/{n} resplits "
        f"(p = {entro['violation_p_value']:.2f}, certified on {entro['certified_share']:.0%}): {promise}{delta}.",
    ]
    rivals = {name: s for name, s in summary.items() if name != "entrorouter" and keeps_its_promise(s)}
    if rivals:
        best = max(rivals, key=lambda name: rivals[name]["mean_cost_reduction"])
        lead = rivals[best]["entrorouter_minus_this_cost_reduction"]
        rank = "the highest" if saving > rivals[best]["mean_cost_reduction"] else "not the highest"
        lines.append(
            f"- The saving: EntroRouter's mean cost reduction, {saving:.1%}, is {rank} of the routers that keep "
            f"their promise (certified on most resplits, violation p-value ≥ 0.05); the best of the others, {best}, "
            f"saves {rivals[best]['mean_cost_reduction']:.1%} (EntroRouter − {best}: {100 * lead['mean']:+.1f} pts, "
            f"95% CI [{100 * lead['ci'][0]:+.1f}, {100 * lead['ci'][1]:+.1f}])."
        )
    if target == PAPER_TARGET_RETENTION:
        reached = "reached" if saving >= PAPER_COST_REDUCTION else "not reached"
        text = (
            f"- The paper's bar, a mean cost reduction of at least {100 * PAPER_COST_REDUCTION:g}% at a guaranteed "
            f"{target:.1%}: {reached} ({saving:.1%})."
        )
        if entro["mean_hindsight_cost_reduction"] is not None:
            text += (
                f" In hindsight its held-out curves allowed {hindsight_text(entro, n)} (each curve's best point that "
                f"kept the target, picked on the held-out data, so optimistic); what separates that from {saving:.1%} "
                "is the price of choosing without the held-out data: the margin the guarantee needs for sampling noise."
            )
        expected = entro["statements"]["expected"]
        if expected["certified"]:
            text += (
                f" A promise on expected retention alone, which leaves out the held-out batch's own noise, would have "
                f"saved {expected['mean_cost_reduction']:.1%} and missed the target on {expected['violations']}/"
                f"{expected['certified']} held-out parts (p = {expected['violation_p_value']:.2f})."
            )
        lines.append(text)
    return [*lines, ""]


def time_taken(study: dict[str, Any]) -> str:
    """What the study took: this table's resplits, and the whole queue they ran in."""
    seconds = study["resplit_seconds"]
    text = (
        f"Time: {plural(len(seconds), 'resplit')} of {np.median(seconds) / 60:.1f} min each (median; "
        f"{sum(seconds) / 60:.1f} min of one thread in all)"
    )
    queue, jobs = study["queue"], study["jobs"]
    if len(queue) > 1 or jobs > 1:
        text += (
            f"; the resplits of {', '.join(queue)} ran in one queue, {jobs} at a time, and this table's last one "
            f"was done after {study['finished_after_seconds'] / 60:.1f} min"
        )
        if "study_seconds" in study:
            text += f" of the study's {study['study_seconds'] / 60:.1f}"
    return text + "."


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
