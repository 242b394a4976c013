"""Rendering a bench result: console table, Markdown, PNG plot, comparison with an earlier run.

A result is the JSON object of ``edge/bench_schema.json``; everything here takes that object, so
an earlier ``--json`` file can be re-rendered or compared without re-measuring.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_ID = "edge-bench/1"


class ResultError(ValueError):
    """A bench result file cannot be used (missing, not JSON, wrong schema)."""


@cache
def schema() -> dict[str, Any]:
    """The bench result JSON Schema shipped in the package."""
    text = resources.files("edge").joinpath("bench_schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validate(result: dict[str, Any], origin: str = "result") -> None:
    """Checks a result against the schema (with jsonschema when installed, else its id).

    Raises:
        ResultError: Naming the first problem and where it is.
    """
    if not isinstance(result, dict) or result.get("schema") != SCHEMA_ID:
        got = result.get("schema") if isinstance(result, dict) else type(result).__name__
        raise ResultError(f"{origin}: not an edge-bench result (schema {got!r}, "
                          f"expected {SCHEMA_ID!r})")
    try:
        import jsonschema
    except ImportError:
        return
    try:
        jsonschema.validate(result, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ResultError(f"{origin}: invalid at {where}: {e.message}") from None


def load_result(path: Path) -> dict[str, Any]:
    """Reads and validates a ``--json`` file.

    Raises:
        ResultError: When it is missing, not JSON or not a valid result.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultError(f"{path}: not readable as JSON ({e})") from None
    validate(data, str(path))
    return dict(data)


def _f(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _load(v: list[float] | None) -> str:
    return "-" if not v else " ".join(f"{x:.2f}" for x in v)


def host_lines(result: dict[str, Any]) -> list[str]:
    """Host, software and model lines."""
    h = result["host"]
    rt = h["runtime"]
    lines = [
        f"host: {h['cpu_model']} ({h['machine']}), {h['cores_logical']} logical / "
        f"{h['cores_physical'] or '?'} physical cores, {h['memory_mb']} MB, flags: "
        f"{' '.join(h['cpu_flags']) or 'none reported'}",
        f"software: Python {h['python']}, {rt['name']} {rt['version']}, numpy "
        f"{h['libraries']['numpy']}, OpenCV {h['libraries']['opencv']}, {h['os']}",
        f"models: {h['models_dir']} (manifest sha256 {str(h['manifest_sha256'])[:16]}...)",
    ]
    used = {c["model"] for c in result["stages"]} | {
        k for e in result["e2e"] for k in e.get("models", {}).values()}
    for m in result["models"]:
        if m["key"] in used:
            lines.append(f"  {m['key']:<22} {m['file']:<32} sha256 {m['sha256'][:16]}... "
                         f"({m['scheme'] or '-'})")
    return lines


def stage_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the per-stage table (header first)."""
    rows = [["stage", "model", "thr", "ms p50", "fps p50", "fps p10-p90", "budget", "x budget",
             "parts ms (median)"]]
    for c in result["stages"]:
        ratio = c["budget_ratio"]
        mark = "" if ratio is None else (" ok" if ratio >= 1 else " SLOW")
        parts = " ".join(f"{k} {v:.2f}" for k, v in c["parts_ms"].items())
        rows.append([c["stage"], c["model"], "-" if c["threads"] is None else str(c["threads"]),
                     f"{c['ms']['p50']:.3f}", f"{c['fps']['p50']:.1f}",
                     f"{c['fps']['p10']:.1f}-{c['fps']['p90']:.1f}",
                     _f(c["budget_fps"], "g"), f"{_f(ratio, '.2f')}{mark}", parts])
    return rows


def people_label(e: dict[str, Any]) -> str:
    """``6``, or ``6 small (63 px)`` for the small-people variant (person about 0.7 of a tile)."""
    px = e.get("person_px")
    return str(e["people"]) if px is None else f"{e['people']} small ({round(0.7 * px)} px)"


def e2e_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the end-to-end table (header first)."""
    rows = [["people", "seen", "model", "thr", "feed", "fps", "lat p50", "lat p99", "2D ms",
             "dropped", "RSS MB", "temp C", "load 1/5/15"]]
    for e in result["e2e"]:
        lat = e["latency_ms"] or {}
        rows.append([people_label(e), f"{e['people_seen']['mean']:.2f}",
                     f"{e['landmark']}/{e['precision']}", str(e["threads"]),
                     f"{e['feed_fps']:g}", f"{e['fps']:.1f}", _f(lat.get("p50")),
                     _f(lat.get("p99")), _f(e["core_ms"]["pose2d"]["p50_ms"], ".1f"),
                     str(e["frames_dropped"]), _f(e["peak_rss_mb"]), _f(e["temp_max_c"]),
                     _load(e["load_end"])])
    return rows


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _md_table(rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return out


def _sections(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    s = result["settings"]
    head = [f"edge-bench {result['created']}, {result['duration_s']:.0f} s, peak RSS "
            f"{result['peak_rss_mb']:.0f} MB, load average at start {_load(result['load_start'])}"
            f", at end {_load(result['load_end'])}",
            f"temperature: {_f(result['temp_c'])} C, throttled: "
            f"{'-' if result['throttled'] is None else hex(result['throttled'])}"]
    stage_note = [f"stages alone: {s['repeats']} timed calls per cell after {s['warmup']} "
                  "warm-up calls, cells interleaved; budgets (fps) "
                  + ", ".join(f"{k} {v:g}" for k, v in result["budgets_fps"].items())
                  + f"; load average {_load(result['stages_load']['start'])} -> "
                  f"{_load(result['stages_load']['end'])}"]
    return head, stage_note


def format_table(result: dict[str, Any]) -> str:
    """The console report."""
    head, stage_note = _sections(result)
    lines = head + host_lines(result)
    if result["stages"]:
        lines += ["", *stage_note, *_table(stage_rows(result))]
    if result["e2e"]:
        lines += ["", "end to end (realtime scheduler, latency = capture to annotation, ms):",
                  *_table(e2e_rows(result))]
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def format_markdown(result: dict[str, Any]) -> str:
    """The report as Markdown."""
    head, stage_note = _sections(result)
    lines = ["## edge-bench", "", *[f"- {x}" for x in head + host_lines(result)[:3]], ""]
    models = result["models"]
    if models:
        lines += _md_table([["model", "file", "sha256", "from", "scheme"]]
                           + [[m["key"], m["file"], f"`{m['sha256'][:16]}`",
                               m.get("origin") or "-", (m["scheme"] or "-")[:80]]
                              for m in models])
        lines.append("")
    if result["stages"]:
        lines += ["### Stages alone", "", *stage_note, "", *_md_table(stage_rows(result)), ""]
    if result["e2e"]:
        lines += ["### End to end", "", "Realtime scheduler; latency is capture to annotation, "
                  "ms; `seen` is the mean number of people annotated per frame.", "",
                  *_md_table(e2e_rows(result)), ""]
    lines += [f"- note: {n}" for n in result["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def compare(new: dict[str, Any], old: dict[str, Any]) -> str:
    """Ratios of ``new`` against ``old``: fps (new/old, > 1 is faster) and latency (new/old).

    Cells are matched by stage, model and threads; scenarios by people, model, precision and
    threads. Unmatched ones are listed.
    """
    lines = [f"compare: new {new['created']} on {new['host']['cpu_model']} "
             f"(load {_load(new['load_start'])}) vs old {old['created']} on "
             f"{old['host']['cpu_model']} (load {_load(old['load_start'])})"]
    if new["host"]["cpu_model"] != old["host"]["cpu_model"]:
        lines.append("note: different CPUs: the ratios compare machines, not code")
    old_sha = {m["key"]: m["sha256"] for m in old["models"]}
    changed = [m["key"] for m in new["models"]
               if m["key"] in old_sha and old_sha[m["key"]] != m["sha256"]]
    if changed:
        lines.append(f"note: different model files under the same key: {', '.join(changed)}")

    def key_s(c: dict[str, Any]) -> tuple[Any, ...]:
        return c["stage"], c["model"], c["threads"]

    def key_e(e: dict[str, Any]) -> tuple[Any, ...]:
        return e["people"], e.get("person_px"), e["landmark"], e["precision"], e["threads"]

    olds = {key_s(c): c for c in old["stages"]}
    rows = [["stage", "model", "thr", "fps old", "fps new", "new/old"]]
    for c in new["stages"]:
        o = olds.pop(key_s(c), None)
        if o is None:
            continue
        rows.append([c["stage"], c["model"], "-" if c["threads"] is None else str(c["threads"]),
                     f"{o['fps']['p50']:.1f}", f"{c['fps']['p50']:.1f}",
                     f"{c['fps']['p50'] / o['fps']['p50']:.3f}"])
    if len(rows) > 1:
        lines += ["", *_table(rows)]
    olde = {key_e(e): e for e in old["e2e"]}
    rows = [["people", "model", "thr", "fps old", "fps new", "fps new/old", "p50 new/old",
             "p99 new/old"]]
    for e in new["e2e"]:
        o = olde.pop(key_e(e), None)
        if o is None:
            continue
        ln, lo = e["latency_ms"] or {}, o["latency_ms"] or {}

        def r(a: float | None, b: float | None) -> str:
            return "-" if not a or not b else f"{a / b:.3f}"
        rows.append([people_label(e), f"{e['landmark']}/{e['precision']}", str(e["threads"]),
                     f"{o['fps']:.1f}", f"{e['fps']:.1f}", r(e["fps"], o["fps"]),
                     r(ln.get("p50"), lo.get("p50")), r(ln.get("p99"), lo.get("p99"))])
    if len(rows) > 1:
        lines += ["", *_table(rows)]
    only_new = [key_s(c) for c in new["stages"] if key_s(c) not in
                {key_s(o) for o in old["stages"]}]
    if olds or olde or only_new:
        lines.append(f"unmatched: {len(olds) + len(olde)} only in old, {len(only_new)} stage "
                     "cell(s) only in new")
    return "\n".join(lines)


def _plot_stages(ax: Any, cells: list[dict[str, Any]]) -> None:
    labels = [f"{c['stage']} {c['model']}" + ("" if c["threads"] is None else
                                              f" x{c['threads']}") for c in cells]
    y = list(range(len(cells)))
    p50 = [c["ms"]["p50"] for c in cells]
    lo = [c["ms"]["p50"] - c["ms"]["p10"] for c in cells]
    hi = [c["ms"]["p90"] - c["ms"]["p50"] for c in cells]
    ax.barh(y, p50, xerr=[lo, hi], color="tab:blue", alpha=0.7, capsize=2)
    for i, c in enumerate(cells):
        if c["budget_fps"]:
            ax.plot([1000.0 / c["budget_fps"]] * 2, [i - 0.4, i + 0.4], color="red", lw=2)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms per call (median, p10-p90; red: budget)")


def plot(result: dict[str, Any], path: Path) -> None:
    """Writes a PNG: fps and latency against people, and per-stage latency against budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in result["e2e"]:
        small = " small" if e.get("person_px") is not None else ""
        groups.setdefault(f"{e['landmark']}/{e['precision']} x{e['threads']}{small}",
                          []).append(e)
    ax1b = ax1.twinx()
    for label, es in groups.items():
        es = sorted(es, key=lambda e: e["people"])
        ppl = [e["people"] for e in es]
        line = ax1.plot(ppl, [e["fps"] for e in es], "o-", label=f"fps {label}")[0]
        for e in es:  # how many people were actually annotated
            ax1.annotate(f"seen {e['people_seen']['mean']:.1f}", (e["people"], e["fps"]),
                         textcoords="offset points", xytext=(4, 6), fontsize=7,
                         color=line.get_color())
        p50 = [(e["latency_ms"] or {}).get("p50") for e in es]
        p99 = [(e["latency_ms"] or {}).get("p99") for e in es]
        ax1b.plot(ppl, p50, "s--", color=line.get_color(), alpha=0.6, label=f"p50 ms {label}")
        ax1b.plot(ppl, p99, "^:", color=line.get_color(), alpha=0.6, label=f"p99 ms {label}")
        ax1.axhline(es[0]["feed_fps"], color="grey", lw=0.8, ls="--")
    ax1.set_xlabel("people shown in the frame")
    ax1.set_ylabel("annotations per second (grey: feed rate)")
    ax1b.set_ylabel("capture-to-annotation latency, ms")
    ax1.set_title("end to end")
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax1b.get_legend_handles_labels()
    if h1 or h2:
        ax1.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    ax1.set_ylim(bottom=0)
    ax1b.set_ylim(bottom=0)
    cells = result["stages"]
    if cells:
        _plot_stages(ax2, cells)
    else:
        ax2.text(0.5, 0.5, "stages not measured", ha="center", va="center")
        ax2.set_axis_off()
    ax2.set_title("stages alone")
    h = result["host"]
    fig.suptitle(f"edge-bench {result['created']} - {h['cpu_model']}, {h['cores_logical']} "
                 f"cores, load {_load(result['load_start'])}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
