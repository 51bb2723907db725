"""``smooth-infomax data fetch``: download, verify and unpack the public datasets.

* ``artificial-speech``: the GitHub archive of fdenoodt/Artificial-Speech-Dataset at the pinned commit
  1f653c9dfc17245aae30bde9b870c9cc6fc9b2b2 (CC-BY-NC-SA-4.0), unpacked to ``<to>/artificial-speech``. GitHub
  builds these archives on the fly and does not promise stable bytes, so no checksum is pinned; instead the
  unpacked tree must hold exactly the 680 / 171 word and 2181 / 360 syllable files of that commit.
* ``librispeech``: ``train-clean-100.tar.gz`` from openslr.org/12 (CC BY 4.0, md5 checked), unpacked to
  ``<to>/LibriSpeech``. The CPC split and phone files live on Google Drive, which cannot be fetched without
  a browser; the command says where to put them.

Downloads stream into ``<archive>.part`` and resume from where they stopped (HTTP Range) when the command is
run again; the checksum is verified before the archive is renamed into place. Archives are unpacked into a
hidden temporary folder (members that would land outside it, links and device files are refused) and the
result is renamed to its final name only after its structure was checked. Without network access, download
the archive by hand and pass it with ``--from FILE``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from ..audio import AUDIO_SUFFIXES
from ..errors import UserError

CHUNK = 1 << 20
ARTIFICIAL_COMMIT = "1f653c9dfc17245aae30bde9b870c9cc6fc9b2b2"


@dataclass(frozen=True)
class Source:
    """A downloadable dataset: ``url = base_url + "/" + remote_name``; ``expect`` maps folders of the unpacked
    tree to their number of audio files (None: at least one)."""

    name: str
    base_url: str
    remote_name: str
    archive: str
    target: str
    md5: str | None = None
    sha256: str | None = None
    expect: dict[str, int | None] = field(default_factory=dict)
    notes: str = ""

    def url(self, base_url: str | None = None) -> str:
        return (base_url or self.base_url).rstrip("/") + "/" + self.remote_name


SOURCES: dict[str, Source] = {
    "artificial-speech": Source(
        name="artificial-speech",
        base_url="https://codeload.github.com/fdenoodt/Artificial-Speech-Dataset/zip",
        remote_name=ARTIFICIAL_COMMIT,
        archive=f"artificial-speech-{ARTIFICIAL_COMMIT[:7]}.zip",
        target="artificial-speech",
        expect={"reshuffledv2/train": 680, "reshuffledv2/test": 171,
                "split up data padded/train": 2181, "split up data padded/test": 360},
        notes="licence CC-BY-NC-SA-4.0 (non-commercial, share-alike); recordings by Bart de Boer",
    ),
    "librispeech": Source(
        name="librispeech",
        base_url="https://www.openslr.org/resources/12",
        remote_name="train-clean-100.tar.gz",
        archive="train-clean-100.tar.gz",
        target="LibriSpeech",
        md5="2a93770f6d5c6c964bc36631d331a522",
        expect={"train-clean-100": None},
        notes=("the CPC split and phone files (train_split.txt, test_split.txt, converted_aligned_phones.txt) are "
               "shared through Google Drive links in the Greedy InfoMax README (github.com/loeweX/Greedy_InfoMax) "
               "and cannot be downloaded without a browser: download them by hand and put them in {target}"),
    ),
}


def _say(log: Callable[[str], None] | None, text: str) -> None:
    if log is not None:
        log(text)


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: Path, *, md5: str | None = None, sha256: str | None = None) -> None:
    """Raise UserError when ``path`` does not match the given digests (None: not checked)."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        got = file_digest(path, algorithm)
        if got.lower() != expected.lower():
            raise UserError(f"{path}: {algorithm} checksum is {got}, expected {expected}; the file is damaged or not "
                            f"the right archive, delete it and download again")


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc or url


def _unreachable(url: str, reason: object) -> UserError:
    text = getattr(reason, "reason", reason)
    return UserError(f"cannot reach {_host(url)}: {text}; download {url} by hand and pass --from FILE")


def download(url: str, dest: str | os.PathLike[str], *, md5: str | None = None, sha256: str | None = None,
             timeout: float = 30, log: Callable[[str], None] | None = None) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed with an HTTP Range request when it exists),
    verify the checksums and rename into place. Returns ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        verify_checksum(dest, md5=md5, sha256=sha256)
        return dest
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "smooth-infomax", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    complete = False
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part file is complete
            complete = True
            response = None
        else:
            raise UserError(f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the URL or download it "
                            f"by hand and pass --from FILE") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _unreachable(url, exc) from None
    if response is not None:
        with response:
            status = getattr(response, "status", 200)
            start = 0
            if status == 206:
                rng = response.headers.get("Content-Range", "")
                try:
                    start = int(rng.split()[1].split("-")[0])
                except (IndexError, ValueError):
                    start = -1
                if start != have:
                    raise UserError(f"download of {url}: the server resumed at byte {start}, not {have}; delete {part} "
                                    f"and run again")
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            written = 0
            if start:
                _say(log, f"resuming {url} at {start} bytes")
            else:
                _say(log, f"downloading {url}")
            try:
                with open(part, "ab" if start else "wb") as fh:
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        fh.write(block)
                        written += len(block)
            except (TimeoutError, OSError) as exc:
                raise UserError(f"download of {url} stopped after {start + written} bytes ({exc}); "
                                f"run the same command "
                                f"again to resume") from None
            if expected is not None and written != expected:
                raise UserError(f"download of {url} stopped after {start + written} of {start + expected} bytes; "
                                f"run the "
                                f"same command again to resume")
            complete = True
    if complete:
        try:
            verify_checksum(part, md5=md5, sha256=sha256)
        except UserError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
    return dest


# ------------------------------------------------------------------------------------------------------
# Safe extraction
# ------------------------------------------------------------------------------------------------------


def _safe_member(name: str, archive: Path) -> str:
    clean = name.replace("\\", "/")
    pure = PurePosixPath(clean)
    if clean.startswith("/") or pure.is_absolute() or ".." in pure.parts or (len(clean) > 1 and clean[1] == ":"):
        raise UserError(f"{archive}: refusing to unpack member {name!r}, which points outside the target folder")
    return clean


def _inside(root: Path, target: Path) -> bool:
    try:
        target.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def extract(archive: str | os.PathLike[str], into: str | os.PathLike[str]) -> None:
    """Unpack a zip or tar(.gz/.bz2/.xz) archive into ``into``; raises UserError for damaged or unsafe archives."""
    archive, into = Path(archive), Path(into)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    _safe_member(member.filename, archive)
                    mode = (member.external_attr >> 16) & 0o170000
                    if mode == 0o120000:
                        raise UserError(f"{archive}: refusing to unpack the symbolic link {member.filename!r}")
                    if not _inside(into, into / member.filename):
                        raise UserError(f"{archive}: refusing to unpack member {member.filename!r}, which points "
                                        f"outside the target folder")
                    zf.extract(member, into)
            return
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                members = []
                for member in tf:
                    _safe_member(member.name, archive)
                    if not (member.isfile() or member.isdir()):
                        raise UserError(f"{archive}: refusing to unpack {member.name!r} (links and device files are "
                                        f"not allowed)")
                    if not _inside(into, into / member.name):
                        raise UserError(f"{archive}: refusing to unpack member {member.name!r}, which points outside "
                                        f"the target folder")
                    members.append(member)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(into, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(into, members=members)
            return
    except UserError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(f"{archive} cannot be unpacked ({exc}); the archive is damaged, delete it and download "
                        f"again") from None
    raise UserError(f"{archive} is not a zip or tar archive; pass the dataset's archive")


def _count_audio(folder: Path) -> int:
    n = 0
    for _, _, files in os.walk(folder):
        n += sum(1 for f in files if os.path.splitext(f)[1].lower() in AUDIO_SUFFIXES)
    return n


def check_tree(source: Source, folder: Path) -> None:
    """Raise UserError when ``folder`` lacks the folders (or file counts) ``source.expect`` lists."""
    for rel, count in source.expect.items():
        sub = folder / rel
        if not sub.is_dir():
            raise UserError(f"{folder}: missing folder {rel!r}; this is not a complete {source.name} download, "
                            f"delete it and fetch again")
        found = _count_audio(sub)
        if (count is None and found == 0) or (count is not None and found != count):
            want = "at least 1" if count is None else str(count)
            raise UserError(f"{sub}: holds {found} audio files, expected {want}; delete {folder} and fetch again")


def _top_folder(tmp: Path) -> Path:
    entries = [e for e in tmp.iterdir() if not e.name.startswith("__MACOSX")]
    dirs = [e for e in entries if e.is_dir()]
    if len(dirs) == 1 and all(e.is_dir() or e.name.startswith(".") for e in entries):
        return dirs[0]
    return tmp


def fetch(name: str, to: str | os.PathLike[str], *, base_url: str | None = None, timeout: float = 30,
          from_file: str | os.PathLike[str] | None = None, keep_archive: bool = False,
          log: Callable[[str], None] | None = None) -> Path:
    """Download (or take ``from_file``), verify and unpack dataset ``name`` into ``<to>/<target>``.

    Returns the dataset folder. An existing complete folder is kept as is. ``base_url`` replaces the source's
    server (a mirror); the downloaded archive is deleted after unpacking unless ``keep_archive``.
    """
    if name not in SOURCES:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(SOURCES)}")
    source = SOURCES[name]
    to = Path(to)
    final = to / source.target
    notes = source.notes.format(target=final)
    if final.exists():
        check_tree(source, final)
        _say(log, f"{final} is already there")
        if notes:
            _say(log, f"note: {notes}")
        return final
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--to {to}: cannot create the folder ({exc.strerror})") from None
    downloaded = False
    if from_file is not None:
        archive = Path(from_file)
        if not archive.is_file():
            raise UserError(f"--from {archive} does not exist; pass the downloaded archive")
        verify_checksum(archive, md5=source.md5, sha256=source.sha256)
    else:
        archive = download(source.url(base_url), to / source.archive, md5=source.md5, sha256=source.sha256,
                           timeout=timeout, log=log)
        downloaded = True
    tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{name}-", dir=to))
    try:
        _say(log, f"unpacking {archive}")
        extract(archive, tmp)
        top = _top_folder(tmp)
        check_tree(source, top)
        os.replace(top, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if downloaded and not keep_archive:
        archive.unlink(missing_ok=True)
    _say(log, f"{name} -> {final}")
    if notes:
        _say(log, f"note: {notes}")
    return final
