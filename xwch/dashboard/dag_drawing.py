"""A job's DAG as SVG: tasks colored by state, in layers by depth, gather steps outlined.

Drawn on the server, so the page needs no graph library: a layer is the tasks whose longest
chain of dependencies has the same length, wrapped into rows when wide (a 10,000-task map is a
block of squares, not a line 100,000 pixels long). A big DAG's edges are drawn as one bundle per
pair of layers, since ten thousand lines into one gather step say less than one thick line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xwch.dashboard.escaping import segment, state_class, text


@dataclass(frozen=True)
class _Style:
    width: float
    height: float
    gap: float  # between two nodes of a layer
    layer_gap: float  # between two layers
    per_row: int
    labels: bool


# Few tasks: boxes with their ids. Many: small squares, their ids on hover.
_SMALL = _Style(width=132, height=24, gap=14, layer_gap=44, per_row=8, labels=True)
_LARGE = _Style(width=8, height=8, gap=3, layer_gap=36, per_row=120, labels=False)
SMALL_MOST = 64
# More edges than this are drawn as bundles between layers.
EDGES_MOST = 2000
PAD = 12
LABEL_CHARS = 18


def layers(dependencies: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tasks by depth (0: waits for nothing), each layer in the job file's order."""
    depth: dict[str, int] = {}
    for start in dependencies:
        # Iterative, so a 10,000-deep chain does not hit Python's recursion limit.
        stack = [start]
        while stack:
            task = stack[-1]
            if task in depth:
                stack.pop()
                continue
            pending = [
                d for d in dependencies.get(task, ()) if d not in depth and d in dependencies
            ]
            if pending:
                stack.extend(pending)
                continue
            known = [depth[d] for d in dependencies.get(task, ()) if d in depth]
            depth[task] = 1 + max(known) if known else 0
            stack.pop()
    out: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for task in dependencies:
        out[depth[task]].append(task)
    return out


def draw_dag(
    dependencies: Mapping[str, Sequence[str]], states: Mapping[str, str], logs_href: str
) -> str:
    """The SVG of the DAG; ``logs_href`` is the path to which a task's quoted id and
    ``/logs`` are appended."""
    style = _SMALL if len(dependencies) <= SMALL_MOST else _LARGE
    rows = layers(dependencies)
    where: dict[str, tuple[float, float]] = {}
    layer_of: dict[str, int] = {}
    bands: list[tuple[float, float, float, float]] = []  # each layer's box
    y = float(PAD)
    widest = 0.0
    for number, layer in enumerate(rows):
        top = y
        for i, task in enumerate(layer):
            row, col = divmod(i, style.per_row)
            x = PAD + col * (style.width + style.gap)
            where[task] = (x, top + row * (style.height + style.gap))
            layer_of[task] = number
        count = min(len(layer), style.per_row)
        lines = (len(layer) + style.per_row - 1) // style.per_row
        band_width = count * (style.width + style.gap) - style.gap
        band_height = lines * (style.height + style.gap) - style.gap
        bands.append((PAD, top, band_width, band_height))
        widest = max(widest, band_width)
        y = top + band_height + style.layer_gap
    width = widest + 2 * PAD
    height = max(y - style.layer_gap + PAD, 2 * PAD)
    parts = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img">'
    ]
    parts.append(_edges(dependencies, where, layer_of, bands, style))
    for task, (x, ty) in where.items():
        parts.append(
            _node(task, x, ty, states.get(task, "unknown"), dependencies, style, logs_href)
        )
    parts.append("</svg>")
    return "".join(parts)


def _edges(
    dependencies: Mapping[str, Sequence[str]],
    where: Mapping[str, tuple[float, float]],
    layer_of: Mapping[str, int],
    bands: Sequence[tuple[float, float, float, float]],
    style: _Style,
) -> str:
    count = sum(len(d) for d in dependencies.values())
    parts = ['<g class="edges">']
    if count <= EDGES_MOST:
        for task, deps in dependencies.items():
            tx, ty = where[task]
            for dep in deps:
                if dep not in where:
                    continue
                dx, dy = where[dep]
                parts.append(
                    f'<line x1="{dx + style.width / 2:.1f}" y1="{dy + style.height:.1f}" '
                    f'x2="{tx + style.width / 2:.1f}" y2="{ty:.1f}"/>'
                )
    else:
        bundles: dict[tuple[int, int], int] = {}
        for task, deps in dependencies.items():
            for dep in deps:
                if dep in layer_of:
                    key = (layer_of[dep], layer_of[task])
                    bundles[key] = bundles.get(key, 0) + 1
        for (src, dst), n in sorted(bundles.items()):
            sx, sy, sw, sh = bands[src]
            dx, dy, dw, _ = bands[dst]
            parts.append(
                f'<line class="bundle" x1="{sx + sw / 2:.1f}" y1="{sy + sh:.1f}" '
                f'x2="{dx + dw / 2:.1f}" y2="{dy:.1f}"><title>{n} edges</title></line>'
            )
    parts.append("</g>")
    return "".join(parts)


def _node(
    task: str,
    x: float,
    y: float,
    state: str,
    dependencies: Mapping[str, Sequence[str]],
    style: _Style,
    logs_href: str,
) -> str:
    gather = len(dependencies.get(task, ())) > 1
    classes = f"node {state_class(state)}" + (" gather" if gather else "")
    title = f"<title>{text(task)}: {text(state)}{' (gather)' if gather else ''}</title>"
    rect = (
        f'<rect class="{classes}" x="{x:.1f}" y="{y:.1f}" width="{style.width:.0f}" '
        f'height="{style.height:.0f}" rx="{3 if style.labels else 1}">{title}</rect>'
    )
    if not style.labels:
        return rect
    label = task if len(task) <= LABEL_CHARS else task[: LABEL_CHARS - 1] + "…"
    return (
        f'<a href="{text(logs_href + segment(task))}/logs">{rect}'
        f'<text x="{x + 6:.1f}" y="{y + style.height / 2 + 4:.1f}">{text(label)}</text></a>'
    )
