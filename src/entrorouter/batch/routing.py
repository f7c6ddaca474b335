"""`entrorouter route --batch`: route a file of stored queries, resumably, in bounded memory.

The input (CSV, JSONL or Parquet with an id and a text column) is read in chunks of
``chunk_size`` rows; only a few chunks are in memory at once, whatever the file size.
Rows without an id or a text are *bad rows*: they are left out, reported with their
row number, and make the command exit non-zero — the other rows are still routed.

Each routed chunk is written atomically as its own Parquet part in ``OUT.parts/``; a
manifest there records what the parts were computed from (input size and mtime, chunk
size, router, λ). A rerun after a kill keeps the parts whose chunk is finished and routes
only the rest; if anything in the manifest changed it starts over. When every chunk is
done the parts are joined in input order into ``OUT`` (written to a temporary file and
renamed, so ``OUT`` is never half-written) and the parts folder is removed. Chunks are a
fixed function of the input and ``chunk_size``, so a resumed run has neither duplicate
nor missing rows.

Output columns: ``id``, ``model`` (the first choice), ``ranking`` (list, fallback order),
``lam`` (the λ used) and ``p:<model>`` (the routing probability of each pool model).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from entrorouter.batch import DEFAULT_CHUNK_SIZE
from entrorouter.batch.engines import run_engine
from entrorouter.data.atomic import atomic_path, write_text_atomic
from entrorouter.data.io import (
    CSV_OPTIONS,
    cell_text,
    check_output_location,
    check_unique_columns,
    csv_errors,
    csv_header,
    json_object,
    jsonl_lines,
    table_format,
)
from entrorouter.errors import DataError, EntroRouterError
from entrorouter.router.config import check_lam

MANIFEST = "manifest.json"
BAD_ROWS_SHOWN = 20


@dataclass(frozen=True)
class Chunk:
    """One chunk of the input: the good rows' ids and texts, and the bad rows (numbered from 1)."""

    index: int
    ids: list[str]
    texts: list[str]
    bad_rows: list[tuple[int, str]]  # (row number, what is wrong)


# ------------------------------------------------------------------ reading
def read_chunks(path: Path, id_column: str, text_column: str, chunk_size: int) -> Iterator[Chunk]:
    """The input in chunks of ``chunk_size`` rows; bad rows are listed, not raised.

    Row numbers are 1-based data rows (CSV: header excluded; JSONL: the line number).
    A missing column or an unreadable file is fatal (a :class:`DataError`).
    """
    fmt = table_format(path)
    if not path.is_file():
        raise DataError("no such file", file=path)
    frames = {"csv": _csv_frames, "jsonl": _jsonl_frames, "parquet": _parquet_frames}[fmt](
        path, id_column, text_column, chunk_size
    )
    for index, (rows, frame) in enumerate(frames):
        yield _chunk(index, rows, frame, id_column, text_column)


def _csv_frames(path: Path, id_col: str, text_col: str, size: int) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    check_unique_columns(csv_header(path), path)
    with csv_errors(path):
        reader = pd.read_csv(path, chunksize=size, **CSV_OPTIONS)
    # As a context manager: a missing column (raised from the first chunk) closes the file too.
    with reader:
        first = 1
        while (frame := _next_csv_chunk(reader, path)) is not None:
            if first == 1:
                _check_columns(frame.columns, path, id_col, text_col)
            if len(frame):  # a header without rows reads as one empty chunk
                yield np.arange(first, first + len(frame)), frame
            first += len(frame)


def _next_csv_chunk(reader: Any, path: Path) -> pd.DataFrame | None:
    with csv_errors(path):
        return next(reader, None)


def _jsonl_frames(path: Path, id_col: str, text_col: str, size: int) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    lines: list[int] = []
    records: list[dict[str, Any]] = []
    keys: set[str] = set()  # of every object read: a column no line has is fatal, as in CSV
    for number, line in jsonl_lines(path):
        record = {_BAD: "not valid UTF-8 text"} if line is None else _json_object(line)
        if _BAD not in record:
            keys.update(record)
        lines.append(number)
        records.append(record)
        if len(records) == size:
            yield np.asarray(lines), pd.DataFrame.from_records(records)
            lines, records = [], []
    if keys:
        _check_columns(sorted(keys), path, id_col, text_col)
    if records:
        yield np.asarray(lines), pd.DataFrame.from_records(records)


def _json_object(line: str) -> dict[str, Any]:
    """The object on a JSONL line, or the reason it is not one (under the key ``_BAD``)."""
    try:
        return json_object(line)
    except ValueError as exc:
        return {_BAD: str(exc)}


def _parquet_frames(path: Path, id_col: str, text_col: str, size: int) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise DataError(f"not a readable Parquet file ({str(exc).strip()[:200]})", file=path) from None
    check_unique_columns(parquet.schema_arrow.names, path)
    _check_columns(parquet.schema_arrow.names, path, id_col, text_col)
    first = 1
    for batch in parquet.iter_batches(batch_size=size, columns=[id_col, text_col]):
        yield np.arange(first, first + batch.num_rows), batch.to_pandas()
        first += batch.num_rows


_BAD = "\0bad"  # a column no real file has: the reason a JSONL line could not be parsed


def _check_columns(columns: Any, path: Path, id_col: str, text_col: str) -> None:
    missing = [c for c in (id_col, text_col) if c not in list(columns)]
    if missing:
        raise DataError(
            f"no column {missing[0]!r} (columns: {list(columns)}); name the columns with --id-column/--text-column",
            file=path,
        )


def _chunk(index: int, rows: np.ndarray, frame: pd.DataFrame, id_col: str, text_col: str) -> Chunk:
    n = len(frame)

    def column(name: str) -> list[Any]:
        return frame[name].tolist() if name in frame.columns else [None] * n

    ids, texts, bad = [], [], []
    for row, raw_id, text, problem in zip(rows.tolist(), column(id_col), column(text_col), column(_BAD), strict=True):
        if isinstance(problem, str):
            bad.append((row, problem))
        elif _blank(raw_id):
            bad.append((row, f"no {id_col!r}"))
        elif (id_text := cell_text(raw_id)) is None:
            bad.append((row, f"{id_col!r} is not text or a number ({type(raw_id).__name__})"))
        elif not isinstance(text, str) or not text.strip():
            bad.append((row, f"{text_col!r} is {'empty' if _blank(text) else f'not text ({type(text).__name__})'}"))
        else:
            ids.append(id_text)
            texts.append(text)
    return Chunk(index, ids, texts, bad)


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


# ------------------------------------------------------------------ routing
class ChunkRouter:
    """Loads a saved router once and turns chunks into Arrow tables of routing decisions."""

    def __init__(self, router_dir: str, lam: float) -> None:
        from entrorouter.router import Router

        self.router = Router.load(router_dir)
        self.lam = lam
        self.names = np.asarray(self.router.models, dtype=object)
        self.schema = output_schema(self.router.models)

    def __call__(self, chunk: Chunk) -> pa.Table:
        if not chunk.texts:
            return self.schema.empty_table()
        router = self.router
        probs, rankings = router.rank(router.inputs(router.embed(chunk.texts), chunk.texts), self.lam)
        n, k = probs.shape
        ranking = pa.ListArray.from_arrays(
            pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), pa.array(self.names[rankings].ravel(), pa.string())
        )
        columns = [
            pa.array(chunk.ids, pa.string()),
            pa.array(self.names[rankings[:, 0]], pa.string()),
            ranking,
            pa.array(np.full(n, self.lam, dtype=np.float64)),
            *(pa.array(probs[:, j].astype(np.float64)) for j in range(k)),
        ]
        return pa.Table.from_arrays(columns, schema=self.schema)


def output_schema(models: tuple[str, ...]) -> pa.Schema:
    fields = [
        pa.field("id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("ranking", pa.list_(pa.string())),
        pa.field("lam", pa.float64()),
    ]
    return pa.schema(fields + [pa.field(f"p:{m}", pa.float64()) for m in models])


class _Factory:
    """A picklable ``() -> ChunkRouter`` (shipped to each Ray actor)."""

    def __init__(self, router_dir: str, lam: float) -> None:
        self.router_dir, self.lam = router_dir, lam

    def __call__(self) -> ChunkRouter:
        return ChunkRouter(self.router_dir, self.lam)


@dataclass(frozen=True)
class BatchSummary:
    routed: int
    bad_rows: list[tuple[int, str]]
    resumed_chunks: int
    seconds: float


def route_file(
    router_dir: Path,
    input_path: Path,
    out: Path,
    *,
    lam: float,
    id_column: str = "id",
    text_column: str = "text",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
) -> BatchSummary:
    """Route every good row of ``input_path`` into ``out`` (Parquet); see the module docstring."""
    if table_format(out) != "parquet":
        raise EntroRouterError(f"--out {out}: batch output is Parquet; name it *.parquet")
    if chunk_size < 1:
        raise EntroRouterError(f"--chunk-size must be >= 1, got {chunk_size}")
    if not input_path.is_file():
        raise DataError("no such file", file=input_path)
    check_output_location(out, "--out", inputs=[input_path])
    check_lam(lam)
    started = time.perf_counter()
    parts = out.with_name(out.name + ".parts")
    manifest = {
        "input": str(input_path.resolve()),
        "input_size": input_path.stat().st_size,
        "input_mtime_ns": input_path.stat().st_mtime_ns,
        "chunk_size": chunk_size,
        "columns": [id_column, text_column],
        "router": _router_fingerprint(router_dir),
        "lam": lam,
    }
    done = _resume(parts, manifest)

    def pending() -> Iterator[tuple[tuple[int, list[tuple[int, str]]], Chunk]]:
        for chunk in read_chunks(input_path, id_column, text_column, chunk_size):
            if chunk.index not in done:
                yield (chunk.index, chunk.bad_rows), chunk

    try:
        results = run_engine(
            engine, _Factory(str(router_dir), lam), pending(), ray_address=ray_address, workers=workers
        )
        for (index, bad), table in results:
            _write_part(parts, index, table, bad)
        if not any(parts.glob("part-*.parquet")):
            raise DataError("the file has no data rows", file=input_path)
        routed, bad_rows = _join_parts(parts, out)
    except EntroRouterError:
        shutil.rmtree(parts)  # a bad input: a rerun starts over, so the parts are of no use
        raise
    shutil.rmtree(parts)
    return BatchSummary(routed, bad_rows, len(done), time.perf_counter() - started)


def _part_path(parts: Path, index: int) -> Path:
    return parts / f"part-{index:08d}.parquet"


def _resume(parts: Path, manifest: dict[str, Any]) -> set[int]:
    """Indices of the chunks finished by an earlier run with the same manifest (else start over)."""
    manifest_path = parts / MANIFEST
    if parts.is_dir():
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous == manifest:
            return {int(p.stem.split("-")[1]) for p in parts.glob("part-*.parquet")}
        print(f"{parts}: left by a run with other inputs or settings; starting over", file=sys.stderr)
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return set()


def _write_part(parts: Path, index: int, table: pa.Table, bad_rows: list[tuple[int, str]]) -> None:
    """One chunk's decisions, with its bad rows in the file's metadata; atomic."""
    metadata = {b"entrorouter.bad_rows": json.dumps(bad_rows).encode()}
    with atomic_path(_part_path(parts, index)) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)


def _join_parts(parts: Path, out: Path) -> tuple[int, list[tuple[int, str]]]:
    """Concatenate the parts in chunk order into ``out`` (atomically), one part in memory at a time."""
    files = sorted(parts.glob("part-*.parquet"))
    indices = [int(p.stem.split("-")[1]) for p in files]
    if indices != list(range(len(files))):
        raise RuntimeError(f"{parts}: chunk parts are not contiguous: {indices[:10]}...")
    routed, bad_rows = 0, []
    with atomic_path(out) as tmp:
        writer: pq.ParquetWriter | None = None
        for file in files:
            table = pq.read_table(file)
            bad_rows.extend(tuple(b) for b in json.loads(table.schema.metadata[b"entrorouter.bad_rows"]))
            table = table.replace_schema_metadata(None)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            routed += table.num_rows
        assert writer is not None  # route_file checked that there is a part
        writer.close()
    return routed, bad_rows


def _router_fingerprint(router_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("config.json", "weights.safetensors"):
        file = router_dir / name
        if not file.is_file():
            raise EntroRouterError(f"{router_dir}: not a saved router (no {name})")
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
