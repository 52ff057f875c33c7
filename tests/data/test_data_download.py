"""The downloader against a loopback HTTP server (127.0.0.1 only; never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import pickle
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from edgeadapt.data import download
from edgeadapt.data.cifar import load_cifar10
from edgeadapt.data.download import download_url
from edgeadapt.data.errors import ChecksumError, DownloadError


class _Handler(http.server.SimpleHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        if self.path == "/unsized":  # a body with no Content-Length, ended by closing
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 5000)
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()
    _Handler.hits = 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=root))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _tiny_cifar_archive(path: Path) -> str:
    """A cifar-10-python.tar.gz with 2 images per batch; returns its md5."""
    folder = path.parent / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = np.full((2, 3072), len(name), np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=2))
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return hashlib.md5(path.read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_good_checksum_then_reuse(server, tmp_path: Path) -> None:
    url, root = server
    md5 = _tiny_cifar_archive(root / "cifar-10-python.tar.gz")
    dest = tmp_path / "dl" / "cifar-10-python.tar.gz"
    got = download_url(f"{url}/cifar-10-python.tar.gz", dest, md5, max_bytes=10**6)
    assert got == dest and dest.read_bytes() == (root / "cifar-10-python.tar.gz").read_bytes()
    assert _leftovers(dest.parent) == [dest.name]  # no temporary file left over
    x, y = load_cifar10(dest, "test")
    assert x.shape == (2, 32, 32, 3) and list(y) == [1, 2]
    download_url(f"{url}/cifar-10-python.tar.gz", dest, md5, max_bytes=10**6)
    assert _Handler.hits == 1  # the verified file was kept, not fetched again


def test_download_bad_checksum_leaves_nothing(server, tmp_path: Path) -> None:
    url, root = server
    (root / "file.bin").write_bytes(b"payload")
    dest = tmp_path / "dl" / "file.bin"
    with pytest.raises(ChecksumError, match="md5"):
        download_url(f"{url}/file.bin", dest, "0" * 32, max_bytes=100)
    assert _leftovers(dest.parent) == []


def test_download_size_bound(server, tmp_path: Path) -> None:
    url, root = server
    (root / "big.bin").write_bytes(b"y" * 5000)
    md5 = hashlib.md5(b"y" * 5000).hexdigest()
    dest = tmp_path / "dl" / "big.bin"
    with pytest.raises(DownloadError, match="max_bytes"):  # declared by Content-Length
        download_url(f"{url}/big.bin", dest, md5, max_bytes=4999)
    with pytest.raises(DownloadError, match="more than max_bytes"):  # counted while streaming
        download_url(f"{url}/unsized", dest, md5, max_bytes=4000)
    assert _leftovers(dest.parent) == []


def test_download_refuses_other_schemes_and_reports_network_errors(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="http"):
        download_url(f"file://{tmp_path}/x", tmp_path / "x", "0" * 32, max_bytes=10)
    with pytest.raises(DownloadError, match="cannot fetch"):
        download_url("http://127.0.0.1:9/none", tmp_path / "y", "0" * 32, max_bytes=10, timeout=2)


def test_official_constants() -> None:
    assert download.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"
    assert download.CIFAR10C_MD5 == "56bf5dcef84df0e2308c6dcbcbbd8499"
    assert "2535967" in download.CIFAR10C_URL and download.CIFAR10_URL.endswith(".tar.gz")
