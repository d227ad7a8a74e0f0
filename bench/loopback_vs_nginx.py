"""A 1 GiB warehouse-to-worker transfer on plain loopback, uncapped, as a ratio to curl
downloading the same file from nginx in the same run (issue 21's goals: >= 0.8 written to disk,
>= 1.0 to tmpfs), with the CPU seconds of both downloaders.

    .venv/bin/python bench/loopback_vs_nginx.py [--size BYTES] [--runs N]

The XWCH side is the real thing: the warehouse's routes (each packet's XXH3-64 computed in its
thread pool over the mapped file, the packet sent from the file with sendfile) in one process, a
worker's ``download_object`` into its cache (paced packets, delay control, part file hashed and
written in two threads off the reactor, verified, renamed; no fsync, as
the worker's cache does: it is dropped if a machine crash may have torn it) in another, with
the packet size the communication manager publishes for a link this fast (8 MiB). curl writes
its file without an fsync too; the ratio is also given against curl followed by an fsync. Installs nginx with apt-get if it can (root); says so
and exits 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.netlab import make_object

ROOT = Path(__file__).resolve().parent.parent
PACKET = 8 * 1024 * 1024


def ensure_tools() -> str | None:
    """Why nginx or curl cannot be used (None: they can), installing nginx if root."""
    if shutil.which("nginx") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        for package in ("nginx-light", "nginx"):
            done = subprocess.run(
                ["apt-get", "install", "-y", "-q", package], capture_output=True, text=True
            )
            if done.returncode == 0:
                break
    if shutil.which("nginx") is None:
        return "nginx is not installed and could not be (apt-get install nginx-light, as root)"
    if shutil.which("curl") is None:
        return "curl is not installed"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(folder: Path, www: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    # As root nginx would serve as "nobody", who cannot read a private temporary folder.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""{user}worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/logs/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  sendfile on;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  server {{ listen 127.0.0.1:{port}; root {www}; }}
}}
"""
    )
    popen = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(folder)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return popen, port
        except OSError:
            time.sleep(0.05)
    popen.kill()
    raise RuntimeError("nginx did not start")


def children_cpu() -> float:
    """CPU seconds of the children waited for so far (curl's, or the XWCH download's)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def curl_once(url: str, dest: Path) -> tuple[float, float, float]:
    """Seconds curl took, seconds with an fsync of the file after, and curl's CPU seconds."""
    dest.unlink(missing_ok=True)
    cpu = children_cpu()
    done = subprocess.run(
        ["curl", "-sf", "-o", str(dest), "-w", "%{time_total}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    took = float(done.stdout)
    cpu = children_cpu() - cpu
    if dest.stat().st_size == 0:
        raise RuntimeError("curl got an empty file")
    started = time.monotonic()
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return took, took + time.monotonic() - started, cpu


def xwch_once(url: str, digest: str, size: int, dest: Path) -> tuple[float, float]:
    """Seconds the worker's download took, and its process's CPU seconds (start-up included)."""
    dest.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cpu = children_cpu()
    done = subprocess.run(
        [sys.executable, "-m", "bench.netlab", "fetch", url, digest, str(size), str(dest),
         "--packet-size", str(PACKET), "--every", "60"],
        capture_output=True, text=True, env=env, cwd=str(ROOT), check=True,
    )  # fmt: skip
    cpu = children_cpu() - cpu
    for line in done.stdout.splitlines():
        doc = json.loads(line)
        if doc.get("done"):
            return float(doc["seconds"]), cpu
    raise RuntimeError(f"the XWCH download did not finish: {done.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024**3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    why = ensure_tools()
    if why:
        print(f"skipped: {why}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = folder / "warehouse"
        digest, size = make_object(store, args.size)
        www = folder / "www"
        www.mkdir()
        # The very same bytes (a hard link), so both servers read the same file from the cache.
        os.link(store / "objects" / digest[:2] / digest, www / "object.bin")
        nginx, nginx_port = start_nginx(folder / "nginx", www)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        warehouse = subprocess.Popen(
            [sys.executable, "-m", "bench.netlab", "serve", str(store), "--host", "127.0.0.1"],
            stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT),
        )  # fmt: skip
        try:
            assert warehouse.stdout is not None
            port = json.loads(warehouse.stdout.readline())["port"]
            url = f"http://127.0.0.1:{port}"
            curl_url = f"http://127.0.0.1:{nginx_port}/object.bin"
            curl_once(curl_url, folder / "warm.bin")  # warm the page cache
            (folder / "warm.bin").unlink()
            places = [("disk", folder)]
            shm = Path("/dev/shm")
            if shm.is_dir() and shutil.disk_usage(shm).free > 3 * size:
                places.append(("tmpfs (no disk)", Path(tempfile.mkdtemp(dir=shm))))
            gib = size / 1024**3
            print(f"{gib:.2f} GiB on loopback, {args.runs} runs each, medians:")
            for where, place in places:
                dest = place / "dest.bin"
                curls, synced, xwch, curl_cpu, xwch_cpu = [], [], [], [], []
                try:
                    for _ in range(args.runs):
                        took, with_sync, cpu = curl_once(curl_url, dest)
                        curls.append(took)
                        synced.append(with_sync)
                        curl_cpu.append(cpu)
                        took, cpu = xwch_once(url, digest, size, dest)
                        xwch.append(took)
                        xwch_cpu.append(cpu)
                finally:
                    dest.unlink(missing_ok=True)
                    if place != folder:
                        shutil.rmtree(place, ignore_errors=True)
                c, s, x = (statistics.median(v) for v in (curls, synced, xwch))
                print(f"  files written to {where}:")
                print(f"    curl from nginx        : {c:.2f} s ({size / c / 1e6:.0f} MB/s)")
                print(f"    curl then fsync        : {s:.2f} s ({size / s / 1e6:.0f} MB/s)")
                print(f"    XWCH warehouse->worker : {x:.2f} s ({size / x / 1e6:.0f} MB/s)")
                goal = 0.8 if place == folder else 1.0
                print(f"    ratio to curl          : {c / x:.2f} (goal >= {goal})")
                print(f"    ratio to curl + fsync  : {s / x:.2f}")
                print(
                    f"    CPU seconds            : curl {statistics.median(curl_cpu):.2f}, "
                    f"XWCH download {statistics.median(xwch_cpu):.2f} (its process's start "
                    "included), warehouse not counted"
                )
                print(
                    "    runs (s): curl " + " ".join(f"{t:.2f}" for t in curls)
                    + " | XWCH " + " ".join(f"{t:.2f}" for t in xwch)
                )  # fmt: skip
        finally:
            warehouse.terminate()
            warehouse.wait()
            nginx.terminate()
            nginx.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
