"""Submitting a job: hashing, uploading what is missing, creating the job with digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.coordinator_client_side import (
    CLIENT_TOKEN,
    COORDINATOR_URL,
    FakeCoordinator,
    HttpError,
    in_memory_transfers,
)
from tests.unit.client.harness import write_job
from xwch.bundle import pack_bundle
from xwch.client.coordinator import CoordinatorClient
from xwch.client.submit import submit
from xwch.client.transfers import BIG_TRANSFER
from xwch.dag import load_job_file
from xwch.errors import ApiError
from xwch.http import JsonApi


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SubmitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.job = load_job_file(write_job(self.dir))
        self.fake = FakeCoordinator()
        self.http = StubTreq(self.fake.resource())
        self.api = CoordinatorClient(JsonApi(self.http, COORDINATOR_URL, CLIENT_TOKEN))
        self.lines: list[str] = []

    def submit(self) -> str:
        done = ensureDeferred(
            submit(
                self.api,
                self.http,
                self.job,
                Clock(),
                self.lines.append,
                in_memory_transfers(self.fake),
            )
        )
        return str(self.successResultOf(done))

    def bundle_digest(self) -> str:
        archive = self.dir / "expected.tar"
        pack_bundle(self.dir / "bundle", archive)
        return sha(archive.read_bytes())

    def test_uploads_every_object_then_creates_the_job(self) -> None:
        """A first submit uploads the binaries (a bundle as its archive) and the input file."""
        job_id = self.submit()
        work = sha((self.dir / "bin" / "work.sh").read_bytes())
        data = sha((self.dir / "data" / "in.txt").read_bytes())
        self.assertEqual(sorted(self.fake.uploaded), sorted([work, data, self.bundle_digest()]))
        wire = self.fake.jobs[job_id].wire
        self.assertEqual(wire["binaries"]["work"]["any"]["digest"], work)
        self.assertEqual(wire["binaries"]["pkg"]["any"]["digest"], self.bundle_digest())
        self.assertTrue(wire["binaries"]["pkg"]["any"]["bundle"])
        self.assertEqual(wire["files"]["input"], {"digest": data, "size": 11})

    def test_uploads_only_what_no_warehouse_holds(self) -> None:
        """Objects some warehouse already holds are not uploaded again."""
        self.fake.store((self.dir / "bin" / "work.sh").read_bytes())
        self.fake.store((self.dir / "data" / "in.txt").read_bytes())
        self.submit()
        self.assertEqual(self.fake.uploaded, [self.bundle_digest()])

    def test_the_request_order_is_uploads_then_job(self) -> None:
        """The coordinator is asked what is missing before the job is created."""
        self.submit()
        self.assertEqual(
            self.fake.requests,
            [("POST", "/api/v1/objects/uploads"), ("POST", "/api/v1/jobs")],
        )

    def test_a_second_submit_uploads_nothing(self) -> None:
        """Submitting the same job again sends no bytes: everything is stored already."""
        self.submit()
        self.fake.uploaded.clear()
        self.submit()
        self.assertEqual(self.fake.uploaded, [])
        self.assertEqual(len(self.fake.jobs), 2)

    def test_an_object_lost_before_creation_is_sent_again(self) -> None:
        """An object that vanishes between the check and the creation is uploaded again, once."""
        work = sha((self.dir / "bin" / "work.sh").read_bytes())
        self.fake.forget_once = {work}
        job_id = self.submit()
        self.assertEqual(self.fake.uploaded.count(work), 2)
        self.assertIn(job_id, self.fake.jobs)

    def test_a_refused_job_raises_the_coordinators_error(self) -> None:
        """A job the coordinator refuses fails with its error and message."""
        self.fake.refuse_next_job = HttpError(400, "bad_request", "tasks[0]: no")
        done = ensureDeferred(
            submit(
                self.api,
                self.http,
                self.job,
                Clock(),
                self.lines.append,
                in_memory_transfers(self.fake),
            )
        )
        error = self.failureResultOf(done, ApiError).value
        self.assertEqual((error.status, error.message), (400, "tasks[0]: no"))

    def test_a_big_upload_gets_a_progress_line(self) -> None:
        """Uploading a big file tells the user what is being sent and how big it is."""
        (self.dir / "data" / "in.txt").write_bytes(b"x" * (BIG_TRANSFER + 1))
        self.submit()
        self.assertTrue(
            any(line.startswith("uploading file input: 8.0 MiB") for line in self.lines)
        )
        self.assertTrue(any(line.startswith("uploaded file input in") for line in self.lines))
