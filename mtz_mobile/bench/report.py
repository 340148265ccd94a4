"""The bench report: one JSON document (schema: report.schema.json), its Markdown tables of
zipped/baselines ratios, and PNG charts — all written atomically into one directory."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path

from mtz_mobile.errors import MTZError
from mtz_mobile.schemas import validate_json

from mtz_mobile.fileio import check_output, disk_full_error, is_disk_full, partial_dir, write_atomic
from mtz_mobile.markdown import markdown_table

from .probe import TRANSIENT_INDIRECTION_FLAGS

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
REPORT_FORMAT = "mtz-mobile/bench-report"


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def new_report(mode: str, settings: dict, environment: dict, model: dict, baselines: list[dict]) -> dict:
    from mtz_mobile import __version__

    keep = ("path", "file_bytes", "sha256", "signatures", "tasks", "joint_key", "unique_weight_bytes",
            "weight_bytes_source", "has_manifest")
    return {"format": REPORT_FORMAT, "version": 1, "tool_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "mode": mode, "settings": settings, "environment": environment,
            "model": {k: model[k] for k in keep}, "baselines": baselines, "storage": None, "memory": None,
            "latency": None, "switching": None, "android": None,
            "files": {"json": "report.json", "markdown": "report.md", "charts": []}}


def validate_report(report: dict) -> None:
    validate_json(report, load_schema(), "bench report")


def read_report(path) -> dict:
    """A report written earlier, validated; a missing or damaged one fails with one line."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise MTZError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise MTZError(f"{path} is not JSON ({exc.msg}): run the bench again") from exc
    validate_report(report)
    return report


def write_report(report: dict, out_dir) -> Path:
    """Everything is written in ``<out>.partial`` first and moved into place, report.json last, so
    a complete report.json means a complete directory and a failed write (a full disk) leaves no
    half report; the caller holds ``out``'s lock."""
    from . import charts

    out = check_output(out_dir, directory=True)
    partial = partial_dir(out)
    shutil.rmtree(partial, ignore_errors=True)  # left by a run that was killed
    try:
        partial.mkdir(parents=True)
        report["files"]["charts"] = charts.write_charts(report, partial)
        validate_report(report)
        write_atomic(partial / report["files"]["markdown"], render_markdown(report))
        write_atomic(partial / report["files"]["json"], json.dumps(report, indent=1, sort_keys=False) + "\n")
        if out.exists():  # may hold other files (deploy's, the user's): replace only the report's own
            for name in report["files"]["charts"] + [report["files"]["markdown"], report["files"]["json"]]:
                os.replace(partial / name, out / name)
        else:
            os.replace(partial, out)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(partial, exc) from exc
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


# ---------------------------------------------------------------- Markdown

def _kb(v) -> str:
    return "–" if v is None else f"{v:,}"


def _x(v) -> str:
    return "–" if v is None else f"{v:.3f}×"


def _us(v) -> str:
    if v is None:
        return "–"
    return f"{v / 1000:,.2f} ms" if v >= 10000 else f"{v:,.1f} µs"


def _mb(v) -> str:
    return "–" if v is None else f"{v:,.2f}"


def _stage(m) -> str:
    return {"load": "after load", "task": f"after task {m['task']}", "all_tasks": "after all tasks",
            "joint": f"after joint signature {m['task']}"}[m["stage"]]


def _header(r: dict) -> list[str]:
    s, env, model = r["settings"], r["environment"], r["model"]
    out = [f"# Bench: {Path(model['path']).name} vs separate models ({r['mode']})", ""]
    out.append(f"Written by mtz-mobile {r['tool_version']} on {r['created']}. Every ratio below is "
               "zipped / baselines, both measured in this one run.")
    out.append("")
    if env["kind"] == "host":
        where = f"host {env['platform']} ({env['machine']}, {env['cpu_count']} CPUs), Python {env['python']}, {env['litert']}"
    else:
        where = (f"Android device {env['model']} (serial {env['serial']}, ABI {env['abi']}, SoC {env.get('soc') or '?'}, "
                 f"platform {env.get('board_platform') or '?'}), benchmark_model {env['benchmark_binary']['path']}")
    cache = s["xnnpack_cache"] + (f" ({s['xnnpack_cache_path']})" if s.get("xnnpack_cache_path") else "")
    out += [f"- Where: {where}",
            f"- Runtime: **{s['runtime']}** — {s['runtime_detail']}",
            f"- XNNPACK: on; weight cache **{cache}** (chosen by {s['xnnpack_cache_chosen_by']})"
            + (f"; **transient indirection buffers** (XNNPACK flags {TRANSIENT_INDIRECTION_FLAGS:#x}: convolutions "
               "rebuild them each run)"
               if s.get("xnnpack_transient_indirection") else ""),
            f"- Threads {s['threads']}, timed runs {s['runs']} per signature after {s['warmup']} warm-up runs", ""]
    base = r["baselines"]
    out.append("Files: zipped `" + model["path"] + "`" + (
        "; baselines " + ", ".join(f"`{b['path']}` ({b['task']})" for b in base) if base else "; no baselines given"))
    out.append("")
    return out


def _storage(r: dict) -> list[str]:
    st = r["storage"]
    out = ["## Storage", ""]
    rows = [["zipped file", _kb(st["zipped_file_bytes"]), _kb(st["baselines_file_bytes"]), _x(st["file_ratio"])],
            ["weights + biases", _kb(st["unique_weight_bytes"]), _kb(st["baselines_weight_bytes"]),
             _x(None if not st["baselines_weight_bytes"] else st["unique_weight_bytes"] / st["baselines_weight_bytes"])]]
    out += [markdown_table(["bytes", "zipped", "baselines (sum)", "ratio"], rows), ""]
    out.append(f"Unique-weight floor {st['unique_weight_bytes']:,} bytes (from the {st['weight_bytes_source']}); the "
               f"zipped file is {st['zipped_over_floor_bytes']:,} bytes above it ({_x(st['floor_ratio'])} the floor)."
               + ("" if st["saving_bytes"] is None else
                  f" Saving vs the baselines: {st['saving_bytes']:,} bytes ({100 * st['saving_fraction']:.1f} %)."))
    out.append("")
    return out


def _memory(r: dict) -> list[str]:
    return ["## Memory", ""] + (_memory_host(r["memory"]) if r["mode"] == "host" else _memory_android(r["memory"]))


def _memory_host(mem: dict) -> list[str]:
    out = ["Each row is its own fresh process. Δ = growth over the same process's figure taken after the "
           "runtime was set up and before any model was loaded. Baselines = every separate file loaded "
           "together in one process. kB. VmRSS = RssAnon (heap, packed weights) + RssFile (mmapped model "
           "pages, libraries) + RssShmem (shared memory, e.g. XNNPACK's ':memory' weight cache).", ""]
    rows = [[_stage({"stage": q["stage"], "task": q["task"]}), q["metric"], _kb(q["zipped"]), _kb(q["baselines"]),
             _x(q["ratio"]), _kb(q["zipped_delta"]), _kb(q["baselines_delta"]), _x(q["ratio_delta"])]
            for q in mem["ratios"] if q["zipped"] or q["baselines"]]  # e.g. RssShmem without a shared cache: left out
    if rows:
        out += [markdown_table(["stage", "metric", "zipped", "baselines", "ratio", "zipped Δ", "baselines Δ",
                                "ratio Δ"], rows), ""]
    rows = [[q["metric"], _kb(q["zipped_all_tasks"]), _kb(q["one_original"]), q["original_task"], _x(q["ratio"]),
             _kb(q["zipped_delta"]), _kb(q["one_original_delta"]), _x(q["ratio_delta"])]
            for q in mem.get("versus_one_original", []) if q["zipped_all_tasks"] or q["one_original"]]
    if rows:
        out += ["The zipped file serving every task vs ONE original model serving its own task (the "
                "largest of them), each in its own fresh process:", ""]
        out += [markdown_table(["metric", "zipped, all tasks", "one original", "its task", "ratio", "zipped Δ",
                                "original Δ", "ratio Δ"], rows), ""]
    rows = []
    for m in mem["measurements"]:
        a, b = m["after"], m["before"]
        rows.append([m["variant"], _stage(m), _kb(a["VmHWM"]), _kb(a["VmRSS"]), _kb(a.get("Pss")),
                     _kb(a.get("Anonymous", a["RssAnon"])), _kb(a["RssFile"]), _kb(a.get("RssShmem")),
                     _kb(_sum(a, "Private_Clean", "Private_Dirty")), _kb(_sum(a, "Shared_Clean", "Shared_Dirty")),
                     _kb(_delta(m, "VmRSS")), _kb(_delta(m, "Pss")), _kb(_delta(m, "Anonymous")),
                     f"{m['load_seconds'] * 1000:.1f}"])
    caches = [[f"`{c['cache_file']}`", c["found"], "yes" if c["rebuilt"] else "no",
               "–" if c["cold_load_seconds"] is None else f"{c['cold_load_seconds'] * 1000:.1f}", _kb(c["cache_bytes"])]
              for c in mem.get("weight_cache_files") or []]
    if caches:
        out += ["XNNPACK weight cache files (checked against their stamps before the run; one found stale, "
                "truncated or corrupted is deleted and rebuilt by a cold load, so every row below is a warm load):", ""]
        out += [markdown_table(["cache file", "found", "rebuilt", "cold load ms", "bytes"], caches), ""]
    out += ["All measurements (Pss charges a page shared with n processes 1/n; anonymous = heap and anonymous "
            "mmap, RssFile = file-backed pages, RssShmem = shared memory; private/shared = mapped by this process "
            "only / by others too, from /proc/self/smaps_rollup):", ""]
    out += [markdown_table(["variant", "stage", "VmHWM (peak)", "VmRSS", "Pss", "anonymous", "RssFile", "RssShmem",
                            "private", "shared", "VmRSS Δ", "Pss Δ", "anonymous Δ", "load ms"], rows), ""]
    return out


def _sum(status: dict, *keys):
    return None if any(k not in status for k in keys) else sum(status[k] for k in keys)


def _delta(m: dict, key: str):
    a, b = m["after"].get(key), m["before"].get(key)
    return None if a is None or b is None else a - b


def _memory_android(mem: dict) -> list[str]:
    out = ["From benchmark_model (one process per run; a baseline runs alone, so 'baselines' is the "
           "matching single-task file). MB as printed by the tool.", ""]
    rows = [[q["task"] or "", q.get("xnnpack_cache") or "", q["metric"], _mb(q["zipped"]), _mb(q["baselines"]),
             _x(q["ratio"])] for q in mem["ratios"]]
    if rows:
        out += [markdown_table(["signature", "weight cache", "metric", "zipped", "baseline", "ratio"], rows), ""]
    return out


def _latency(r: dict) -> list[str]:
    lat = r["latency"]
    out = ["## Latency per signature", ""]
    rows = [[q["signature"], q["xnnpack_cache"], q["statistic"], _us(q["zipped_us"]), _us(q["baselines_us"]),
             _x(q["ratio"]), q["note"]] for q in lat["ratios"]]
    if rows:
        out += [markdown_table(["signature", "weight cache", "statistic", "zipped", "baselines", "ratio", "compared"],
                               rows), ""]
    rows = [[e["variant"], e["signature"], e["xnnpack_cache"], _us(e["median_us"]), _us(e["p90_us"]), _us(e["mean_us"]),
             str(e["runs"]), e["source"]] for e in lat["entries"]]
    out += [markdown_table(["variant", "signature", "weight cache", "median", "p90", "mean", "runs", "source"], rows),
            ""]
    return out


def _switching(r: dict) -> list[str]:
    sw = r["switching"]
    if not sw:
        return []
    out = ["## Task switching", ""]
    out.append(f"{sw['steps']} steps alternating {sw['sequence'][:40]}{'…' if len(sw['sequence']) > 40 else ''}; "
               "each step is timed from the switch to the task's output.")
    out.append("")
    z = sw["modes"]["zipped_switch_signature"]["median_us"]
    rows = []
    for name in ("zipped_switch_signature", "separate_one_resident", "separate_both_resident"):
        m = sw["modes"][name]
        rows.append([name, sw["definitions"][name], _us(m["median_us"]), _us(m["p90_us"]),
                     _x(m["median_us"] / z if z else None)])
    return out + [markdown_table(["mode", "what a step does", "median", "p90", "ratio to zipped"], rows), ""]


def _android_runs(r: dict) -> list[str]:
    a = r["android"]
    if not a:
        return []
    out = ["## benchmark_model runs", ""]
    if a.get("listed_signatures") is not None:
        out += ["Signatures listed by `--list_signatures`: " + ", ".join(a["listed_signatures"]), ""]
    rows = []
    for run in a["runs"]:
        p = run["parsed"]
        rows.append([run["variant"], run["signature"], run["xnnpack_cache"], run.get("phase", "measured"),
                     _us(p.get("init_us")), _us(p["inference_avg_us"]), _us(p.get("median_us")), _mb(p.get("peak_mb")),
                     _mb(p.get("overall_mb")), p["format"]])
    out += [markdown_table(["file", "signature", "weight cache", "phase", "Init", "Inference (avg)", "median",
                            "peak MB", "overall MB", "output format"], rows), ""]
    return out + _cache_loads(a.get("cache_loads") or [])


def _cache_loads(loads: list[dict]) -> list[str]:
    if not loads:
        return []
    rows = [[q["variant"], q["signature"], f"`{q['cache_file']}`", _us(q["cold_init_us"]), _us(q["warm_init_us"]),
             _x(q["ratio"])] for q in loads]
    return ["Weight cache file: benchmark_model's Init when the run builds the file (cold: deleted first, "
            "--num_runs=1 --warmup_runs=0) and when the measured run loads it (warm):", "",
            markdown_table(["file", "signature", "cache file", "cold Init", "warm Init", "cold / warm"], rows), ""]


def _charts(r: dict) -> list[str]:
    charts = r["files"]["charts"]
    return ["## Charts", ""] + [f"![{c}]({c})" for c in charts] + [""] if charts else []


SECTIONS = (_header, _storage, _memory, _latency, _switching, _android_runs, _charts)


def render_markdown(r: dict) -> str:
    return "\n".join(line for section in SECTIONS for line in section(r))
