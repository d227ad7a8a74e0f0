"""The multi-site word count of issue 4: bytes moved across sites, and makespan.

Word count over 96 shards of 8 MiB spread across 3 warehouses in 3 sites (32 at each, staged
before the job), the links between sites shaped slower than within a site (see
``bench/sitelab.py``), run by XWCH under each scheduling policy and by Dask distributed with the
same workers per site and the same native programs::

    sudo .venv/bin/python bench/sites_wordcount.py [--runs N] [--policies fifo,locality,dask]
    sudo .venv/bin/python bench/sites_wordcount.py --shards 12 --shard-mib 1    (a smoke run)

Each run starts a fresh platform: in the ``hub`` namespace a coordinator (``--replicas 1``, so
replication copies nothing across sites by itself; ``--scheduler POLICY`` when the coordinator
has that option) and the client; in each site a warehouse and ``--workers`` workers of
``--slots`` slots, all ``--site site-X``. The shards are uploaded at their site's warehouse
(the uploads route with a ``site``) and their places checked; then the client submits the job
(96 ``wc-map`` tasks and a ``wc-reduce``; it finds every shard stored and uploads only the two
programs) and waits for it. Figures:

- **makespan**: from the job's creation to its end (the coordinator's ``created`` and
  ``ended``; Dask: from the first map submitted to the reduce's result at the client);
- **cross-site MiB**: what crossed the router from a site to another site during the job, from
  the router's interface counters (Ethernet frames: data, headers and acks), whatever the
  platform believes; **hub MiB** is the coordinator's and the client's traffic with the sites
  (control, the programs, the result), counted apart;
- **maps at home**: maps run at the site that holds their shard.

The final counts of every run are checked against a direct count in Python. Data is generated
once (fixed seed) into a cache folder under the temporary directory. Needs root (namespaces):
says so and exits 2 otherwise. The figures are noisy on a small machine shared with others.

Dask runs use ``distributed`` (the ``bench`` extra: ``pip install -e '.[bench]'``): a scheduler
in the hub, workers in the sites (``--nthreads`` = ``--slots``), each site's shards read into
memory by tasks pinned to that site's workers (staging, not counted), then the maps submitted
without restrictions, so that Dask's own scheduler places them next to their data.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.netlab import ROOT, lab_unavailable, stop_process
from bench.sitelab import DELAY, HUB, RATE, SITES, Service, SiteLab

MIB = 1 << 20
SEED = 4
VOCABULARY = 5000
NATIVE = ROOT / "native" / "build"
CACHE = Path(tempfile.gettempdir()) / "xwch-sites-wordcount"
JOB_TIMEOUT = 1800.0


# -- the data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    index: int
    path: str
    digest: str
    size: int
    site: str


@dataclass(frozen=True)
class Dataset:
    shards: list[Shard]
    map_digests: list[str]  # of each shard's wc-map output
    expected_sha256: str  # of the expected wc-reduce output
    words: int
    distinct: int


def _vocabulary(seed: int) -> tuple[list[bytes], list[float]]:
    """Words of 2 to 9 letters, and the cumulative weights of a Zipf law over them."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    weights = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(ordered))))
    return [w.encode() for w in ordered], weights


def _shard_text(vocabulary: tuple[list[bytes], list[float]], seed: int, size: int) -> bytes:
    """``size`` bytes of words, twelve a line; the last word may be cut short (still a word)."""
    words, weights = vocabulary
    rng = random.Random(seed)
    text = b""
    while len(text) < size:
        drawn = rng.choices(words, cum_weights=weights, k=size // 5)
        lines = (b" ".join(drawn[i : i + 12]) for i in range(0, len(drawn), 12))
        text += b"\n".join(lines) + b"\n"
    return text[: size - 1] + b"\n"


def prepare(count: int, size: int, seed: int, sites: tuple[str, ...]) -> Dataset:
    """The shards (generated on first use into the cache) and the expected counts.

    Shard i is stored at site ``i mod len(sites)``: every site holds a third, interleaved, as
    a job's inputs uploaded from everywhere would be.
    """
    folder = CACHE / f"seed{seed}-{count}x{size}"
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"generating {count} shards of {size / MIB:g} MiB into {folder} ...", flush=True)
        vocabulary = _vocabulary(seed)
        totals: collections.Counter[bytes] = collections.Counter()
        digests = []
        for i in range(count):
            text = _shard_text(vocabulary, seed * 1_000_003 + i, size)
            # wc-map's words are runs of [a-z0-9]; these texts have only those and separators.
            totals.update(text.split())
            (folder / f"shard-{i}.txt").write_bytes(text)
            digests.append(hashlib.sha256(text).hexdigest())
        expected = b"".join(w + b"\t%d\n" % n for w, n in sorted(totals.items()))
        meta = {
            "digests": digests,
            "expected_sha256": hashlib.sha256(expected).hexdigest(),
            "words": sum(totals.values()),
            "distinct": len(totals),
        }
        meta_path.write_text(json.dumps(meta))
    meta = json.loads(meta_path.read_text())
    if "map_digests" not in meta:
        meta["map_digests"] = [_map_digest(folder / f"shard-{i}.txt") for i in range(count)]
        meta_path.write_text(json.dumps(meta))
    shards = [
        Shard(i, str(folder / f"shard-{i}.txt"), d, size, sites[i % len(sites)])
        for i, d in enumerate(meta["digests"])
    ]
    return Dataset(
        shards, meta["map_digests"], meta["expected_sha256"], meta["words"], meta["distinct"]
    )


def _map_digest(shard: Path) -> str:
    """The digest of wc-map's output for ``shard`` (the object a map task stores)."""
    with tempfile.TemporaryDirectory(prefix="wc-map-") as tmp:
        out = Path(tmp) / "counts.tsv"
        subprocess.run([str(NATIVE / "wc-map"), str(shard), str(out)], check=True,
                       capture_output=True)  # fmt: skip
        return _sha256(out)


def write_job(path: Path, dataset: Dataset) -> None:
    """The job file: a map per shard, one reduce of them all (like examples/wordcount)."""
    count = len(dataset.shards)
    job = {
        "name": "sites-wordcount",
        "binaries": {"map": str(NATIVE / "wc-map"), "reduce": str(NATIVE / "wc-reduce")},
        "files": {f"shard-{s.index}": s.path for s in dataset.shards},
        "tasks": [
            {
                "id": "map-{i}",
                "foreach": {"i": {"range": [0, count]}},
                "binary": "map",
                "args": ["shard.txt", "counts.tsv"],
                "inputs": {"shard.txt": "shard-{i}"},
                "outputs": ["counts.tsv"],
            },
            {
                "id": "reduce",
                "binary": "reduce",
                "args": ["counts", "total.tsv"],
                "inputs": {"counts/": "map-*/counts.tsv"},
                "outputs": ["total.tsv"],
            },
        ],
        "results": ["reduce/total.tsv"],
    }
    path.write_text(json.dumps(job, indent=1))


# -- one run -------------------------------------------------------------------------------


@dataclass
class Outcome:
    policy: str
    run: int
    makespan: float
    cross_site: int  # bytes from a site to another, router counters
    hub: int  # bytes between the hub (coordinator, client, Dask scheduler) and the sites
    maps_at_home: int
    maps: int
    correct: bool
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    workers: int
    slots: int
    scheduler_option: bool  # whether xwch-coordinator has --scheduler


def _site_of(worker_name: str | None) -> str | None:
    return worker_name.rsplit("-w", 1)[0] if worker_name else None


def _held(folder: Path) -> dict[str, int]:
    """The objects a warehouse's data folder holds: digest -> size."""
    objects = folder / "objects"
    if not objects.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in objects.glob("*/*") if p.is_file()}


def run_xwch(
    lab: SiteLab, dataset: Dataset, policy: str, run: int, settings: Settings, tmp: Path
) -> Outcome:
    from xwch.coordinator.__main__ import create_token
    from xwch.store.database import default_url

    home = tmp / f"run{run}-{policy}"
    logs = home / "logs"
    (home / "coordinator").mkdir(parents=True)
    db = default_url(home / "coordinator")
    tokens = {r: create_token(db, r, f"bench {r}") for r in ("client", "worker", "warehouse")}
    env = dict(os.environ, XWCH_HOME=str(home))
    py = sys.executable
    services: list[Service] = []

    def start(side: str, name: str, argv: list[str], marker: str) -> str:
        service = lab.start(side, name, argv, logs / f"{name}.log", env=env)
        services.append(service)
        return service.wait_for(marker)

    try:
        coordinator = [
            py,
            "-m",
            "xwch.coordinator",
            "--data",
            str(home / "coordinator"),
            "--listen",
            f"tcp:0:interface={lab.address(HUB)}",
            "--replicas",
            "1",
            "--alive-interval",
            "2",
            "--heartbeat-interval",
            "2",
            "--warehouse-timeout",
            "10",
            "--scan-interval",
            "2",
        ]
        if settings.scheduler_option:
            coordinator += ["--scheduler", policy]
        url = start(HUB, "coordinator", coordinator, "xwch-coordinator listening on")
        for site in lab.sites:
            start(
                site,
                f"warehouse-{site}",
                [
                    py,
                    "-m",
                    "xwch.warehouse",
                    "--coordinator",
                    url,
                    "--token",
                    tokens["warehouse"],
                    "--data",
                    str(home / f"warehouse-{site}"),
                    "--listen",
                    f"tcp:0:interface={lab.address(site)}",
                    "--site",
                    site,
                ],
                "xwch-warehouse listening on",
            )
        for site in lab.sites:
            for k in range(settings.workers):
                name = f"{site}-w{k}"
                start(
                    site,
                    f"worker-{name}",
                    [
                        py,
                        "-m",
                        "xwch.worker",
                        "--coordinator",
                        url,
                        "--token",
                        tokens["worker"],
                        "--slots",
                        str(settings.slots),
                        "--data",
                        str(home / f"worker-{name}"),
                        "--site",
                        site,
                        "--name",
                        name,
                    ],
                    "xwch-worker registered as",
                )
        stage(lab, dataset, url, tokens["client"], home)
        job_file = home / "job.json"
        write_job(job_file, dataset)
        out = home / "results"
        before = lab.counters()
        client = lab.popen(
            HUB,
            [
                py,
                "-m",
                "xwch.client",
                "--coordinator",
                url,
                "--token",
                tokens["client"],
                "submit",
                "--wait",
                "-o",
                str(out),
                str(job_file),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=(logs / "client.log").open("ab"),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            answer, _ = client.communicate(timeout=JOB_TIMEOUT)
        finally:
            stop_process(client)
        after = lab.counters()
        if client.returncode != 0:
            raise RuntimeError(f"the job failed ({client.returncode}); see {logs}")
        job_id = answer.split()[0]
        summary = lab.helper(HUB, "get", url, tokens["client"], f"/api/v1/jobs/{job_id}")
        tasks = lab.helper(HUB, "get", url, tokens["client"], f"/api/v1/jobs/{job_id}/tasks")[
            "tasks"
        ]
        home_site = {f"map-{s.index}": s.site for s in dataset.shards}
        ran_at = {t["id"]: _site_of(t.get("worker")) for t in tasks}
        held = {site: _held(home / f"warehouse-{site}") for site in lab.sites}
        # Where each map stored its output: at the warehouse of the site it ran in, or not.
        outputs_home = sum(
            1
            for s, digest in zip(dataset.shards, dataset.map_digests, strict=True)
            if digest in held.get(str(ran_at.get(f"map-{s.index}")), {})
        )
        traffic = lab.traffic(before, after)
        total = out / "reduce" / "total.tsv"
        correct = total.exists() and _sha256(total) == dataset.expected_sha256
        return Outcome(
            policy=policy,
            run=run,
            makespan=float(summary["ended"]) - float(summary["created"]),
            cross_site=traffic.between_sites,
            hub=traffic.hub,
            maps_at_home=sum(1 for t, s in home_site.items() if ran_at.get(t) == s),
            maps=len(home_site),
            correct=correct,
            notes={
                "reduce_site": ran_at.get("reduce"),
                "maps_by_site": dict(collections.Counter(ran_at[t] for t in home_site)),
                "map_outputs_stored_where_run": f"{outputs_home}/{len(dataset.shards)}",
                "link_bytes": traffic.per_link,
            },
        )
    finally:
        lab.stop(services)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stage(lab: SiteLab, dataset: Dataset, url: str, token: str, home: Path) -> None:
    """Upload each site's shards at its warehouse, all sites at once; check their places."""

    def one(site: str) -> Any:
        manifest = home / f"stage-{site}.json"
        items = [asdict(s) for s in dataset.shards if s.site == site]
        manifest.write_text(json.dumps(items))
        return lab.helper(site, "stage", url, token, site, str(manifest))

    with ThreadPoolExecutor(len(lab.sites)) as pool:
        answers = list(pool.map(one, lab.sites))
    for answer in answers:
        if answer["misplaced"] or answer["present"]:
            raise RuntimeError(f"staging did not place every shard at its site: {answer}")


# -- Dask ----------------------------------------------------------------------------------


def load_shard(path: str) -> bytes:
    return Path(path).read_bytes()


def wc_map(shard: bytes, program: str) -> tuple[bytes, str]:
    """wc-map on ``shard``: its counts, and the name of the worker that ran it."""
    from distributed import get_worker

    with tempfile.TemporaryDirectory(prefix="wc-map-") as tmp:
        (Path(tmp) / "shard.txt").write_bytes(shard)
        subprocess.run(
            [program, "shard.txt", "counts.tsv"], cwd=tmp, check=True, capture_output=True
        )
        return (Path(tmp) / "counts.tsv").read_bytes(), str(get_worker().name)


def wc_reduce(program: str, *counts: tuple[bytes, str]) -> tuple[bytes, str, list[str]]:
    """wc-reduce of the maps' counts: the total, the worker that ran it, the maps' workers (so
    that the client need not fetch the maps' outputs to learn where they ran)."""
    from distributed import get_worker

    with tempfile.TemporaryDirectory(prefix="wc-reduce-") as tmp:
        folder = Path(tmp) / "counts"
        folder.mkdir()
        for n, (data, _) in enumerate(counts):
            (folder / f"map-{n}.tsv").write_bytes(data)
        subprocess.run([program, "counts", "total.tsv"], cwd=tmp, check=True, capture_output=True)
        total = (Path(tmp) / "total.tsv").read_bytes()
        return total, str(get_worker().name), [name for _, name in counts]


def _dask_driver(plan_path: str) -> None:
    """In the hub: stage the shards at their sites' workers, say so, wait for ``go`` on standard
    input, then run the maps and the reduce and say how long it took."""
    from distributed import Client, wait

    import bench.sites_wordcount as me  # tasks pickled by reference, not as __main__'s

    plan = json.loads(Path(plan_path).read_text())
    with Client(plan["scheduler"]) as client:
        client.wait_for_workers(plan["workers"], timeout=120)
        workers = client.scheduler_info(n_workers=-1)["workers"]
        at_site: dict[str, list[str]] = collections.defaultdict(list)
        for address, info in workers.items():
            at_site[str(_site_of(str(info["name"])))].append(address)
        shards = [
            client.submit(
                me.load_shard,
                s["path"],
                key=f"shard-{s['index']}",
                workers=at_site[s["site"]],
                allow_other_workers=False,
            )
            for s in plan["shards"]
        ]
        wait(shards)
        print(json.dumps({"loaded": len(shards)}), flush=True)
        sys.stdin.readline()
        started = time.monotonic()
        maps = [
            client.submit(me.wc_map, shard, plan["map"], key=f"map-{s['index']}")
            for shard, s in zip(shards, plan["shards"], strict=True)
        ]
        total = client.submit(me.wc_reduce, plan["reduce"], *maps, key="reduce")
        data, reducer, ran = total.result()
        makespan = time.monotonic() - started
        Path(plan["out"]).write_bytes(data)
        at_home = sum(
            1 for s, n in zip(plan["shards"], ran, strict=True) if _site_of(n) == s["site"]
        )
        print(
            json.dumps(
                {
                    "makespan": makespan,
                    "maps_at_home": at_home,
                    "maps_by_site": dict(collections.Counter(_site_of(n) for n in ran)),
                    "reduce_site": _site_of(reducer),
                }
            ),
            flush=True,
        )


def run_dask(lab: SiteLab, dataset: Dataset, run: int, settings: Settings, tmp: Path) -> Outcome:
    home = tmp / f"run{run}-dask"
    logs = home / "logs"
    home.mkdir(parents=True)
    scheduler_file = home / "scheduler.json"
    py = sys.executable
    services: list[Service] = []
    quiet = dict(os.environ, DASK_DISTRIBUTED__LOGGING__DISTRIBUTED="warning")
    try:
        services.append(
            lab.start(
                HUB,
                "dask-scheduler",
                [
                    py,
                    "-m",
                    "distributed.cli.dask_scheduler",
                    "--host",
                    lab.address(HUB),
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(scheduler_file),
                ],
                logs / "scheduler.log",
            )
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            if time.monotonic() > deadline or services[0].popen.poll() is not None:
                raise RuntimeError(f"the Dask scheduler did not start; see {logs}")
            time.sleep(0.2)
        time.sleep(0.5)  # the file is written whole, but let it be
        address = json.loads(scheduler_file.read_text())["address"]
        for site in lab.sites:
            for k in range(settings.workers):
                name = f"{site}-w{k}"
                services.append(
                    lab.start(
                        site,
                        f"dask-{name}",
                        [
                            py,
                            "-m",
                            "distributed.cli.dask_worker",
                            address,
                            "--host",
                            lab.address(site),
                            "--nthreads",
                            str(settings.slots),
                            "--nworkers",
                            "1",
                            "--no-nanny",
                            "--no-dashboard",
                            "--name",
                            name,
                            "--local-directory",
                            str(home / name),
                        ],
                        logs / f"dask-{name}.log",
                    )
                )
        out = home / "total.tsv"
        plan = {
            "scheduler": address,
            "workers": len(lab.sites) * settings.workers,
            "shards": [asdict(s) for s in dataset.shards],
            "map": str(NATIVE / "wc-map"),
            "reduce": str(NATIVE / "wc-reduce"),
            "out": str(out),
        }
        (home / "plan.json").write_text(json.dumps(plan))
        driver = lab.popen(
            HUB,
            [py, "-m", "bench.sites_wordcount", "dask-driver", str(home / "plan.json")],
            env=quiet,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(logs / "driver.log").open("ab"),
            start_new_session=True,
        )
        try:
            assert driver.stdin is not None and driver.stdout is not None
            loaded = driver.stdout.readline()
            if not loaded:
                raise RuntimeError(f"the Dask driver failed to stage the shards; see {logs}")
            before = lab.counters()
            driver.stdin.write("go\n")
            driver.stdin.flush()
            done = driver.stdout.readline()
            after = lab.counters()
            if not done:
                raise RuntimeError(f"the Dask job failed; see {logs}")
            driver.wait(60)
        finally:
            stop_process(driver)
        report = json.loads(done)
        traffic = lab.traffic(before, after)
        return Outcome(
            policy="dask",
            run=run,
            makespan=float(report["makespan"]),
            cross_site=traffic.between_sites,
            hub=traffic.hub,
            maps_at_home=int(report["maps_at_home"]),
            maps=len(dataset.shards),
            correct=out.exists() and _sha256(out) == dataset.expected_sha256,
            notes={
                "reduce_site": report["reduce_site"],
                "maps_by_site": report["maps_by_site"],
                "link_bytes": traffic.per_link,
            },
        )
    finally:
        lab.stop(services)


# -- the bench -----------------------------------------------------------------------------


def _coordinator_has_scheduler_option() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "xwch.coordinator", "--help"], capture_output=True, text=True
    )
    return "--scheduler" in done.stdout


def report(outcomes: list[Outcome]) -> None:
    by_policy: dict[str, list[Outcome]] = collections.defaultdict(list)
    for o in outcomes:
        by_policy[o.policy].append(o)
    fifo = by_policy.get("fifo")
    base_bytes = statistics.median(o.cross_site for o in fifo) if fifo else None
    base_time = statistics.median(o.makespan for o in fifo) if fifo else None
    head = (
        f"{'policy':<9} {'run':>4} {'makespan s':>10} {'cross-site MiB':>14} {'hub MiB':>8} "
        f"{'maps at home':>12} {'bytes/FIFO':>10} {'time/FIFO':>9}  {'counts':<6}"
    )
    print()
    print(head)
    print("-" * len(head))

    def line(
        policy: str, run: str, makespan: float, cross: float, hub: float, home: str, ok: str
    ) -> None:
        ratio_b = f"{cross / base_bytes:.2f}x" if base_bytes else "-"
        ratio_t = f"{makespan / base_time:.2f}x" if base_time else "-"
        print(
            f"{policy:<9} {run:>4} {makespan:>10.1f} {cross / MIB:>14.1f} {hub / MIB:>8.2f} "
            f"{home:>12} {ratio_b:>10} {ratio_t:>9}  {ok:<6}"
        )

    for policy, runs in by_policy.items():
        for o in runs:
            line(
                policy,
                str(o.run),
                o.makespan,
                o.cross_site,
                o.hub,
                f"{o.maps_at_home}/{o.maps}",
                "ok" if o.correct else "WRONG",
            )
        if len(runs) > 1:
            line(
                policy,
                "med",
                statistics.median(o.makespan for o in runs),
                statistics.median(o.cross_site for o in runs),
                statistics.median(o.hub for o in runs),
                f"{statistics.median(o.maps_at_home for o in runs):g}/{runs[0].maps}",
                "ok" if all(o.correct for o in runs) else "WRONG",
            )
    print()
    for o in outcomes:
        print(f"{o.policy} run {o.run}: {json.dumps({k: v for k, v in o.notes.items()})}")


def _keep_logs(logs: Path) -> None:
    """Copy a failed run's logs out of the temporary folder, which is about to go."""
    if logs.is_dir():
        kept = CACHE / "failed" / f"{time.strftime('%Y%m%d-%H%M%S')}-{logs.parent.name}"
        shutil.copytree(logs, kept)
        print(f"the logs of the failed run are in {kept}", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dask-driver"]:
        _dask_driver(argv[1])
        return 0
    parser = argparse.ArgumentParser(
        prog="sites_wordcount.py",
        description="Word count over shards spread across 3 sites: cross-site bytes and "
        "makespan of XWCH's scheduling policies and of Dask distributed.",
    )
    parser.add_argument("--runs", type=int, default=1, metavar="N", help="runs of each policy")
    parser.add_argument(
        "--policies",
        default="fifo,locality,dask",
        help="comma-separated: XWCH scheduler names (passed as xwch-coordinator --scheduler) "
        "and 'dask' (default fifo,locality,dask; without --scheduler in the coordinator, "
        "'fifo' runs the coordinator as it is and other XWCH policies are skipped)",
    )
    parser.add_argument("--shards", type=int, default=96, metavar="N")
    parser.add_argument("--shard-mib", type=float, default=8.0, metavar="MIB")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="workers per site")
    parser.add_argument("--slots", type=int, default=1, metavar="K", help="slots per worker")
    parser.add_argument("--rate", default=RATE, help=f"each link's rate each way ({RATE})")
    parser.add_argument(
        "--delay",
        default=DELAY,
        help=f"one-way delay between two namespaces ({DELAY}; 'none'; needs netem)",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", metavar="PATH", help="also write the outcomes as JSON")
    args = parser.parse_args(argv)
    why = lab_unavailable()
    if why:
        print(f"sites_wordcount: {why} (run it as root, e.g. with sudo)", file=sys.stderr)
        return 2
    for program in ("wc-map", "wc-reduce"):
        if not (NATIVE / program).exists():
            print(
                f"sites_wordcount: {NATIVE / program} is missing: make -C native", file=sys.stderr
            )
            return 2
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    has_option = _coordinator_has_scheduler_option()
    if not has_option:
        skipped = [p for p in policies if p not in ("fifo", "dask")]
        if skipped:
            print(
                f"xwch-coordinator has no --scheduler yet: skipping {', '.join(skipped)}; "
                "'fifo' is the coordinator as it is"
            )
        policies = [p for p in policies if p in ("fifo", "dask")]
    if "dask" in policies:
        try:
            import distributed  # noqa: F401
        except ImportError:
            print(
                "sites_wordcount: Dask runs need distributed: pip install -e '.[bench]'",
                file=sys.stderr,
            )
            return 2
    # A SIGTERM unwinds like Ctrl-C: every process stopped, namespaces and folders removed.
    signal.signal(signal.SIGTERM, _interrupt)
    dataset = prepare(args.shards, int(args.shard_mib * MIB), args.seed, SITES)
    settings = Settings(args.workers, args.slots, has_option)
    delay = None if args.delay == "none" else args.delay
    outcomes: list[Outcome] = []
    with (
        tempfile.TemporaryDirectory(prefix="xwch-sites-") as tmp,
        SiteLab(rate=args.rate, delay=delay) as lab,
    ):
        print(
            f"{len(dataset.shards)} shards of {args.shard_mib:g} MiB ({dataset.words} words, "
            f"{dataset.distinct} distinct), {len(dataset.shards) // len(SITES)} per site; "
            f"{args.workers} worker(s) of {args.slots} slot(s) per site; links {args.rate} "
            f"each way, delay {lab.delay or 'none (no netem in this kernel)' if delay else 'none'}",
            flush=True,
        )
        for run in range(1, args.runs + 1):
            for policy in policies:
                started = time.monotonic()
                try:
                    if policy == "dask":
                        outcome = run_dask(lab, dataset, run, settings, Path(tmp))
                    else:
                        outcome = run_xwch(lab, dataset, policy, run, settings, Path(tmp))
                except Exception:
                    _keep_logs(Path(tmp) / f"run{run}-{policy}" / "logs")
                    raise
                outcomes.append(outcome)
                print(
                    f"{policy} run {run}: makespan {outcome.makespan:.1f} s, cross-site "
                    f"{outcome.cross_site / MIB:.1f} MiB, hub {outcome.hub / MIB:.2f} MiB, "
                    f"maps at home {outcome.maps_at_home}/{outcome.maps}, counts "
                    f"{'ok' if outcome.correct else 'WRONG'} "
                    f"({time.monotonic() - started:.0f} s with set-up)",
                    flush=True,
                )
    report(outcomes)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    return 0 if all(o.correct for o in outcomes) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything stopped and removed", file=sys.stderr)
        sys.exit(130)
