"""`entrorouter benchmark`: every router on one or more datasets; results.json, report.md, plots."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from entrorouter.batch.engines import ENGINES
from entrorouter.data.cli import DATA_DIR_HELP
from entrorouter.errors import EntroRouterError
from entrorouter.router.config import POOLINGS, TrainConfig
from entrorouter.threads import limit_threads, usable_cores


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "benchmark",
        help="compare EntroRouter with every baseline: curves, operating points, report",
        description="Fit every router on the training table with K-fold cross-fitting, choose each router's "
        "operating point by a risk-controlled rule on its out-of-fold curve, refit on all training rows and "
        "measure once on test. With --resplits N: repeat on N random train/test resplits and report how often "
        "the chosen point misses the target on held-out data.",
    )
    source = bench.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset",
        action="append",
        help="a public dataset with its fixed split "
        "(mmlu_pro, routerbench_subset, routellm_2model, or a larger variant) or 'all' (the first three); repeatable",
    )
    source.add_argument("--train", help="training outcome table (use with --test)")
    bench.add_argument("--test", help="test outcome table (with --train)")
    bench.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output folder (per dataset: <out>/<dataset>/ when several datasets are given)",
    )
    bench.add_argument(
        "--target-retention",
        type=float,
        default=0.983,
        help="share of the strongest model's accuracy an operating point must keep (default 0.983)",
    )
    bench.add_argument("--folds", type=int, default=5, help="K of the K-fold cross-fitting (default 5)")
    bench.add_argument(
        "--delta",
        type=float,
        default=0.1,
        help="risk level: a chosen point may miss the target with probability at most δ (default 0.1)",
    )
    bench.add_argument(
        "--resplits",
        type=int,
        help="run the resplit study instead: N random train/test resplits (stratified by task), "
        "violation rates and cost reductions over them; writes resplits.json and resplits.md",
    )
    bench.add_argument(
        "--jobs",
        type=int,
        help="run this many datasets (or with --resplits, resplits) side by side, one process and one thread "
        "each; the figures are the same for any value (default: the number of cores)",
    )
    bench.add_argument(
        "--routers",
        help="comma-separated router names (default: all but opt-in entrorouter_ft, which is fitted once, "
        "not cross-fitted, and reported in its own section)",
    )
    bench.add_argument(
        "--finetune-seconds",
        type=float,
        help="time budget of each fine-tune of entrorouter_ft (default 900)",
    )
    bench.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=TrainConfig.calibration_pooling,
        help="pool every router's fold routers at equal predicted spend (default) or at the same knob",
    )
    bench.add_argument("--seed", type=int, default=0, help="random seed of folds and routers (default 0)")
    bench.add_argument("--ablations", action="store_true", help="also run the EntroRouter ablations")
    bench.add_argument(
        "--encoder",
        default="minilm",
        help="minilm (default), minilm-full, minilm-onnx, minilm-static, hashed-tfidf or st:<folder>",
    )
    bench.add_argument("--config", type=Path, help="JSON/YAML TrainConfig overrides for EntroRouter")
    bench.add_argument("--data-dir", help=DATA_DIR_HELP)
    bench.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="where to embed the tables' queries first, filling the embedding cache (default local: as needed)",
    )
    bench.add_argument("--ray-address", help="with --engine ray: join this Ray cluster (default: a local Ray)")
    bench.set_defaults(handler=cmd_benchmark)


def embed_on_engine(tables: list, encoder_name: str, engine: str, ray_address: str | None) -> None:
    """Embed every query of ``tables`` on ``engine`` into the embedding cache, where the benchmark finds them."""
    from entrorouter.features.distributed import embed_texts
    from entrorouter.features.encoders import make_encoder

    encoder = make_encoder(encoder_name)
    texts = list(dict.fromkeys(str(q) for table in tables for q in table.queries))
    print(f"embedding {len(texts)} queries with {encoder_name} on {engine}", file=sys.stderr, flush=True)
    embed_texts(encoder.fit(texts), texts, engine=engine, ray_address=ray_address)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from entrorouter.baselines.base import REGISTRY
    from entrorouter.data.datasets import BENCHMARK_DATASETS, DATASETS, dataset_name, load_source
    from entrorouter.data.io import check_output_location
    from entrorouter.evaluation.benchmark import BenchmarkConfig

    if not 0 < args.target_retention <= 1.5:
        raise EntroRouterError(f"--target-retention must be a fraction such as 0.983, got {args.target_retention}")
    if args.folds < 2:
        raise EntroRouterError(f"--folds must be at least 2, got {args.folds}")
    if not 0 < args.delta < 1:
        raise EntroRouterError(f"--delta must be in (0, 1), got {args.delta}")
    if args.resplits is not None and args.resplits < 1:
        raise EntroRouterError(f"--resplits must be at least 1, got {args.resplits}")
    if args.jobs is not None and args.jobs < 1:
        raise EntroRouterError(f"--jobs must be at least 1, got {args.jobs}")
    if args.finetune_seconds is not None and not args.finetune_seconds > 0:
        raise EntroRouterError(f"--finetune-seconds must be > 0, got {args.finetune_seconds}")
    jobs = usable_cores() if args.jobs is None else args.jobs
    overrides = {}
    if args.config:
        overrides = {k: v for k, v in TrainConfig.load(args.config).to_dict().items() if v != getattr(TrainConfig(), k)}
        if "encoder" in overrides:  # every router routes on the benchmark's one set of embeddings
            raise EntroRouterError(
                f"{args.config}: field 'encoder' is not read by benchmark, whose routers share one encoder; "
                f"use --encoder {overrides['encoder']}"
            )
    config = BenchmarkConfig(
        target_retention=args.target_retention,
        folds=args.folds,
        delta=args.delta,
        pooling=args.pooling,
        seed=args.seed,
        routers=[r.strip() for r in args.routers.split(",") if r.strip()] if args.routers else None,
        ablations=args.ablations,
        encoder=args.encoder,
        train_config=overrides,
        finetune_encoder="minilm-ft" + (f":max_seconds={args.finetune_seconds:g}" if args.finetune_seconds else ""),
    )
    one_fit = [name for name in config.routers or () if not REGISTRY[name].cross_fit]
    if args.resplits and one_fit:
        raise EntroRouterError(
            f"--resplits measures cross-fitted operating points, and {', '.join(one_fit)} is fitted once "
            "(too slow to cross-fit); leave it out of --routers"
        )
    command = (
        "entrorouter " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "entrorouter benchmark"
    )
    if args.ray_address and args.engine != "ray":
        raise EntroRouterError("--ray-address needs --engine ray")
    if args.engine != "local":
        from entrorouter.features.encoders import make_encoder

        if not make_encoder(args.encoder).cacheable:
            raise EntroRouterError(
                f"--engine {args.engine} fills the embedding cache, and the encoder {args.encoder} is fitted per "
                "training split, not cached: use --engine local"
            )
    if args.train:
        if not args.test:
            raise EntroRouterError("--train needs --test")
        check_output_location(args.out / "report.md", "--out")
        train, test = (
            load_source(args.train, data_dir_path=args.data_dir),
            load_source(args.test, data_dir_path=args.data_dir),
        )
        if args.resplits:
            raise EntroRouterError("--resplits works on --dataset (a table with its own train/test split)")
        if args.engine != "local":
            embed_on_engine([train, test], args.encoder, args.engine, args.ray_address)
        run_one(train, test, config, args.out, dataset=train.name, command=command)
        return 0
    names = []
    for value in args.dataset:
        if value == "all":
            names += list(BENCHMARK_DATASETS)
            continue
        name = dataset_name(value)
        if name is None or name == "demo":
            raise EntroRouterError(f"unknown dataset {value!r}; expected one of {', '.join(DATASETS)} or all")
        names.append(name)
    outs = {name: args.out / name if len(set(names)) > 1 else args.out for name in names}
    for out in outs.values():  # before any work: a benchmark runs for minutes before it writes
        check_output_location(out / "report.md", "--out")
    tables = {name: load_source(name, data_dir_path=args.data_dir) for name in outs}
    if args.engine != "local":
        embed_on_engine(list(tables.values()), args.encoder, args.engine, args.ray_address)
    if args.resplits:
        run_resplit_studies(tables, config, args.resplits, outs, command=command, jobs=jobs)
    else:
        run_fixed_splits(tables, config, outs, command=command, jobs=jobs)
    return 0


def run_fixed_splits(tables: dict, config, outs: dict[str, Path], *, command: str, jobs: int) -> None:
    """:func:`run_one` on each table's fixed split; with ``jobs`` > 1, that many datasets side by
    side, each in its own process on one thread (torch's and NumPy's), the biggest tables first.

    One dataset's benchmark is a long run of small single-threaded steps (embedding queries
    one at a time, fits of a few thousand rows), which a second thread barely speeds up and,
    on a busy machine, slows down (:mod:`entrorouter.threads`); whole datasets on separate
    cores do not wait for each other. So the default is one job per core, whatever the
    load; on 2 cores it nearly halves a cold ``--dataset all --ablations`` (the README's
    time table). Every dataset's figures are the same as when it runs alone on one thread
    (``ENTROROUTER_THREADS=1``): the same seeds, the same arithmetic. A failed dataset
    cancels those not started; one already running finishes first.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from entrorouter.evaluation.resplits import biggest_first

    if jobs <= 1 or len(tables) <= 1:
        for name, table in tables.items():
            run_one(table.split("train"), table.split("test"), config, outs[name], dataset=name, command=command)
        return
    order = biggest_first(tables)
    context = multiprocessing.get_context("spawn")  # no fork: the parent may hold threads
    with ProcessPoolExecutor(
        min(jobs, len(tables)), mp_context=context, initializer=limit_threads, initargs=(1,)
    ) as pool:
        print(f"benchmarking {len(tables)} datasets, {min(jobs, len(tables))} at a time", file=sys.stderr, flush=True)
        futures = [
            pool.submit(
                run_one,
                tables[name].split("train"),
                tables[name].split("test"),
                config,
                outs[name],
                dataset=name,
                command=command,
                progress_bar=False,
            )
            for name in order
        ]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run_resplit_studies(
    tables: dict, config, n_resplits: int, outs: dict[str, Path], *, command: str, jobs: int
) -> None:
    """The resplit study of every table (:func:`~entrorouter.evaluation.resplits.run_resplit_studies`):
    each table's resplits.json and resplits.md are written as soon as its last resplit is done,
    and again at the end with the whole study's time."""
    from tqdm.auto import tqdm

    from entrorouter.data.atomic import write_text_atomic
    from entrorouter.evaluation.report import render_report
    from entrorouter.evaluation.resplits import plural, render_resplits, run_resplit_studies

    unrendered: set[Path] = set()  # fixed splits whose report.md cannot be rendered (warned once)

    def write(study: dict) -> None:
        out = outs[study["dataset"]]
        out.mkdir(parents=True, exist_ok=True)
        study = {**study, "command": command}  # as results.json keeps its run's: to render the report again
        write_text_atomic(out / "resplits.json", json.dumps(study, indent=1) + "\n")
        write_text_atomic(out / "resplits.md", render_resplits(study, command=command))
        fixed_split = read_earlier_results(out / "results.json")
        if not fixed_split or "command" not in fixed_split or out in unrendered:
            return
        try:  # its report.md gains the study's violation rates
            text = render_report(
                fixed_split, command=fixed_split["command"], seconds=fixed_split["seconds"], resplit_study=study
            )
        except KeyError as missing:  # edited by hand: the study is kept, the report left as it was
            unrendered.add(out)
            print(
                f"warning: {out / 'results.json'} lacks the field {missing}, so {out / 'report.md'} is left as it "
                f"was; rerun the fixed split (`{fixed_split['command']}`) to add this study to it",
                file=sys.stderr,
            )
            return
        write_text_atomic(out / "report.md", text)

    def report(study: dict) -> None:
        write(study)
        line = (
            f"{study['dataset']}: {plural(n_resplits, 'resplit')} done after "
            f"{study['finished_after_seconds'] / 60:.1f} min; results in {outs[study['dataset']]}"
        )
        entro = study["summary"].get("entrorouter")
        if entro:
            line += (
                f"; EntroRouter violations {entro['violations']}/{n_resplits}, "
                f"mean cost reduction {entro['mean_cost_reduction']:.1%}"
            )
        tqdm.write(line)

    with tqdm(desc="resplits", unit="step", leave=True) as bar:

        def say(message: str) -> None:
            bar.set_postfix_str(message[:70])
            bar.update()

        studies = run_resplit_studies(tables, config, n_resplits=n_resplits, jobs=jobs, progress=say, on_study=report)
    for study in studies.values():
        write(study)  # now with the whole study's time
    total = next(iter(studies.values()))["study_seconds"]
    print(
        f"resplit study of {', '.join(studies)}: {plural(n_resplits * len(studies), 'resplit')} in {total / 60:.1f} min"
    )


def run_one(train, test, config, out: Path, *, dataset: str, command: str, progress_bar: bool = True) -> dict:
    """Benchmark one fixed split and write its report; ``progress_bar=False``: progress as one
    line per step instead (datasets run side by side would garble each other's bars)."""
    from tqdm.auto import tqdm

    from entrorouter.data.atomic import write_text_atomic
    from entrorouter.evaluation.benchmark import ABLATIONS, Benchmark
    from entrorouter.evaluation.plots import plot_curves, plot_entropy, plot_usage
    from entrorouter.evaluation.report import render_report

    started = time.perf_counter()
    with tqdm(desc=dataset, unit="step", leave=True, disable=not progress_bar) as bar:

        def say(message: str) -> None:
            bar.set_postfix_str(message[:60])
            bar.update()
            if not progress_bar:
                minutes = (time.perf_counter() - started) / 60
                print(f"{dataset}, {minutes:.1f} min: {message}", file=sys.stderr, flush=True)

        benchmark = Benchmark(train, test, config, dataset=dataset, progress=say)
        bar.total = 1 + len(benchmark.router_names()) + (len(ABLATIONS) - 1 if config.ablations else 0)
        results = benchmark.run()
    seconds = time.perf_counter() - started
    results["seconds"], results["command"] = seconds, command
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(results, indent=1) + "\n")
    study = read_earlier_results(out / "resplits.json")
    write_text_atomic(out / "report.md", render_report(results, command=command, seconds=seconds, resplit_study=study))
    plot_curves(results, out / "curves.png")
    plot_usage(results, out / "usage.png")
    if "ablations" in results:
        plot_entropy(results, out / "entropy.png")
    entro = results["routers"].get("entrorouter")
    summary = f"{dataset}: {seconds / 60:.1f} min; results in {out}"
    if entro:
        summary += (
            f"; EntroRouter retained {entro['retained']:.1%}, cost reduction {entro['cost_reduction']:.1%}, "
            f"AIQ {entro['aiq']:.4f}"
        )
    print(summary)
    return results


def read_earlier_results(path: Path) -> dict | None:
    """What an earlier run wrote to the output folder (a fixed split's results.json, a resplit
    study's resplits.json), for this run's report; None when absent or unreadable (warned)."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"warning: {path} is unreadable ({exc}); the report leaves it out", file=sys.stderr)
        return None
