"""`entrorouter route --batch` and table embedding, on the local engine and a real local Ray.

One Ray session (num_cpus=2) is shared by the module: starting Ray takes seconds.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entrorouter.batch.routing import route_file
from entrorouter.cli import main

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'entrorouter[ray]')")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def queries(demo_table, tmp_path_factory) -> Path:
    """600 queries as CSV, with three bad rows (rows 4 and 11 lack a text, row 30 an id)."""
    texts = [str(q) for q in demo_table.queries[:600]]
    frame = pd.DataFrame({"qid": [f"q{i}" for i in range(len(texts))], "prompt": texts})
    frame.loc[3, "prompt"] = ""
    frame.loc[10, "prompt"] = "   "
    frame.loc[29, "qid"] = ""
    path = tmp_path_factory.mktemp("batch") / "queries.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def reference(tiny_router, queries, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("reference") / "local.parquet"
    summary = route_file(tiny_router, queries, out, lam=0.05, id_column="qid", text_column="prompt", chunk_size=64)
    assert summary.routed == 597
    return pd.read_parquet(out)


def test_cli_routes_good_rows_and_reports_bad_ones(tiny_router, queries, tmp_path, capsys):
    out = tmp_path / "out.parquet"
    argv = ["route", "--router", str(tiny_router), "--batch", str(queries), "--out", str(out)]
    code = main([*argv, "--id-column", "qid", "--text-column", "prompt", "--lam", "0.05", "--chunk-size", "64"])
    err = capsys.readouterr().err
    assert code == 1  # some rows were bad
    assert f"{queries}, row 4: 'prompt' is empty" in err
    assert f"{queries}, row 11: 'prompt' is empty" in err
    assert f"{queries}, row 30: no 'qid'" in err
    assert "3 bad row(s) left out" in err
    routed = pd.read_parquet(out)
    expected_ids = [f"q{i}" for i in range(600) if i not in (3, 10, 29)]
    assert routed["id"].tolist() == expected_ids
    assert (routed["lam"] == 0.05).all()
    probs = routed[[c for c in routed.columns if c.startswith("p:")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [r[0] for r in routed["ranking"]] == routed["model"].tolist()
    assert not out.with_name(out.name + ".parts").exists()


def test_formats_give_the_same_decisions(tiny_router, queries, reference, tmp_path):
    frame = pd.read_csv(queries, dtype=str, keep_default_na=False)
    jsonl = tmp_path / "q.jsonl"
    lines = [json.dumps({"qid": i, "prompt": t}) for i, t in zip(frame["qid"], frame["prompt"], strict=True)]
    lines[5] = "{not json"
    jsonl.write_text("\n".join(lines) + "\n")
    summary = route_file(tiny_router, jsonl, tmp_path / "j.parquet", lam=0.05, id_column="qid", text_column="prompt")
    assert (6, "invalid JSON (Expecting property name enclosed in double quotes)") in summary.bad_rows
    from_jsonl = pd.read_parquet(tmp_path / "j.parquet")
    assert_same_decisions(from_jsonl, reference[reference["id"] != "q5"].reset_index(drop=True))

    parquet = tmp_path / "q.parquet"
    frame.to_parquet(parquet)
    route_file(tiny_router, parquet, tmp_path / "p.parquet", lam=0.05, id_column="qid", text_column="prompt")
    assert_same_decisions(pd.read_parquet(tmp_path / "p.parquet"), reference)


def assert_same_decisions(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """The same rows in the same order, and the same decisions up to float rounding: routed in
    chunks of another size, or by a worker with another BLAS thread count, a row's numbers
    round differently (~1e-7), which may swap two models whose probabilities tie to that
    precision."""
    assert left["id"].tolist() == right["id"].tolist()
    assert (left["lam"] == right["lam"]).all()
    columns = [c for c in left.columns if c.startswith("p:")]
    np.testing.assert_allclose(left[columns].to_numpy(), right[columns].to_numpy(), rtol=1e-5, atol=1e-6)
    for (_, a), (_, b) in zip(left.iterrows(), right.iterrows(), strict=True):
        in_a_order = np.array([a[f"p:{m}"] for m in a["ranking"]])
        in_b_order = np.array([a[f"p:{m}"] for m in b["ranking"]])
        np.testing.assert_allclose(in_a_order, in_b_order, atol=1e-6)


def test_ray_engine_output_is_identical_to_local(ray_session, tiny_router, queries, reference, tmp_path):
    out = tmp_path / "ray.parquet"
    summary = route_file(
        tiny_router, queries, out, lam=0.05, id_column="qid", text_column="prompt", chunk_size=64, engine="ray"
    )
    assert [row for row, _ in summary.bad_rows] == [4, 11, 30]
    assert_same_decisions(pd.read_parquet(out), reference)


def test_killed_run_resumes_without_duplicates_or_gaps(ray_session, tiny_router, demo_table, tmp_path):
    """SIGKILL a local run mid-way, then finish it on Ray: the result equals an uninterrupted run."""
    texts = [str(q) for q in demo_table.queries]
    big = tmp_path / "big.csv"
    pd.DataFrame({"id": range(len(texts) * 6), "text": texts * 6}).to_csv(big, index=False)
    out = tmp_path / "out.parquet"
    parts = out.with_name(out.name + ".parts")
    command = [sys.executable, "-m", "entrorouter.cli", "route", "--router", str(tiny_router), "--batch", str(big)]
    env = {**os.environ, "ENTROROUTER_THREADS": "1"}
    process = subprocess.Popen([*command, "--out", str(out), "--chunk-size", "20", "--lam", "0.05"], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(parts.glob("part-*.parquet"))) < 5:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no parts written in time"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    assert not out.exists()  # never half-written
    summary = route_file(tiny_router, big, out, lam=0.05, chunk_size=20, engine="ray")
    assert summary.resumed_chunks >= 5
    clean = route_file(tiny_router, big, tmp_path / "clean.parquet", lam=0.05, chunk_size=20)
    assert clean.resumed_chunks == 0
    resumed = pd.read_parquet(out)
    assert resumed["id"].tolist() == [str(i) for i in range(len(texts) * 6)]
    assert_same_decisions(resumed, pd.read_parquet(tmp_path / "clean.parquet"))


def test_changed_settings_restart_instead_of_mixing(tiny_router, queries, tmp_path, capsys):
    out = tmp_path / "out.parquet"
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    (parts / "manifest.json").write_text("{}")
    (parts / "part-00000000.parquet").write_bytes(b"stale")
    route_file(tiny_router, queries, out, lam=0.1, id_column="qid", text_column="prompt")
    assert "starting over" in capsys.readouterr().err
    assert len(pd.read_parquet(out)) == 597


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--text-column", "body"], "no column 'body'"),
        (["--target-retention", "1.4"], "highest reachable retention"),
        ([], "--batch needs --out"),
    ],
)
def test_user_errors_are_one_line(tiny_router, queries, tmp_path, capsys, extra, message):
    argv = ["route", "--router", str(tiny_router), "--batch", str(queries), "--id-column", "qid", *extra]
    if "--batch needs --out" not in message:
        argv += ["--out", str(tmp_path / "o.parquet")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert main(argv) == 2
        gc.collect()
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not [w.message for w in caught if issubclass(w.category, ResourceWarning)]  # the input file was closed


def test_train_with_ray_engine(ray_session, demo_table, tmp_path, capsys):
    from entrorouter.data.io import write_table
    from entrorouter.router import Router

    table = tmp_path / "table.parquet"
    write_table(demo_table.subset(np.arange(300)), table)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"encoder": "hashed-tfidf", "capability": "knn", "sft_epochs": 1, "rl_iterations": 2}))
    args = ["train", "--data", str(table), "--config", str(config), "--split", "all"]
    assert main([*args, "--out", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    text = ["What is the derivative of x squared?"]
    ray_result = Router.load(tmp_path / "ray").route(text)[0]
    local_result = Router.load(tmp_path / "local").route(text)[0]
    # Same embeddings, same training; float sums may differ in the last bits across thread settings.
    assert ray_result.ranking == local_result.ranking
    assert ray_result.probabilities == pytest.approx(local_result.probabilities, abs=1e-2)


def test_benchmark_with_ray_engine_fills_the_embedding_cache(ray_session, demo_table, tmp_path, capsys):
    from entrorouter.data.io import write_table
    from entrorouter.features.cache import EmbeddingCache
    from entrorouter.features.encoders import make_encoder

    train, test = demo_table.subset(np.arange(160)), demo_table.subset(np.arange(160, 240))
    write_table(train, tmp_path / "train.parquet")
    write_table(test, tmp_path / "test.parquet")
    texts = [str(q) for q in demo_table.queries[:240]]
    encoder = make_encoder("minilm")
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings")
    os.environ["ENTROROUTER_CACHE_DIR"], before = str(tmp_path / "cache"), os.environ.get("ENTROROUTER_CACHE_DIR")
    try:
        assert len(cache.missing(encoder, texts)) == len(set(texts))
        argv = ["benchmark", "--train", str(tmp_path / "train.parquet"), "--test", str(tmp_path / "test.parquet")]
        argv += ["--out", str(tmp_path / "bench"), "--routers", "knn", "--folds", "2", "--engine", "ray"]
        assert main(argv) == 0
        assert f"embedding {len(set(texts))} queries with minilm on ray" in capsys.readouterr().err
        assert cache.missing(encoder, texts) == []  # the actors' vectors are what the benchmark used
        assert (tmp_path / "bench" / "results.json").exists()
    finally:
        if before is None:
            os.environ.pop("ENTROROUTER_CACHE_DIR")
        else:
            os.environ["ENTROROUTER_CACHE_DIR"] = before


def test_benchmark_engine_needs_a_cached_encoder(tmp_path, capsys):
    argv = ["benchmark", "--dataset", "demo", "--out", str(tmp_path), "--encoder", "hashed-tfidf", "--engine", "ray"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "fills the embedding cache" in err and len(err.splitlines()) == 1


def _route_error(argv: list[str], capsys) -> str:
    assert main(["route", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_an_output_that_is_the_input_or_a_folder_is_refused(tiny_router, tmp_path, capsys):
    batch = tmp_path / "q.parquet"
    pd.DataFrame({"id": ["1"], "text": ["What is 2+2?"]}).to_parquet(batch)
    before = batch.read_bytes()
    base = ["--router", str(tiny_router), "--batch", str(batch), "--out"]
    assert "is also the input file" in _route_error([*base, str(tmp_path / "." / "q.parquet")], capsys)
    assert batch.read_bytes() == before
    (tmp_path / "dir.parquet").mkdir()
    assert "is a folder" in _route_error([*base, str(tmp_path / "dir.parquet")], capsys)
    assert "is a file, not a folder" in _route_error([*base, str(batch / "o.parquet")], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.parquet", "q.parquet"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("no_text.jsonl", '{"id": 1, "prompt": "a"}\n{"id": 2, "prompt": "b"}\n', "no column 'text'"),
        ("header_only.csv", "id,text\n", "the file has no data rows"),
        ("duplicate.csv", "id,text,text\n1,a,b\n", "duplicate column 'text'"),
        ("longer_rows.csv", "id,text\n1,a,b\n2,c,d\n", "row 1: more fields"),
        ("dup.parquet", None, "duplicate column 'text'"),
    ],
)
def test_bad_batch_inputs_are_fatal_and_leave_nothing(tiny_router, tmp_path, capsys, name, content, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    batch = tmp_path / name
    if content is None:
        pq.write_table(
            pa.table([pa.array(["1"]), pa.array(["a"]), pa.array(["b"])], names=["id", "text", "text"]), batch
        )
    else:
        batch.write_text(content)
    out = tmp_path / "out.parquet"
    assert message in _route_error(["--router", str(tiny_router), "--batch", str(batch), "--out", str(out)], capsys)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no OUT.parquet.parts/ left behind


@pytest.mark.parametrize("lam", ["-1", "nan", "1e9"])
def test_a_bad_lam_is_refused_before_the_parts_folder_is_made(tiny_router, queries, tmp_path, capsys, lam):
    argv = ["--router", str(tiny_router), "--batch", str(queries), "--out", str(tmp_path / "o.parquet")]
    assert "λ must be a number" in _route_error([*argv, "--id-column", "qid", f"--lam={lam}"], capsys)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(Exception, match="λ must be a number"):
        route_file(tiny_router, queries, tmp_path / "o.parquet", lam=float(lam), id_column="qid", text_column="prompt")
    assert list(tmp_path.iterdir()) == []


def test_a_bom_before_batch_jsonl_is_accepted(tiny_router, tmp_path):
    batch = tmp_path / "bom.jsonl"
    batch.write_bytes(b'\xef\xbb\xbf{"id": "1", "text": "What is 2+2?"}\n')
    summary = route_file(tiny_router, batch, tmp_path / "o.parquet", lam=0.1)
    assert summary.routed == 1 and summary.bad_rows == []


def test_ids_that_are_not_text_or_numbers_are_bad_rows(tiny_router, tmp_path):
    batch = tmp_path / "ids.jsonl"
    lines = [{"id": 1.0, "text": "a"}, {"id": [1], "text": "b"}, {"id": True, "text": "c"}]
    twice = '{"id": 4, "text": "d", "text": "e"}\n'  # a key twice: the parser kept the last
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines) + twice)
    out = tmp_path / "o.parquet"
    summary = route_file(tiny_router, batch, out, lam=0.1)
    assert summary.routed == 1 and [row for row, _ in summary.bad_rows] == [2, 3, 4]
    assert "the key 'text' appears twice" in summary.bad_rows[-1][1]
    assert pd.read_parquet(out)["id"].tolist() == ["1"]
