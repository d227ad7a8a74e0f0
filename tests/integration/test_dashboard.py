"""The dashboard in a real headless Chromium, against a whole platform (xwch-local).

Screenshots of each page are saved as PNG files under build/screenshots/dashboard/ (or
$XWCH_SCREENSHOTS), for a person to look at.
"""

from __future__ import annotations

import json
import os
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.browser import find_browser, headless_chromium, wait_until
from tests.integration.support import ROOT, api_get, client, job_file, running_platform, script
from xwch.localprocess import LocalPlatformProcess

pytestmark = pytest.mark.integration

STEPS = 4
# Printed by every step: a worker's output is shown in the browser, never run there.
HOSTILE = "<script>window.xwchInjected = 1</script>"


@dataclass
class Dashboard:
    platform: LocalPlatformProcess
    browser: Any
    shots: Path
    folder: Path
    url: str

    def shot(self, name: str) -> None:
        self.browser.save_screenshot(str(self.shots / f"{name}.png"))

    def login_link(self) -> str:
        done = client(self.platform, "dashboard", "--no-open")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 1, done.stdout  # the link, alone on its line
        return lines[0]

    def text(self) -> str:
        return str(self.browser.find_element("tag name", "body").text)

    def not_injected(self) -> bool:
        return bool(self.browser.execute_script("return window.xwchInjected === undefined;"))


def screenshots_folder() -> Path:
    folder = Path(os.environ.get("XWCH_SCREENSHOTS", ROOT / "build" / "screenshots")) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    find_browser()
    folder = tmp_path_factory.mktemp("dashboard")
    with running_platform(folder / "home", workers=1, slots=STEPS, warehouses=1) as platform:
        assert platform.url is not None
        with headless_chromium(folder / "chromium") as browser:
            yield Dashboard(platform, browser, screenshots_folder(), folder, platform.url)


def token(platform: LocalPlatformProcess, role: str) -> str:
    """A new token of ``role`` in the platform's store, made as an operator would."""
    from xwch.coordinator.token_admin import create_token
    from xwch.store.database import default_url

    return create_token(default_url(platform.home / "coordinator"), role, f"test {role}")


def gated_job(folder: Path) -> Path:
    """STEPS steps, each waiting for its own gate file, then a gather step reading them all."""
    gates = folder / "gates"
    gates.mkdir()
    script(
        folder,
        "step.sh",
        f'while [ ! -e "$1" ]; do sleep 0.05; done\necho \'{HOSTILE}\'\necho done > "$2"\n',
    )
    script(folder, "gather.sh", 'find "$1" -type f -exec cat {} + > "$2"\n')
    doc = {
        "name": "gated",
        "binaries": {"step": "step.sh", "gather": "gather.sh"},
        "tasks": [
            {
                "id": "step-{i}",
                "foreach": {"i": {"range": [0, STEPS]}},
                "binary": "step",
                "args": [str(gates / "{i}"), "out.txt"],
                "outputs": ["out.txt"],
            },
            {
                "id": "gather",
                "binary": "gather",
                "args": ["parts", "all.txt"],
                "inputs": {"parts/": "step-*/out.txt"},
                "outputs": ["all.txt"],
            },
        ],
        "results": ["gather/all.txt"],
    }
    return job_file(folder, doc)


def test_login_link_opens_the_dashboard_once(dash: Dashboard) -> None:
    """The link of `xwch-client dashboard` logs the browser in with an HttpOnly, SameSite=Strict
    cookie, lands on a URL without the code, and is refused when used a second time."""
    link = dash.login_link()
    assert link.startswith(dash.url + "/dashboard/login?code=")
    dash.browser.get(link)
    wait_until(dash.browser, lambda b: b.title.startswith("Jobs"), "the jobs page")
    assert dash.browser.current_url == dash.url + "/dashboard/"
    [cookie] = dash.browser.get_cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    config = tomllib.loads((dash.platform.home / "client.toml").read_text())
    assert config["token"] not in dash.browser.page_source
    assert "document.cookie" not in dash.browser.page_source
    assert dash.browser.execute_script("return document.cookie;") == ""  # HttpOnly
    dash.shot("jobs-empty")

    dash.browser.get(link)
    wait_until(dash.browser, lambda b: "Link used or expired" in b.title, "the refusal")
    dash.shot("login-refused")
    # The session of the first use goes on.
    dash.browser.get(dash.url + "/dashboard/")
    wait_until(dash.browser, lambda b: b.title.startswith("Jobs"), "the jobs page")


def test_jobs_page_follows_a_running_job_without_reloading(dash: Dashboard) -> None:
    """A job submitted while the jobs page is open appears there, and its progress bar and
    count follow its tasks as they finish, with no reload of the page."""
    browser = dash.browser
    browser.get(dash.url + "/dashboard/")
    wait_until(browser, lambda b: b.title.startswith("Jobs"), "the jobs page")
    browser.execute_script("window.xwchMarker = 'still here';")
    folder = dash.folder / "gated"
    folder.mkdir()
    done = client(dash.platform, "submit", str(gated_job(folder)))
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0]
    wait_until(browser, lambda b: f"0/{STEPS + 1} tasks done" in dash.text(), "the new job")
    (folder / "gates" / "0").touch()
    (folder / "gates" / "1").touch()
    wait_until(browser, lambda b: f"2/{STEPS + 1} tasks done" in dash.text(), "two steps done")
    bar = browser.find_element("css selector", "tr.job svg.bar")
    assert bar.find_elements("css selector", "rect.s-done")
    dash.shot("jobs-running")
    assert browser.execute_script("return window.xwchMarker;") == "still here"
    for i in range(2, STEPS):
        (folder / "gates" / str(i)).touch()
    wait_until(
        browser, lambda b: f"{STEPS + 1}/{STEPS + 1} tasks done" in dash.text(), "the job done"
    )
    assert browser.execute_script("return window.xwchMarker;") == "still here"
    assert int(browser.find_element("tag name", "body").get_attribute("data-updates")) >= 2
    dash.shot("jobs-done")
    (dash.folder / "job-id").write_text(job_id)


def test_dag_page_draws_tasks_by_state_and_the_gather_step(dash: Dashboard) -> None:
    """A job's page draws its DAG (each task colored by state, the gather step outlined) over
    its tasks' table, whose logs are one click away and show a worker's output as text."""
    job_id = (dash.folder / "job-id").read_text()
    browser = dash.browser
    browser.get(f"{dash.url}/dashboard/jobs/{job_id}")
    wait_until(browser, lambda b: b.find_elements("css selector", "svg.dag"), "the DAG")
    nodes = browser.find_elements("css selector", "svg.dag rect.node")
    assert len(nodes) == STEPS + 1
    assert all("s-done" in (n.get_attribute("class") or "") for n in nodes)
    gathers = browser.find_elements("css selector", "svg.dag rect.node.gather")
    assert len(gathers) == 1
    assert len(browser.find_elements("css selector", "svg.dag .edges line")) == STEPS
    rows = browser.find_elements("css selector", "table.tasks tr.task")
    assert [r.find_element("css selector", "td.id").text.split()[0] for r in rows] == [
        *(f"step-{i}" for i in range(STEPS)),
        "gather",
    ]
    dash.shot("job-dag")
    rows[0].find_element("link text", "logs").click()
    wait_until(browser, lambda b: "Task step-0" in dash.text(), "the logs page")
    assert HOSTILE in dash.text()  # shown as text...
    assert dash.not_injected()  # ...and never run
    dash.shot("task-logs")


def test_workers_page_shows_every_worker_with_hostile_names_as_text(dash: Dashboard) -> None:
    """The workers page lists the workers with their state, slots and heartbeats; a worker
    registered under the name of a script shows that name as text."""
    worker_token = token(dash.platform, "worker")
    facts = {
        "name": HOSTILE,
        "address": "<b>10.0.0.9</b>",
        "platform": "linux-x86_64",
        "cores": 2,
        "memory": 1 << 30,
        "slots": 2,
        "performance": 1.0,
        "site": "<i>lab</i>",
        "protocol": 1,
    }
    request = urllib.request.Request(
        dash.url + "/api/v1/workers",
        data=json.dumps(facts).encode(),
        headers={"Authorization": f"Bearer {worker_token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 201
    browser = dash.browser
    browser.get(dash.url + "/dashboard/workers")
    wait_until(browser, lambda b: HOSTILE in dash.text(), "the hostile worker's name")
    assert "vm-w1" in dash.text()
    assert "<b>10.0.0.9</b>" in dash.text()
    assert dash.not_injected()
    assert not browser.find_elements("css selector", "main b, main i")
    rows = browser.find_elements("css selector", "tr.worker")
    assert len(rows) == 2
    dash.shot("workers")


def test_platform_and_network_pages(dash: Dashboard) -> None:
    """The warehouses and coordinators page and the network page render in the browser."""
    browser = dash.browser
    browser.get(dash.url + "/dashboard/platform")
    wait_until(browser, lambda b: b.find_elements("css selector", "tr.warehouse"), "a warehouse")
    assert browser.find_elements("css selector", "tr.coordinator")
    dash.shot("platform")
    browser.get(dash.url + "/dashboard/network")
    wait_until(browser, lambda b: "policy in force" in dash.text(), "the network page")
    dash.shot("network")


def test_pages_need_a_session(dash: Dashboard) -> None:
    """Without the session cookie, the pages and their event stream answer 401, and the
    dashboard refuses anything but reading."""
    for path in ("/dashboard/", "/dashboard/workers", "/dashboard/events"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(dash.url + path, timeout=30)
        assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            urllib.request.Request(dash.url + "/dashboard/", data=b"", method="POST"), timeout=30
        )
    assert refused.value.code == 405


def test_revoking_a_token_signs_its_open_dashboard_out(dash: Dashboard) -> None:
    """A page opened with another client token's link, left open: once that token is revoked
    (`xwch-coordinator token revoke`), the page's next live refresh is refused and it shows
    that the session ended, with no action from the person looking at it."""
    from xwch.coordinator.token_admin import revoke_token
    from xwch.store.database import default_url

    visitor = token(dash.platform, "client")
    request = urllib.request.Request(
        dash.url + "/api/v1/dashboard/logins",
        data=b"",
        method="POST",
        headers={"Authorization": f"Bearer {visitor}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        path = json.loads(answer.read())["path"]
    browser = dash.browser
    try:
        browser.get(dash.url + path)
        wait_until(browser, lambda b: b.title.startswith("Jobs"), "the jobs page")
        revoke_token(default_url(dash.platform.home / "coordinator"), visitor)
        wait_until(browser, lambda b: b.title.startswith("Signed out"), "the session ended")
        assert "revoked" in dash.text()
        dash.shot("signed-out")
    finally:
        # The other tests' session, whatever happened here.
        browser.get(dash.login_link())
        wait_until(browser, lambda b: b.title.startswith("Jobs"), "the jobs page again")


def test_metrics_read_back_with_prometheus_parser(dash: Dashboard) -> None:
    """/metrics answers a metrics token in the Prometheus format, which prometheus_client's
    own parser reads; other roles and no token are refused."""
    from prometheus_client.parser import text_string_to_metric_families

    def scrape(with_token: str | None) -> str:
        headers = {} if with_token is None else {"Authorization": f"Bearer {with_token}"}
        request = urllib.request.Request(dash.url + "/metrics", headers=headers)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return str(answer.read().decode())

    families = {
        f.name: f for f in text_string_to_metric_families(scrape(token(dash.platform, "metrics")))
    }
    assert all(name.startswith("xwch_") for name in families)
    tasks = {s.labels["state"]: s.value for s in families["xwch_tasks"].samples}
    jobs = {s.labels["state"]: s.value for s in families["xwch_jobs"].samples}
    assert jobs.get("done", 0) >= 1
    assert isinstance(tasks, dict)
    started = families["xwch_attempts_started"].samples[0].value
    succeeded = families["xwch_attempts_succeeded"].samples[0].value
    assert started >= succeeded >= STEPS + 1
    for name in (
        "xwch_workers",
        "xwch_slots",
        "xwch_attempts_failed",
        "xwch_transfer_bytes",
        "xwch_network_load",
        "xwch_policy_packet_size_bytes",
        "xwch_policy_packet_sleep_seconds",
        "xwch_work_request_seconds",
        "xwch_store_commit_seconds",
        "xwch_scanner_repairs",
        "xwch_coordinator_groups",
    ):
        assert name in families, name
    commits = families["xwch_store_commit_seconds"].samples
    assert next(c.value for c in commits if c.name.endswith("_count")) > 0
    for refused_token, status in ((None, 401), (token(dash.platform, "worker"), 403)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(refused_token)
        assert refused.value.code == status


def test_warehouse_metrics_ask_the_coordinator_about_the_token(dash: Dashboard) -> None:
    """A warehouse's /metrics answers a metrics token (checked with the coordinator) in the
    Prometheus format, and refuses a worker's token."""
    from prometheus_client.parser import text_string_to_metric_families

    warehouses = api_get(dash.platform, "/warehouses")
    url = warehouses["warehouses"][0]["url"]

    def scrape(with_token: str) -> str:
        request = urllib.request.Request(
            url + "/metrics", headers={"Authorization": f"Bearer {with_token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return str(answer.read().decode())

    families = {
        f.name: f for f in text_string_to_metric_families(scrape(token(dash.platform, "metrics")))
    }
    assert all(name.startswith("xwch_") for name in families)
    assert families["xwch_warehouse_registered"].samples[0].value == 1
    assert families["xwch_warehouse_objects"].samples[0].value >= 1
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(token(dash.platform, "worker"))
    assert refused.value.code == 403


def test_a_task_id_holding_a_script_is_shown_as_text(tmp_path: Path) -> None:
    """Job files cannot name a task ``<script>`` today (ids are checked), but the pages must
    not depend on it: a job page rendered with such an id shows it as text in Chromium, in the
    table and the DAG, and runs nothing."""
    from xwch.dashboard import pages
    from xwch.dashboard.views import JobGraph, JobView
    from xwch.protocol.client import JobSummary, TaskInfo

    hostile = HOSTILE
    summary = JobSummary(
        id="j1",
        name=hostile,
        state="running",
        priority=0,
        created=0.0,
        ended=None,
        total=2,
        counts={"done": 1, "running": 1},
    )
    tasks = (
        TaskInfo(
            id=hostile, state="done", cost=1.0, worker=hostile, attempts=1, started=1.0, ended=2.0
        ),
        TaskInfo(
            id="after", state="running", cost=1.0, worker="w", attempts=1, started=2.0, ended=None
        ),
    )
    view = JobView(summary, tasks, JobGraph({hostile: (), "after": (hostile,)}))
    page = tmp_path / "job.html"
    page.write_text(pages.frame("job", "jobs", pages.job_page(view)))
    with headless_chromium(tmp_path / "chromium") as browser:
        browser.get(page.as_uri())
        wait_until(browser, lambda b: b.find_elements("css selector", "td.id"), "the task table")
        cells = browser.find_elements("css selector", "td.id")
        assert cells[0].text.startswith(hostile)
        titles = browser.execute_script(
            "return Array.from(document.querySelectorAll('svg.dag title')).map(t => t.textContent);"
        )
        assert f"{hostile}: done" in titles
        assert browser.execute_script("return window.xwchInjected === undefined;")
        assert browser.execute_script("return document.scripts.length;") == 1  # ours alone
        browser.save_screenshot(str(screenshots_folder() / "hostile-task-id.png"))
