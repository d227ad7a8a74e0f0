"""The dashboard's HTML: one function per page's content, one for the frame around it.

Every value goes through :func:`~xwch.dashboard.escaping.text`; no page carries a token, and
no page has a form: the dashboard only reads. A page's content is its ``<main>``; the live
script fetches it again (``?fragment=1``) when the coordinator says something changed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from xwch.dashboard.dag_drawing import draw_dag
from xwch.dashboard.escaping import segment, state_class, text
from xwch.dashboard.network_plot import draw_rates, human_rate
from xwch.dashboard.views import JobView, NetworkView, WarehouseRow, WorkerRow
from xwch.protocol.client import AttemptLog, JobSummary, TaskInfo
from xwch.protocol.cluster import CoordinatorInfo
from xwch.protocol.states import TaskStatus

BASE = "/dashboard"
NAV = (
    ("jobs", "Jobs", f"{BASE}/"),
    ("workers", "Workers", f"{BASE}/workers"),
    ("platform", "Warehouses & coordinators", f"{BASE}/platform"),
    ("network", "Network", f"{BASE}/network"),
)
HERE = ' class="here"'
# Shown where there is no value (an en dash).
NONE = "\u2013"
# Rows of a job's task table at most.
TABLE_MOST = 1000
# The order of the progress bar's parts: what is finished first, what waits last.
BAR_ORDER = (
    TaskStatus.DONE,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
    TaskStatus.RUNNING,
    TaskStatus.ASSIGNED,
    TaskStatus.READY,
    TaskStatus.BLOCKED,
)


def frame(title: str, current: str, main: str) -> str:
    """A whole page: the navigation, the content, the live script (served by the coordinator)."""
    links = "".join(
        f'<a href="{href}"{HERE if key == current else ""}>{label}</a>' for key, label, href in NAV
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title)} · XWCH</title>"
        f'<link rel="stylesheet" href="{BASE}/static/dashboard.css">'
        f'<script src="{BASE}/static/dashboard.js" defer></script></head>'
        f'<body><header><span class="brand">XWCH</span><nav>{links}</nav>'
        '<span id="live" class="live" title="live updates">●</span></header>'
        f'<main id="content">{main}</main></body></html>'
    )


def clock_time(when: float | None) -> str:
    if when is None:
        return NONE
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def ago(when: float | None, now: float) -> str:
    if when is None:
        return "never"
    seconds = max(0.0, now - when)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def progress_bar(counts: Mapping[str, int], total: int) -> str:
    """The tasks of a job by state, as one bar (SVG: no inline style, so a strict CSP holds)."""
    parts = ['<svg class="bar" viewBox="0 0 1000 14" preserveAspectRatio="none" role="img">']
    x = 0.0
    for state in BAR_ORDER:
        n = counts.get(state, 0)
        if not n or not total:
            continue
        width = 1000 * n / total
        parts.append(
            f'<rect class="{state_class(state)}" x="{x:.2f}" y="0" width="{width:.2f}" '
            f'height="14"><title>{n} {text(state)}</title></rect>'
        )
        x += width
    parts.append("</svg>")
    return "".join(parts)


def legend() -> str:
    return (
        '<p class="legend">'
        + "".join(f'<span class="swatch {state_class(s)}"></span>{s} ' for s in TaskStatus)
        + "</p>"
    )


def jobs_page(jobs: Sequence[JobSummary], now: float) -> str:
    if not jobs:
        return (
            '<h1>Jobs</h1><p class="empty">No job yet: submit one with '
            "<code>xwch-client submit dag.json</code>.</p>"
        )
    rows = []
    for job in jobs:
        done = job.count(TaskStatus.DONE)
        rows.append(
            f'<tr class="job" data-job="{text(job.id)}">'
            f'<td><a href="{BASE}/jobs/{text(segment(job.id))}">{text(job.name)}</a>'
            f'<div class="sub">{text(job.id)}</div></td>'
            f'<td><span class="state {state_class(job.state)}">{text(job.state)}</span></td>'
            f"<td>{progress_bar(job.counts, job.total)}"
            f'<div class="sub progress">{done}/{job.total} tasks done</div></td>'
            f"<td>{job.priority}</td><td>{text(ago(job.created, now))}</td></tr>"
        )
    return (
        "<h1>Jobs</h1>" + legend() + '<table class="jobs"><thead><tr><th>job</th><th>state</th>'
        "<th>progress</th><th>priority</th><th>submitted</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def job_page(view: JobView) -> str:
    job = view.job
    states = {t.id: t.state for t in view.tasks}
    base = f"{BASE}/jobs/{segment(job.id)}"
    message = f'<p class="message">{text(job.message)}</p>' if job.message else ""
    head = (
        f'<h1>{text(job.name)} <span class="state {state_class(job.state)}">{text(job.state)}'
        f'</span></h1><p class="sub">{text(job.id)}</p>{message}'
        f"{progress_bar(job.counts, job.total)}"
        f'<p class="progress">{job.count(TaskStatus.DONE)}/{job.total} tasks done</p>'
    )
    drawing = draw_dag(view.graph.dependencies, states, f"{base}/tasks/")
    rows = []
    shown = table_rows(view.tasks)
    for t in shown:
        gather = ' <span class="tag">gather</span>' if view.graph.is_gather(t.id) else ""
        logs = (
            f'<a href="{text(base)}/tasks/{text(segment(t.id))}/logs">logs</a>'
            if t.attempts
            else NONE
        )
        rows.append(
            f'<tr class="task"><td class="id">{text(t.id)}{gather}</td>'
            f'<td><span class="state {state_class(t.state)}">{text(t.state)}</span></td>'
            f"<td>{text(t.worker or NONE)}</td><td>{t.attempts}</td>"
            f"<td>{text(clock_time(t.started))}</td><td>{text(clock_time(t.ended))}</td>"
            f"<td>{logs}</td></tr>"
        )
    return (
        f'{head}<h2>DAG</h2>{legend()}<div class="dag-box">{drawing}</div>'
        f'<p class="sub">Outlined: gather steps, which read the outputs of several tasks.</p>'
        f"<h2>Tasks</h2>{_more_tasks(job.id, len(shown), len(view.tasks))}"
        '<table class="tasks"><thead><tr><th>task</th><th>state</th>'
        "<th>worker</th><th>attempts</th><th>started</th><th>ended</th><th></th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def table_rows(tasks: Sequence[TaskInfo]) -> list[TaskInfo]:
    """At most :data:`TABLE_MOST` tasks, those failed or running first, in the job's order: a
    table of 100,000 rows helps nobody and costs the coordinator a render at every refresh."""
    if len(tasks) <= TABLE_MOST:
        return list(tasks)
    first = (TaskStatus.FAILED, TaskStatus.RUNNING, TaskStatus.ASSIGNED)
    urgent = [i for i, t in enumerate(tasks) if t.state in first][:TABLE_MOST]
    chosen = set(urgent)
    for i in range(len(tasks)):
        if len(chosen) >= TABLE_MOST:
            break
        chosen.add(i)
    return [tasks[i] for i in sorted(chosen)]


def _more_tasks(job_id: str, shown: int, total: int) -> str:
    if shown == total:
        return ""
    return (
        f'<p class="sub">{shown} of {total} tasks shown, failed and running ones first; '
        f"<code>xwch-client tasks {text(job_id)}</code> lists them all.</p>"
    )


def logs_page(job_id: str, log: AttemptLog) -> str:
    back = f"{BASE}/jobs/{segment(job_id)}"
    outcome = f"attempt {log.attempt}: {log.state}"
    if log.exit_code is not None:
        outcome += f", exit code {log.exit_code}"
    if log.worker:
        outcome += f", on {log.worker}"
    error = f'<p class="message">{text(log.error)}</p>' if log.error else ""
    return (
        f'<p><a href="{text(back)}">← job {text(job_id)}</a></p>'
        f"<h1>Task {text(log.task)}</h1><p>{text(outcome)}</p>{error}"
        f'<h2>stdout</h2><pre class="log">{text(log.stdout)}</pre>'
        f'<h2>stderr</h2><pre class="log">{text(log.stderr)}</pre>'
    )


def worker_state(row: WorkerRow) -> tuple[str, str]:
    """The state shown, and why when there is a why."""
    state = row.info.state
    if state == "suspended":
        # The reason the worker gave, as its volunteer's preferences say.
        return state, row.info.reason or "its volunteer's preferences"
    if state != "alive":
        return state, ""
    if row.signals.suspended:
        return "suspended", (
            f"{row.signals.suspended} attempt(s) stopped by the volunteer's preferences "
            "(owner active, hours, CPU load)"
        )
    return ("busy", "") if row.busy else ("alive", "")


def workers_page(rows: Sequence[WorkerRow], now: float) -> str:
    if not rows:
        return '<h1>Workers</h1><p class="empty">No worker has registered yet.</p>'
    out = []
    for row in rows:
        w = row.info
        state, why = worker_state(row)
        why_html = f'<div class="sub">{text(why)}</div>' if why else ""
        out.append(
            f'<tr class="worker"><td>{text(w.name)}<div class="sub">{text(w.id)}</div></td>'
            f'<td><span class="state {state_class(state)}">{text(state)}</span>{why_html}</td>'
            f"<td>{text(w.address)}</td><td>{text(w.site or NONE)}</td>"
            f"<td>{text(w.platform)}</td><td>{w.cores}</td><td>{row.busy}/{w.slots}</td>"
            f"<td>{w.tasks_done}</td><td>{row.signals.heartbeats}</td>"
            f"<td>{text(ago(w.last_heard, now))}</td></tr>"
        )
    return (
        '<h1>Workers</h1><table class="workers"><thead><tr><th>name</th><th>state</th>'
        "<th>address</th><th>site</th><th>platform</th><th>cores</th><th>slots busy</th>"
        "<th>tasks done</th><th>heartbeats</th><th>last heard</th></tr></thead>"
        f"<tbody>{''.join(out)}</tbody></table>"
    )


def platform_page(
    warehouses: Sequence[WarehouseRow], coordinators: Sequence[CoordinatorInfo], now: float
) -> str:
    w_rows = (
        "".join(
            f'<tr class="warehouse"><td>{text(w.id)}</td><td>{text(w.url)}</td><td>{text(w.site)}</td>'
            f'<td><span class="state {state_class("alive" if w.alive else "lost")}">'
            f"{'alive' if w.alive else 'silent'}</span></td><td>{text(_size(w.free))}</td></tr>"
            for w in warehouses
        )
        or '<tr><td colspan="5" class="empty">No warehouse has registered yet.</td></tr>'
    )
    c_rows = (
        "".join(
            f'<tr class="coordinator"><td>{text(c.id)}</td><td>{text(c.url)}</td>'
            f'<td><span class="state {state_class("alive" if c.state == "live" else "lost")}">'
            f"{text(c.state)}</span></td><td>{text(', '.join(c.groups) or NONE)}</td>"
            f"<td>{c.workers}</td><td>{c.running}</td><td>{text(ago(c.last_heard, now))}</td></tr>"
            for c in coordinators
        )
        or '<tr><td colspan="7" class="empty">No coordinator is registered.</td></tr>'
    )
    return (
        "<h1>Warehouses</h1><table><thead><tr><th>id</th><th>URL</th><th>site</th>"
        f"<th>state</th><th>free</th></tr></thead><tbody>{w_rows}</tbody></table>"
        "<h1>Coordinators</h1><table><thead><tr><th>id</th><th>URL</th><th>state</th>"
        "<th>groups held</th><th>workers</th><th>running</th><th>last heard</th></tr></thead>"
        f"<tbody>{c_rows}</tbody></table>"
    )


def network_page(view: NetworkView) -> str:
    policy = view.policy
    links = (
        "".join(
            f"<tr><td>{text(link['link'])}</td><td>{text(link['kind'])}</td>"
            f"<td>{text(_rate(link.get('capacity')))}</td><td>{text(_rate(link.get('xwch_rate')))}</td>"
            f"<td>{text(_rate(link.get('other_rate')))}</td><td>{float(link['load']):.2f}</td></tr>"
            for link in view.links
        )
        or '<tr><td colspan="6" class="empty">No link measured yet.</td></tr>'
    )
    return (
        "<h1>Network</h1>"
        f'<p class="policy">Sensed load <b>{view.network_load:.2f}</b>; policy in force: packets '
        f"of <b>{text(_size(int(policy.get('packet_size', 0))))}</b>, "
        f"<b>{float(policy.get('packet_sleep', 0.0)) * 1000:.0f} ms</b> between two, "
        f"<b>{int(policy.get('max_transfers', 0))}</b> transfers at once.</p>"
        f"<h2>Transfer rates per site link</h2>{draw_rates(view.rates, view.bucket)}"
        "<h2>Links</h2><table><thead><tr><th>link</th><th>kind</th><th>capacity</th>"
        "<th>XWCH</th><th>other traffic</th><th>load</th></tr></thead>"
        f"<tbody>{links}</tbody></table>"
    )


def message_page(title: str, message: str) -> str:
    return f"<h1>{text(title)}</h1><p>{text(message)}</p>"


def _rate(value: object) -> str:
    return NONE if value is None else human_rate(float(value))  # type: ignore[arg-type]


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
