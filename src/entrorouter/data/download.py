"""`entrorouter data download`: fetch a public dataset from its pinned upstream source.

A stranger has no ``../shared/data``; this puts each public dataset into the per-user
data folder (see :func:`entrorouter.data.datasets.data_dir`) where every command finds it
by name. What is fetched is data, never code: ``sources.json`` pins each file to an
upstream repository at a fixed commit with its size and SHA-256 (or, for files the pins
were made without, the file's git blob id, which is also a hash of its content). Nothing
downloaded is ever unpickled: the files are CSV, JSON Lines and zipped JSON.

Every file is written to ``<name>.part`` first, so an interrupted transfer resumes with an
HTTP Range request, and renamed into place only once its checksum matches. ``--from DIR``
takes the same path for a copy already on disk. A dataset folder is complete when its
``SOURCE.json`` is written, last.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from entrorouter.data.atomic import write_text_atomic
from entrorouter.errors import EntroRouterError

DEFAULT_MIRROR = "https://raw.githubusercontent.com"
MIRROR_ENV = "ENTROROUTER_DATA_MIRROR"
COMPLETE_MARKER = "SOURCE.json"
# Seconds to wait for a connection or for the next bytes; an unreachable network fails in this time.
TIMEOUT_S = 15.0
CHUNK_BYTES = 1 << 16


class DownloadError(EntroRouterError):
    """A source that cannot be reached or a file that does not match its pin."""


@dataclass(frozen=True)
class SourceFile:
    """One upstream file: its path in the repository, where it goes, and its pins."""

    path: str
    to: str
    sha256: str | None = None
    size: int | None = None
    git_sha1: str | None = None


@dataclass(frozen=True)
class DatasetSource:
    """A dataset pinned to an upstream repository at one commit."""

    name: str
    repo: str
    commit: str
    license: str
    about: str
    files: tuple[SourceFile, ...]
    build: str | None = None
    # What ``build`` makes from the files, pinned too: a local copy may hold these instead.
    derived: tuple[SourceFile, ...] = ()

    def url(self, file: SourceFile, mirror: str) -> str:
        return f"{mirror.rstrip('/')}/{self.repo}/{self.commit}/{file.path}"


def load_sources() -> dict[str, DatasetSource]:
    """The pinned datasets shipped with the package (``data/sources.json``)."""
    raw = json.loads((Path(__file__).parent / "sources.json").read_text(encoding="utf-8"))
    return {
        name: DatasetSource(
            name=name,
            repo=entry["repo"],
            commit=entry["commit"],
            license=entry["license"],
            about=entry["about"],
            files=tuple(SourceFile(**f) for f in entry["files"]),
            build=entry.get("build"),
            derived=tuple(SourceFile(path=n, to=n, **pin) for n, pin in entry.get("derived", {}).items()),
        )
        for name, entry in raw.items()
        if not name.startswith("_")
    }


# ------------------------------------------------------------------ checksums
def pin_problem(path: Path, file: SourceFile) -> str | None:
    """None when the file's content matches its pin, else what differs."""
    if file.sha256 is not None:
        digest, want, kind = hashlib.sha256(), file.sha256, "SHA-256"
    else:  # git's blob id: SHA-1 of "blob <size>\0" + content
        digest, want, kind = hashlib.sha1(b"blob %d\0" % path.stat().st_size), file.git_sha1, "git blob id"
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    got = digest.hexdigest()
    return None if got == want else f"{kind} mismatch (expected {want}, got {got})"


def _matches(path: Path, file: SourceFile) -> bool:
    if not path.is_file() or (file.size is not None and path.stat().st_size != file.size):
        return False
    return pin_problem(path, file) is None


# ------------------------------------------------------------------ transfers
def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": "entrorouter-data-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            raise  # the .part file is already whole (or longer); the caller decides
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason} (the pinned source is not there)") from None
    except OSError as exc:  # URLError, refused or reset connections, timeouts
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot reach {url} ({reason}); check the network, or import a copy you have with --from DIR"
        ) from None


def _stream(response: BinaryIO, out: BinaryIO, bar: tqdm, url: str) -> int:
    written = 0
    try:
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
            out.write(chunk)
            bar.update(len(chunk))
            written += len(chunk)
    except (OSError, http.client.IncompleteRead) as exc:
        raise DownloadError(
            f"{url}: transfer interrupted ({exc.__class__.__name__}); rerun the command to resume"
        ) from None
    return written


def fetch_file(url: str, dest: Path, file: SourceFile, *, timeout: float = TIMEOUT_S, label: str = "") -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming it, checking the pin."""
    if _matches(dest, file):
        return
    part = _part(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    if file.size is not None and offset > file.size:
        part.unlink()
        offset = 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError:  # 416 Range Not Satisfiable: the .part file already holds everything
        response = None
    if response is not None:
        with response, tqdm(total=file.size, unit="B", unit_scale=True, desc=label or dest.name, leave=False) as bar:
            resumed = bool(offset) and response.status == 206
            bar.update(offset if resumed else 0)
            with part.open("ab" if resumed else "wb") as out:
                got = _stream(response, out, bar, url)
            if response.length is not None and response.length > 0:  # the server sent less than it announced
                raise DownloadError(
                    f"{url}: transfer cut short after {got} bytes, {response.length} missing; rerun to resume"
                )
    size = part.stat().st_size
    if file.size is not None and size < file.size:
        raise DownloadError(f"{url}: transfer cut short ({size} of {file.size} bytes); rerun the command to resume")
    problem = pin_problem(part, file)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{url}: {problem}; the partial file was removed, rerun to fetch it again")
    os.replace(part, dest)


def copy_file(src: Path, dest: Path, file: SourceFile) -> None:
    """Import one file from a local copy through the same checks as a download."""
    if not src.is_file():
        raise DownloadError(f"{src}: missing from the local copy (expected {file.to})")
    if _matches(dest, file):
        return
    part = _part(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, part)
    problem = pin_problem(part, file)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{src}: {problem}; this is not the pinned upstream file")
    os.replace(part, dest)


# ------------------------------------------------------------------ datasets
def _local_files(source: DatasetSource, from_dir: Path) -> tuple[SourceFile, ...]:
    """What to import from ``from_dir``: the upstream files, or else the pinned derived ones."""
    if (
        source.derived
        and not all((from_dir / f.to).is_file() for f in source.files)
        and all((from_dir / f.to).is_file() for f in source.derived)
    ):
        return source.derived
    return source.files


def install(
    source: DatasetSource,
    root: Path,
    *,
    from_dir: Path | None = None,
    mirror: str | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Fetch (or import from ``from_dir``) every file of ``source`` into ``root/<name>``; return that folder."""
    folder = root / source.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the data folder {folder} ({exc.strerror})") from None
    (folder / COMPLETE_MARKER).unlink(missing_ok=True)
    if from_dir is not None:
        if not from_dir.is_dir():
            raise DownloadError(f"--from {from_dir}: no such folder")
        installed = _local_files(source, from_dir)
        for file in tqdm(installed, desc=f"importing {source.name}", unit="file", leave=False):
            copy_file(from_dir / file.to, folder / file.to, file)
    else:
        installed = source.files
        base = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
        for i, file in enumerate(installed, 1):
            fetch_file(source.url(file, base), folder / file.to, file, timeout=timeout, label=f"[{i}/{len(installed)}]")
    if source.build is not None and installed is source.files:
        from entrorouter.data.datasets import BUILDERS

        print(f"building the {source.name} tables from {len(source.files)} files", file=sys.stderr)
        BUILDERS[source.build](folder)
    about = {
        "name": source.name,
        "repo": source.repo,
        "commit": source.commit,
        "license": source.license,
        "about": source.about,
        "files": [f.to for f in installed],
    }
    write_text_atomic(folder / COMPLETE_MARKER, json.dumps(about, indent=1) + "\n")
    return folder
