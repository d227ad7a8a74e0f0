"""The wire codec's cost per message, against the standard library's JSON alone.

    .venv/bin/python bench/protocol_codec.py [--rounds 20000]

Times, on the coordinator's two hottest messages (a Work Request's answer of four assignments,
a batch of four Work Results with their Work Request), decoding bytes into typed, checked
messages (``xwch.protocol.codec.decode``) and encoding them back, against ``json.loads`` and
``json.dumps`` of the same documents. The standard library's JSON alone is a lower bound for the
hand-written ``from_json``/``to_json`` the codec replaced (they parsed with ``json.loads`` and
then walked the dict field by field, building the message; they built a dict and dumped it), so
a codec faster than it is faster than them. Alternates the two, medians of 5; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from xwch.protocol.codec import decode, encode
from xwch.protocol.objects import BinaryRef, InputFile, OutputFile, Source
from xwch.protocol.worker import (
    Assignment,
    AttemptResult,
    Policy,
    ResultsReport,
    WorkAnswer,
    WorkRequest,
)

DIGEST = "ab" * 32


def work_answer() -> WorkAnswer:
    source = Source(url="http://127.0.0.1:8751", capability="c" * 120)
    tasks = tuple(
        Assignment(
            attempt=f"a{n}",
            job="j1",
            task=f"tile-{n}",
            number=1,
            binary=BinaryRef(DIGEST, 16_000),
            args=("--tile", str(n), "out.pgm"),
            env={},
            inputs=(InputFile("in.txt", DIGEST, 100),),
            outputs=("out.pgm",),
            timeout=None,
            sources={DIGEST: (source,)},
            upload=source,
        )
        for n in range(4)
    )
    return WorkAnswer(tasks=tasks, policy=Policy())


def results_report() -> ResultsReport:
    results = tuple(
        AttemptResult(
            attempt=f"a{n}",
            outcome="succeeded",
            exit_code=0,
            outputs=(OutputFile("out.pgm", DIGEST, 5000),),
            stdout="rendered\n",
            duration=0.01,
        )
        for n in range(4)
    )
    return ResultsReport(results=results, work=WorkRequest(performance=1.0, free_slots=4))


def per_call(fn: Callable[[], object], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()
    for name, message in (("work answer", work_answer()), ("results report", results_report())):
        raw = encode(message)
        doc = json.loads(raw)
        kind = type(message)
        cases: dict[str, Callable[[], object]] = {
            "decode typed": lambda raw=raw, kind=kind: decode(raw, kind, "bench"),
            "json.loads": lambda raw=raw: json.loads(raw),
            "encode typed": lambda m=message: encode(m),
            "json.dumps": lambda doc=doc: json.dumps(doc, separators=(",", ":")).encode(),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(5):  # alternated, so a slow moment of the machine hits both
            for case, fn in cases.items():
                times[case].append(per_call(fn, args.rounds))
        med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        print(f"{name} ({len(raw)} bytes):")
        print(
            f"  decode: typed {med['decode typed']:.1f} us, json.loads alone "
            f"{med['json.loads']:.1f} us ({med['json.loads'] / med['decode typed']:.2f}x)"
        )
        print(
            f"  encode: typed {med['encode typed']:.1f} us, json.dumps alone "
            f"{med['json.dumps']:.1f} us ({med['json.dumps'] / med['encode typed']:.2f}x)"
        )


if __name__ == "__main__":
    main()
