"""The dashboard's HTML and SVG: every value escaped, the DAG laid out and drawn."""

from __future__ import annotations

import msgspec
from twisted.trial.unittest import SynchronousTestCase

from xwch.dashboard import pages
from xwch.dashboard.dag_drawing import EDGES_MOST, draw_dag, layers
from xwch.dashboard.observer import WorkerSignals
from xwch.dashboard.views import JobGraph, JobView, WorkerRow
from xwch.protocol.client import AttemptLog, JobSummary, TaskInfo, WorkerInfo

HOSTILE = "<script>alert(1)</script>"


def job(job_id: str = "j1", name: str = "job", **counts: int) -> JobSummary:
    return JobSummary(
        id=job_id,
        name=name,
        state="running",
        priority=0,
        created=0.0,
        ended=None,
        total=sum(counts.values()),
        counts=counts,
    )


def task(task_id: str, state: str = "done", attempts: int = 1) -> TaskInfo:
    return TaskInfo(
        id=task_id, state=state, cost=1.0, worker="w", attempts=attempts, started=1.0, ended=2.0
    )


class EscapingTests(SynchronousTestCase):
    def test_a_task_id_holding_a_script_is_text(self) -> None:
        """A task id, job name or log holding ``<script>`` reaches the page escaped, in the
        table, the DAG and the logs alike."""
        view = JobView(
            job(name=HOSTILE, done=2),
            (task(HOSTILE), task("b")),
            JobGraph({HOSTILE: (), "b": (HOSTILE,)}),
        )
        html = pages.frame("t", "jobs", pages.job_page(view))
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        # In a link, the id is percent-encoded: it cannot leave its path segment.
        assert "%3Cscript%3E" in html
        log = AttemptLog(
            task=HOSTILE,
            attempt=1,
            state="failed",
            exit_code=1,
            error=HOSTILE,
            stdout=HOSTILE,
            stderr="</pre>" + HOSTILE,
        )
        logs = pages.logs_page("j1", log)
        assert "<script>" not in logs and "</pre><script" not in logs

    def test_unknown_states_get_no_class_of_their_own(self) -> None:
        """A state is a CSS class only when known: a worker cannot choose a page's classes."""
        hostile = JobSummary(
            id="j",
            name="n",
            state='x" onload="alert(1)',
            priority=0,
            created=0.0,
            ended=None,
            total=0,
        )
        html = pages.jobs_page([hostile], now=10.0)
        assert 'class="state s-unknown"' in html
        assert '" onload="' not in html

    def test_worker_fields_are_text(self) -> None:
        info = WorkerInfo(
            id="w1",
            name=HOSTILE,
            state="alive",
            address="<b>x</b>",
            platform="<i>p</i>",
            cores=1,
            memory=1,
            slots=2,
            performance=1.0,
            tasks_done=0,
            last_heard=0.0,
            site="<u>s</u>",
        )
        html = pages.workers_page([WorkerRow(info, 0, WorkerSignals())], now=1.0)
        for raw in (HOSTILE, "<b>", "<i>", "<u>"):
            assert raw not in html

    def test_a_suspended_worker_says_why(self) -> None:
        info = WorkerInfo(
            id="w1",
            name="n",
            state="alive",
            address="a",
            platform="p",
            cores=1,
            memory=1,
            slots=2,
            performance=1.0,
            tasks_done=0,
            last_heard=0.0,
        )
        state, why = pages.worker_state(WorkerRow(info, 2, WorkerSignals(3, 2)))
        assert state == "suspended"
        assert "preferences" in why
        assert pages.worker_state(WorkerRow(info, 1, WorkerSignals()))[0] == "busy"
        told = msgspec.structs.replace(info, state="suspended", reason="the computer is in use")
        assert pages.worker_state(WorkerRow(told, 0, WorkerSignals())) == (
            "suspended",
            "the computer is in use",
        )


class DagTests(SynchronousTestCase):
    def test_layers_follow_the_longest_chain(self) -> None:
        """Tasks are drawn in layers by depth, in the job file's order within a layer."""
        deps = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ()}
        assert layers(deps) == [["a", "e"], ["b", "c"], ["d"]]

    def test_a_deep_chain_does_not_recurse(self) -> None:
        deps = {f"t{i}": ((f"t{i - 1}",) if i else ()) for i in range(5000)}
        assert len(layers(deps)) == 5000

    def test_the_gather_step_is_outlined(self) -> None:
        deps = {"a": (), "b": (), "g": ("a", "b")}
        svg = draw_dag(deps, {"a": "done", "b": "running", "g": "blocked"}, "/x/")
        assert svg.count('class="node s-') == 3
        assert 'class="node s-blocked gather"' in svg
        assert "s-running" in svg and "s-done" in svg
        assert svg.count("<line") == 2

    def test_a_big_map_is_drawn_as_a_block_with_bundled_edges(self) -> None:
        """10,000 tasks and their gather: one square each, the edges as one bundle."""
        deps: dict[str, tuple[str, ...]] = {f"map-{i}": () for i in range(10_000)}
        deps["reduce"] = tuple(f"map-{i}" for i in range(10_000))
        svg = draw_dag(deps, {}, "/x/")
        assert svg.count("<rect") == 10_001
        assert 10_000 > EDGES_MOST
        assert svg.count("<line") == 1
        assert "10000 edges" in svg


class TaskTableTests(SynchronousTestCase):
    def test_a_huge_job_shows_its_failed_and_running_tasks_first(self) -> None:
        """Past TABLE_MOST rows, the table keeps the failed and running tasks, then the first
        ones, in the job's order, and says how to list them all."""
        tasks = [task(f"t{i}", "done") for i in range(3 * pages.TABLE_MOST)]
        tasks[-1] = task("last", "failed")
        tasks[-2] = task("late", "running")
        rows = pages.table_rows(tasks)
        assert len(rows) == pages.TABLE_MOST
        assert [r.id for r in rows[-2:]] == ["late", "last"]
        assert rows[0].id == "t0"
        view = JobView(job(done=len(tasks)), tuple(tasks), JobGraph({t.id: () for t in tasks}))
        html = pages.job_page(view)
        assert f"{pages.TABLE_MOST} of {len(tasks)} tasks shown" in html
        assert "xwch-client tasks j1" in html
