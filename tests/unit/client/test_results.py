"""Downloading a job's results into DIR/<task id>/<output name>."""

from __future__ import annotations

from pathlib import Path

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.coordinator_client_side import (
    CLIENT_TOKEN,
    COORDINATOR_URL,
    FakeCoordinator,
    FakeJob,
    in_memory_transfers,
)
from xwch.client.coordinator import CoordinatorClient
from xwch.client.results import Downloaded, default_results_dir, download_results
from xwch.http import JsonApi
from xwch.protocol.codec import ProtocolError


class ResultsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.fake = FakeCoordinator()
        self.http = StubTreq(self.fake.resource())
        self.api = CoordinatorClient(JsonApi(self.http, COORDINATOR_URL, CLIENT_TOKEN))
        self.job = self.fake.add_job("mandel")

    def add_result(self, job: FakeJob, task: str, output: str, data: bytes) -> None:
        digest = self.fake.store(data)
        job.results.append({"task": task, "output": output, "digest": digest, "size": len(data)})

    def download(self) -> Downloaded:
        done = ensureDeferred(
            download_results(
                self.api,
                self.http,
                self.job.id,
                self.dir,
                Clock(),
                lambda line: None,
                in_memory_transfers(self.fake),
            )
        )
        return self.successResultOf(done)

    def test_results_land_as_task_slash_output(self) -> None:
        """Each result is written to DIR/<task id>/<output name>, nested outputs included."""
        self.add_result(self.job, "tile-0", "tile.pgm", b"P5 tile 0")
        self.add_result(self.job, "image", "out/image.pgm", b"P5 image")
        got = self.download()
        self.assertEqual((self.dir / "tile-0" / "tile.pgm").read_bytes(), b"P5 tile 0")
        self.assertEqual((self.dir / "image" / "out" / "image.pgm").read_bytes(), b"P5 image")
        self.assertEqual(got.fetched, 2)
        self.assertIn("2 result(s)", got.summary())
        self.assertIn(str(self.dir), got.summary())

    def test_results_already_in_place_are_not_downloaded_again(self) -> None:
        """Running `results` twice only fetches what is missing or different."""
        self.add_result(self.job, "a", "o.txt", b"one")
        self.add_result(self.job, "b", "o.txt", b"two")
        self.download()
        (self.dir / "b" / "o.txt").write_bytes(b"tampered")
        self.fake.downloaded.clear()
        got = self.download()
        self.assertEqual(got.fetched, 1)
        self.assertEqual((self.dir / "b" / "o.txt").read_bytes(), b"two")

    def test_small_results_kept_by_the_coordinator_come_with_the_answer(self) -> None:
        """A result the coordinator keeps inline is written from the answer: no transfer."""
        digest = self.fake.keep_inline(b"42\n")
        self.job.results.append({"task": "t", "output": "n.txt", "digest": digest, "size": 3})
        self.add_result(self.job, "u", "big.bin", b"from a warehouse")
        got = self.download()
        self.assertEqual((self.dir / "t" / "n.txt").read_bytes(), b"42\n")
        self.assertEqual((self.dir / "u" / "big.bin").read_bytes(), b"from a warehouse")
        self.assertEqual(got.fetched, 2)
        self.assertEqual(len(self.fake.downloaded), 1)
        self.assertEqual([p.name for p in (self.dir / "t").iterdir()], ["n.txt"])

    def test_identical_results_are_fetched_once(self) -> None:
        """Two results with the same content cost one download."""
        self.add_result(self.job, "a", "o.txt", b"same")
        self.add_result(self.job, "b", "o.txt", b"same")
        self.download()
        self.assertEqual(len(self.fake.downloaded), 1)
        self.assertEqual((self.dir / "b" / "o.txt").read_bytes(), b"same")

    def test_no_results_creates_nothing(self) -> None:
        """A job without results says so and leaves no empty folder behind."""
        got = self.download()
        self.assertEqual(got.summary(), "no results to download")
        self.assertFalse(self.dir.exists())
        self.assertNotIn(("POST", "/api/v1/objects/downloads"), self.fake.requests)

    def test_a_result_path_escaping_the_folder_is_refused(self) -> None:
        """A result named to land outside the results folder is refused before any write."""
        self.add_result(self.job, "..", "evil", b"x")
        done = ensureDeferred(
            download_results(
                self.api,
                self.http,
                self.job.id,
                self.dir,
                Clock(),
                lambda line: None,
                in_memory_transfers(self.fake),
            )
        )
        self.failureResultOf(done, ProtocolError)
        self.assertFalse(self.dir.exists())

    def test_default_folder_is_named_after_the_job(self) -> None:
        """Without -o, results go to ./<job name>-results."""
        self.assertEqual(default_results_dir("mandel", Path("/w")), Path("/w/mandel-results"))
