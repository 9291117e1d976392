"""``report.md`` of ``t2i compare``, written from ``report.json``'s content alone."""

from __future__ import annotations

from typing import Any

from t2i.compare.scores import ALIGNMENT, ATTRIBUTES
from t2i.compare.stats import MIN_PROMPTS

MiB = 2**20


def _iv(d: dict[str, Any] | None) -> str:
    if not d or d.get("value") is None:
        return "-"
    if d.get("low") is None:
        return f"{d['value']:.3f}"
    return f"{d['value']:.3f} [{d['low']:.2f}, {d['high']:.2f}]"


def _num(value: Any, fmt: str = ".2f", scale: int = 1, missing: str = "unknown") -> str:
    """``value`` formatted (divided by ``scale``); ``missing`` for None (not recorded, or a
    figure undefined at these counts: diversity with one seed)."""
    if value is None:
        return missing
    return format(value / scale if scale != 1 else value, fmt)


def _main_table(report: dict[str, Any]) -> list[str]:
    b = str(report["settings"]["batch_size"])
    head = ("recipe", "plugin", "shape", "overall", "single", "pair", "FD", "diversity",
            "img/s b1", f"img/s b{b}", "cold start s", "parameters", "weights MiB",
            "peak MiB", "train GPU-s", "images seen")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in report["recipes"]:
        t, ips = r["training"], r["images_per_second"]
        cells = [
            f"`{r['recipe']}`", r["plugin"], r["shape"],
            *(_iv(r["alignment"].get(f)) for f in ALIGNMENT),
            _num(r["frechet_distance"], missing="-"), _num(r["diversity"], missing="-"),
            _num(ips.get("1")), _num(ips.get(b)), _num(r["cold_start_seconds"]),
            f"{r['parameters']:,}", _num(r["weights_bytes"], ".1f", MiB),
            _num(r["peak_memory_bytes"], ".0f", MiB), _num(t["gpu_seconds"], ".0f"),
            _num(t["images_seen"], ","),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _attribute_table(report: dict[str, Any]) -> list[str]:
    names = [a for a in ATTRIBUTES if any(a in r["attributes"] for r in report["recipes"])]
    lines = ["| recipe | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for r in report["recipes"]:
        cells = [_iv(r["attributes"].get(a)) for a in names]
        lines.append(f"| `{r['recipe']}` | " + " | ".join(cells) + " |")
    return lines


def _differences(report: dict[str, Any]) -> list[str]:
    diffs = report["differences"]
    if not diffs:
        return ["Fewer than two recipes ran: no differences to test."]
    tested = [d for d in diffs if d.get("testable", True)]
    sig = [d for d in tested if d["significant"]]
    lines = [f"{len(sig)} of {len(tested)} paired differences tested are significant "
             "(the 95% interval of `a - b` over prompts excludes 0):", ""]  # fmt: skip
    lines += [
        f"- {d['figure']}: `{d['a']}` - `{d['b']}` = {_iv(d['difference'])}" for d in sig
    ] or ["- none"]
    if len(tested) < len(diffs):
        lines += ["", f"{len(diffs) - len(tested)} differences rest on fewer than "
                  f"{MIN_PROMPTS} prompts and are not tested (raise --prompts)."]  # fmt: skip
    return lines


def _figures(report: dict[str, Any]) -> list[str]:
    f = report["figures"]
    if "note" in f:
        return [f["note"]]
    lines = []
    if f.get("scatter"):
        lines += [f"![alignment vs images/s]({f['scatter']})", ""]
    if f.get("attributes"):
        lines += [f"![per-attribute alignment]({f['attributes']})", ""]
    for field, name in f.get("sweeps", {}).items():
        lines += [f"![alignment vs {field}]({name})", ""]
    for recipe, files in f.get("recipes", {}).items():
        lines.append(f"- `{recipe}`: [sample grid]({files['samples']}), "
                     f"[diversity grid]({files['diversity']})")  # fmt: skip
    return lines


def _devices(report: dict[str, Any]) -> str:
    used = sorted({r["device"] for r in report["recipes"]})
    return ", ".join(used) or report["settings"]["device"] or "default"


def _notes(report: dict[str, Any]) -> list[str]:
    lines = []
    methods = sorted({r["memory_method"] for r in report["recipes"]})
    if methods:
        lines.append(f"- peak memory: {'; '.join(methods)}")
    lines.append("- cold start: `Engine.build` + the first image, in this process (a plugin's "
                 "modules are imported by the first recipe that needs them)")  # fmt: skip
    lines.append("- training compute: from the run records of the model folder's JSON "
                 "(`unknown`: not recorded)")  # fmt: skip
    for r in report["recipes"]:
        t = r["training"]
        if t["untimed_runs"] or t["cpu_seconds"]:
            cpu = _num(t["cpu_seconds"], ".0f")
            lines.append(
                f"- `{r['recipe']}`: {t['runs']} training runs recorded, "
                f"{t['untimed_runs']} without a recorded time, CPU-s {cpu}"
            )
    for recipe, why in report["sweeps_not_run"].items():
        lines.append(f"- `{recipe}`: no sweep, {why}")
    if report["settings"]["n_seeds"] < 2:
        lines.append("- diversity needs two seeds or more (`-`: undefined with --seeds 1)")
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    """The whole ``report.md``."""
    s = report["settings"]
    lines = [
        "# t2i compare: the families on the shapes benchmark",
        "",
        f"prompt set `{report['prompt_set_version']}`, {s['n_prompts']} prompts x "
        f"{s['n_seeds']} seeds (from {s['seed']}), {s['size']} px, device "
        f"`{_devices(report)}`; intervals: {report['interval']}.",
        "",
        *_main_table(report),
        "",
        "## Per attribute",
        "",
        *_attribute_table(report),
        "",
        "## Significant differences",
        "",
        *_differences(report),
        "",
    ]
    if report["skipped"]:
        lines += ["## Skipped", ""]
        lines += [f"- `{k['recipe']}`: {k['reason']}" for k in report["skipped"]] + [""]
    lines += ["## Figures", "", *_figures(report), "", "## Notes", "", *_notes(report)]
    return "\n".join(lines) + "\n"
