"""`entrorouter data download` against a real HTTP server on loopback serving fixture files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from entrorouter.data.download import COMPLETE_MARKER, DatasetSource, DownloadError, SourceFile, install, load_sources

REPO, COMMIT = "owner/data", "0" * 40
CONTENT = {"a.csv": b"id,score\n" + b"".join(b"q%d,1\n" % i for i in range(5000)), "sub/b.jsonl": b'{"x": 1}\n' * 300}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source(files: dict[str, bytes] = CONTENT, **pins: dict) -> DatasetSource:
    return DatasetSource(
        name="fixture",
        repo=REPO,
        commit=COMMIT,
        license="test",
        about="fixture files",
        files=tuple(
            SourceFile(**{"path": f"up/{to}", "to": to, "sha256": sha256(data), "size": len(data), **pins.get(to, {})})
            for to, data in files.items()
        ),
    )


class Server:
    """Serves ``files`` as REPO/COMMIT/up/<to>; ``mode`` breaks it on purpose."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.mode = "ok"
        self.ranges: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.ranges.append(self.headers.get("Range"))
                prefix = f"/{REPO}/{COMMIT}/up/"
                data = outer.files.get(self.path.removeprefix(prefix)) if self.path.startswith(prefix) else None
                if data is None:
                    self.send_error(404)
                    return
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if outer.mode == "truncate":  # announce everything, send half, hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(CONTENT)
    yield srv
    srv.close()


def test_download_checks_and_places_every_file(server: Server, tmp_path: Path) -> None:
    folder = install(source(), tmp_path, mirror=server.url)
    assert (folder / "a.csv").read_bytes() == CONTENT["a.csv"]
    assert (folder / "sub" / "b.jsonl").read_bytes() == CONTENT["sub/b.jsonl"]
    assert json.loads((folder / COMPLETE_MARKER).read_text())["commit"] == COMMIT
    assert not list(folder.rglob("*.part"))
    # A second run finds every file already matching and sends no request.
    before = len(server.ranges)
    install(source(), tmp_path, mirror=server.url)
    assert len(server.ranges) == before


def test_checksum_mismatch_keeps_nothing(server: Server, tmp_path: Path) -> None:
    server.files["a.csv"] = CONTENT["a.csv"].replace(b"q7,1", b"q7,0")
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        install(source(), tmp_path, mirror=server.url)
    assert not (tmp_path / "fixture" / "a.csv").exists()
    assert not list(tmp_path.rglob("*.part"))
    assert not (tmp_path / "fixture" / COMPLETE_MARKER).exists()


def test_truncated_transfer_resumes_with_a_range_request(server: Server, tmp_path: Path) -> None:
    server.mode = "truncate"
    with pytest.raises(DownloadError, match="rerun"):
        install(source(), tmp_path, mirror=server.url)
    part = tmp_path / "fixture" / "a.csv.part"
    kept = part.stat().st_size
    assert 0 < kept < len(CONTENT["a.csv"])
    assert not (tmp_path / "fixture" / "a.csv").exists()

    server.mode = "ok"
    server.ranges.clear()
    install(source(), tmp_path, mirror=server.url)
    assert server.ranges[0] == f"bytes={kept}-"
    assert (tmp_path / "fixture" / "a.csv").read_bytes() == CONTENT["a.csv"]


def test_missing_source_file_is_a_404_error(server: Server, tmp_path: Path) -> None:
    del server.files["sub/b.jsonl"]
    with pytest.raises(DownloadError, match="HTTP 404"):
        install(source(), tmp_path, mirror=server.url)


def test_git_blob_id_pins_a_file_without_sha256(server: Server, tmp_path: Path) -> None:
    data = CONTENT["a.csv"]
    blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    files = {"a.csv": data}
    pinned = source(files, **{"a.csv": {"sha256": None, "size": None, "git_sha1": blob_id}})
    install(pinned, tmp_path, mirror=server.url)
    assert (tmp_path / "fixture" / "a.csv").read_bytes() == data
    with pytest.raises(DownloadError, match="git blob id mismatch"):
        install(source(files, **{"a.csv": {"sha256": None, "git_sha1": "f" * 40}}), tmp_path / "x", mirror=server.url)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrorouter.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_unreachable_source_fails_fast_with_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_cli(
        "data", "download", "routellm_2model", "--out", str(tmp_path), "--mirror", "http://127.0.0.1:9", timeout=60
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("entrorouter: error:")]
    assert len(error) == 1 and "cannot reach http://127.0.0.1:9/lm-sys/RouteLLM/" in error[0], result.stderr
    assert "--from" in error[0] and "Traceback" not in result.stderr


def test_from_a_local_copy_then_found_by_name(data_dir: Path, tmp_path: Path) -> None:
    home = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    result = run_cli("data", "download", "routerbench_subset", "--from", str(data_dir / "routerbench_subset"), env=home)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "xdg" / "entrorouter" / "routerbench_subset" / COMPLETE_MARKER).exists()
    # Non-terminal stderr gets plain lines, not carriage-return redraws.
    assert "\r" not in result.stderr
    inspect = run_cli("data", "inspect", "routerbench_subset", "--json", env=home)
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["n_models"] == 11


def test_from_a_copy_of_the_built_tables(data_dir: Path, tmp_path: Path) -> None:
    # The shared copy of mmlu_pro holds the tables built from the upstream zips, not the zips.
    result = run_cli("data", "download", "mmlu_pro", "--from", str(data_dir / "mmlu_pro"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    about = json.loads((tmp_path / "mmlu_pro" / COMPLETE_MARKER).read_text())
    assert about["files"] == ["mmlu_pro_questions.parquet", "mmlu_pro_outcomes_long.parquet"]
    assert about["commit"] == load_sources()["mmlu_pro"].commit


def test_from_a_copy_that_differs_is_refused(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in (data_dir / "routerbench_subset").glob("*.csv"):
        (copy / path.name).write_bytes(path.read_bytes())
    with (copy / "mbpp_test.csv").open("ab") as handle:
        handle.write(b"\n")
    result = run_cli("data", "download", "routerbench_subset", "--from", str(copy), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "mbpp_test.csv: SHA-256 mismatch" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "routerbench_subset" / "mbpp_test.csv").exists()


def test_unknown_dataset_name_lists_the_known_ones(tmp_path: Path) -> None:
    result = run_cli("data", "download", "imagenet", "--out", str(tmp_path))
    assert result.returncode == 2 and "known: mmlu_pro" in result.stderr


def test_mmlu_pro_build_derives_the_tables_from_zipped_json(tmp_path: Path) -> None:
    rows = [
        {
            "question_id": 7,
            "question": "Q?",
            "options": ["x", "y"],
            "answer": "B",
            "answer_index": 1,
            "category": "math",
            "src": "s",
            "pred": pred,
            "generated_text": text,
        }
        for pred, text in (("B", "so the answer is B"),)
    ] + ["a stray string"]
    raw = tmp_path / "raw_zips"
    raw.mkdir()
    for model, pred in (("small-7B", None), ("big-70B", "B")):
        with zipfile.ZipFile(raw / f"model_outputs_{model}_5shots.zip", "w") as archive:
            archive.writestr(f"model_outputs_{model}_5shots.json", json.dumps([{**rows[0], "pred": pred}, rows[1]]))
    files = {f"raw_zips/{p.name}": p.read_bytes() for p in raw.iterdir()}
    pinned = DatasetSource(**{**source(files).__dict__, "build": "mmlu_pro"})
    folder = install(pinned, tmp_path / "data", from_dir=tmp_path)
    questions = pd.read_parquet(folder / "mmlu_pro_questions.parquet")
    outcomes = pd.read_parquet(folder / "mmlu_pro_outcomes_long.parquet")
    assert questions.to_dict("records") == [
        {
            "question_id": "7",
            "question": "Q?",
            "options": '["x", "y"]',
            "answer": "B",
            "answer_index": "1",
            "category": "math",
            "src": "s",
        }
    ]
    by_model = outcomes.set_index("model")
    assert by_model.loc["big-70B", "correct"] == 1 and by_model.loc["small-7B", "correct"] == 0
    assert by_model.loc["big-70B", "output_chars"] == len("so the answer is B")
    assert by_model.loc["big-70B", "output_words"] == 5


def test_every_pinned_file_has_a_content_hash_and_a_commit() -> None:
    sources = load_sources()
    assert {"mmlu_pro", "routerbench_subset", "routellm_2model", "mmlu_pro_full", "routerbench_full"} <= set(sources)
    for dataset in sources.values():
        assert len(dataset.commit) == 40
        for file in dataset.files:
            assert file.sha256 or file.git_sha1, (dataset.name, file.path)
