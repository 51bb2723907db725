"""Download, resume, checksum and unpacking, against a local HTTP server on 127.0.0.1 (no real network)."""

import dataclasses
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import zipfile

import pytest

from conftest import write_audio
from smooth_infomax.cli import main
from smooth_infomax.data import fetch as fetch_mod
from smooth_infomax.data.fetch import download, extract, fetch
from smooth_infomax.errors import UserError

TOP = "Artificial-Speech-Dataset-1f653c9"
FOLDERS = {"reshuffledv2/train": 2, "reshuffledv2/test": 1, "split up data padded/train": 3,
           "split up data padded/test": 1}


def artificial_zip(tmp_path) -> bytes:
    wav = write_audio(tmp_path / "src.wav", 441, 44100).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{TOP}/README.md", "dataset\n")
        for folder, n in FOLDERS.items():
            for i in range(n):
                zf.writestr(f"{TOP}/{folder}/bababa_{i + 1}.wav", wav)
    return buf.getvalue()


@pytest.fixture
def small_artificial(monkeypatch):
    src = dataclasses.replace(fetch_mod.SOURCES["artificial-speech"], expect=dict(FOLDERS))
    monkeypatch.setitem(fetch_mod.SOURCES, "artificial-speech", src)
    return src


class Server:
    """Serves ``payload`` at any path; honours Range unless ``ranges`` is False; records Range headers."""

    def __init__(self, payload: bytes, ranges: bool = True):
        self.payload, self.ranges, self.seen = payload, ranges, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get("Range")
                outer.seen.append(rng)
                body, status = outer.payload, 200
                if rng and outer.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    body, status = body[start:], 206
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_fetch_downloads_and_unpacks(tmp_path, small_artificial):
    payload = artificial_zip(tmp_path)
    with Server(payload) as srv:
        out = fetch("artificial-speech", tmp_path / "data", base_url=srv.url)
    assert out == tmp_path / "data" / "artificial-speech"
    assert len(list((out / "split up data padded" / "train").glob("*.wav"))) == 3
    assert (out / "README.md").is_file()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["artificial-speech"]  # no archive, no temp
    assert fetch("artificial-speech", tmp_path / "data", base_url="http://127.0.0.1:1") == out  # already there


def test_download_resumes_with_range(tmp_path):
    payload = bytes(range(256)) * 400
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(payload[:30000])
    with Server(payload) as srv:
        download(srv.url + "/file.bin", dest, sha256=hashlib.sha256(payload).hexdigest())
    assert srv.seen == ["bytes=30000-"] and dest.read_bytes() == payload
    assert not (tmp_path / "file.bin.part").exists()


def test_download_restarts_when_server_ignores_range(tmp_path):
    payload = b"abcdef" * 1000
    (tmp_path / "f.part").write_bytes(b"XXXX")
    with Server(payload, ranges=False) as srv:
        download(srv.url + "/f", tmp_path / "f", md5=hashlib.md5(payload).hexdigest())
    assert (tmp_path / "f").read_bytes() == payload


def test_complete_part_file_and_bad_checksum(tmp_path):
    payload = b"0123456789" * 100
    (tmp_path / "g.part").write_bytes(payload)
    with Server(payload) as srv:
        download(srv.url + "/g", tmp_path / "g", md5=hashlib.md5(payload).hexdigest())  # 416: already complete
        assert (tmp_path / "g").read_bytes() == payload
        with pytest.raises(UserError, match="md5 checksum"):
            download(srv.url + "/h", tmp_path / "h", md5="0" * 32)
    assert not (tmp_path / "h.part").exists() and not (tmp_path / "h").exists()


def test_no_network_is_one_line(tmp_path):
    port = closed_port()
    with pytest.raises(UserError) as exc:
        fetch("librispeech", tmp_path, base_url=f"http://127.0.0.1:{port}", timeout=5)
    msg = str(exc.value)
    assert msg.startswith(f"cannot reach 127.0.0.1:{port}") and "--from FILE" in msg and "\n" not in msg
    assert "train-clean-100.tar.gz" in msg


def test_librispeech_from_file(tmp_path, monkeypatch, capsys):
    flac = write_audio(tmp_path / "u.flac", 1600)
    archive = tmp_path / "train-clean-100.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(flac, arcname="LibriSpeech/train-clean-100/19/198/19-198-0000.flac")
        info = tarfile.TarInfo("LibriSpeech/SPEAKERS.TXT")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"19\n"))
    src = dataclasses.replace(fetch_mod.SOURCES["librispeech"], md5=hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setitem(fetch_mod.SOURCES, "librispeech", src)
    code = main(["data", "fetch", "librispeech", "--to", str(tmp_path / "d"), "--from", str(archive)])
    out = capsys.readouterr().out
    assert code == 0 and (tmp_path / "d" / "LibriSpeech" / "train-clean-100" / "19" / "198").is_dir()
    assert "train_split.txt" in out and "Greedy_InfoMax" in out
    assert archive.is_file()  # a user's archive is never deleted
    monkeypatch.setitem(fetch_mod.SOURCES, "librispeech", dataclasses.replace(src, md5="f" * 32))
    assert main(["data", "fetch", "librispeech", "--to", str(tmp_path / "e"), "--from", str(archive)]) == 2
    assert "md5 checksum" in capsys.readouterr().err


def test_unsafe_archives_are_refused(tmp_path):
    evil_zip = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil_zip, "w") as zf:
        zf.writestr("ok/../../escape.txt", "x")
    with pytest.raises(UserError, match="outside"):
        extract(evil_zip, tmp_path / "out1")
    evil_tar = tmp_path / "evil.tar"
    with tarfile.open(evil_tar, "w") as tf:
        link = tarfile.TarInfo("top/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(UserError, match="links"):
        extract(evil_tar, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not an archive")
    with pytest.raises(UserError, match="not a zip or tar"):
        extract(junk, tmp_path / "out3")


def test_structure_is_checked(tmp_path, small_artificial, monkeypatch):
    archive = tmp_path / "a.zip"
    archive.write_bytes(artificial_zip(tmp_path))
    wrong = dataclasses.replace(small_artificial, expect={**FOLDERS, "reshuffledv2/test": 5})
    monkeypatch.setitem(fetch_mod.SOURCES, "artificial-speech", wrong)
    with pytest.raises(UserError, match="expected 5"):
        fetch("artificial-speech", tmp_path / "d", from_file=archive)
    assert not (tmp_path / "d" / "artificial-speech").exists()
    assert [p.name for p in (tmp_path / "d").iterdir()] == []  # temporary folder removed


def test_cli_errors(tmp_path, capsys):
    assert main(["data", "fetch", "nope", "--to", str(tmp_path)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["data", "fetch", "artificial-speech", "--to", str(tmp_path), "--from", str(tmp_path / "x.zip")]) == 2
    assert "x.zip does not exist" in capsys.readouterr().err
