"""The zipped file against its separate per-task files in the browser (LiteRT.js, wasm CPU, Debian's
chromium headless): memory, load time and per-task latency, side by side in one run
(`mtz-mobile bench MODEL --runtime web`).

The model is served as `mtz-mobile serve` serves it (in this process, on a free local port) with
its baselines beside it, and drive.mjs opens /bench.html once per trial and set in a fresh browser,
alternating which set goes first:

- wasm memory: the WebAssembly memory's size after loading, after running every task once;
- heap top: where a fresh 1 MiB malloc lands (runtime.js heapTopBytes), minus where it landed before
  any model was loaded: how far the allocator's heap reaches for the model(s);
- renderer RSS: VmRSS of chromium's renderer processes from /proc, after minus before loading;
- load: compiling the file(s) from bytes already fetched (loadAndCompile, accelerator wasm);
- latency: per task, the median of ``runs`` runs after ``warmup``, each run including reading the
  output; "every task once" is the joint signature's median (zipped, when the file has one) against
  the sum of the separate files' medians.

Every figure is the median over trials; ratio = zipped / separate.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from mtz_mobile.bench.core import describe_model, ratio
from mtz_mobile.bench.settings import WebSettings
from mtz_mobile.contract import JOINT_KEY
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import write_atomic

from .server import INSTALL_HINT, WEB_DIR, make_server

SETS = ("zipped", "separate")


def run_trials(model: Path, trials: int, runs: int, warmup: int, baselines=()) -> list[dict]:
    """Every trial's raw figures, as drive.mjs reports them (one fresh browser per trial and set).
    The separate files are the ones the page serves, beside the model; ``baselines``, if given, must be them."""
    server = make_server(model, port=0, quiet=True)
    try:
        info = server.RequestHandlerClass.site.current()[0]
        if info["error"]:
            raise MTZError(info["error"])
        missing = [t["name"] for t in info["manifest"]["tasks"] if t["name"] not in info["baselines"]]
        if missing:
            raise MTZError(f"no baseline file for {', '.join(missing)} beside {model}: convert with --baselines")
        served = {Path(model).resolve().parent / name for name in info["baselines"].values()}
        if any(Path(b).resolve() not in served for b in baselines):
            raise MTZError("the browser bench reads the baselines beside the model (MODEL_STEM.baseline_TASK.tflite, "
                           "as convert --baselines writes them): move them there, or drop --baselines")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            with tempfile.TemporaryDirectory() as tmp:
                job = Path(tmp) / "job.json"
                job.write_text(json.dumps({"kind": "bench", "url": url, "sets": list(SETS), "trials": trials,
                                           "runs": runs, "warmup": warmup}))
                done = subprocess.run(["node", str(WEB_DIR / "drive.mjs"), str(job)], capture_output=True, text=True)
        finally:
            server.shutdown()
        if done.returncode != 0:
            raise MTZError(f"drive.mjs failed ({done.stderr.strip().splitlines()[-1:]}): is chromium installed? {INSTALL_HINT}")
        trials = json.loads(done.stdout)["trials"]
        check_signatures(trials, info["manifest"])
        return trials
    finally:
        server.server_close()


def check_signatures(trials: list[dict], manifest: dict) -> None:
    """Each task timed on its own signature, with an output of its own size: a latency row must be
    the task it names."""
    for trial in trials:
        for task in manifest["tasks"]:
            key = trial["latency"]["signatures"].get(task["name"])
            size = len(trial["latency"]["outputs"].get(task["name"], []))
            if key != task["signature_key"] or size != math.prod(task["output"]["shape"]):
                raise MTZError(f"internal: the browser bench ({trial['set']}) timed task {task['name']} on signature "
                               f"{key!r} with {size} outputs, not its own '{task['signature_key']}'")


def figures(trial: dict) -> dict[str, float]:
    out = {"file bytes": trial["file_bytes"],
           "wasm memory after load (MiB)": trial["wasm_after_load"] / 2**20,
           "wasm memory after running every task (MiB)": trial["wasm_after_run"] / 2**20,
           "heap top after load, over runtime alone (KiB)": (trial["heap_top_after_load"] - trial["heap_top_before"]) / 1024,
           "heap top after running every task, over runtime alone (KiB)": (trial["heap_top_after_run"] - trial["heap_top_before"]) / 1024,
           "renderer RSS after load, over runtime alone (MiB)": (trial["rss_after_load"]["bytes"] - trial["rss_before"]["bytes"]) / 2**20,
           "renderer RSS after running every task, over runtime alone (MiB)": (trial["rss_after_run"]["bytes"] - trial["rss_before"]["bytes"]) / 2**20,
           "load: compile from bytes (ms)": trial["load_ms"]}
    for task, ms in trial["first_run_ms"].items():
        out[f"first run of {task} (ms)"] = ms
    medians = dict(trial["latency"]["median_ms"])
    every = medians.pop(JOINT_KEY, None) if trial["set"] == "zipped" else sum(medians.values())
    for task, ms in medians.items():
        out[f"latency {task}, median (ms)"] = ms
    if every is not None:
        out["every task once: joint 'all' (zipped) vs each file (separate) (ms)"] = every
    return out


def summarize(trials: list[dict]) -> dict[str, dict[str, float | None]]:
    per_set = {s: [figures(t) for t in trials if t["set"] == s] for s in SETS}
    rows: dict[str, dict[str, float | None]] = {}
    for name in per_set["zipped"][0]:
        z = statistics.median(f[name] for f in per_set["zipped"])
        sep = [f[name] for f in per_set["separate"] if name in f]
        s = statistics.median(sep) if sep else None
        rows[name] = {"zipped": z, "separate": s, "ratio": ratio(z, s)}
    return rows


def format_rows(rows: dict, trials: list[dict], model: Path, runs: int) -> str:
    """The figures as a Markdown table, after a line that says what was measured."""
    n = sum(t["set"] == "zipped" for t in trials)
    isolated = all(t["cross_origin_isolated"] for t in trials)
    width = max(len(name) for name in rows)
    n_files = next(len(t["files"]) for t in trials if t["set"] == "separate")
    lines = [f"{model}: zipped file vs {n_files} "
             f"separate files in LiteRT.js (wasm, CPU, 1 thread), headless chromium; medians of {n} trials, "
             f"latency over {runs} runs; cross-origin isolated clock: {isolated}", "",
             f"| {'figure':<{width}} | {'zipped':>12} | {'separate':>12} | {'ratio':>6} |",
             f"|{'-' * (width + 2)}|{'-' * 14}|{'-' * 14}|{'-' * 8}|"]
    for name, r in rows.items():
        sep = "" if r["separate"] is None else f"{r['separate']:12.3f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:6.3f}"
        lines.append(f"| {name:<{width}} | {r['zipped']:12.3f} | {sep:>12} | {ratio:>6} |")
    errors = [e for t in trials for e in t["pageErrors"] + t["consoleErrors"]]
    if errors:
        lines.append(f"page errors: {errors[:3]}")
    return "\n".join(lines)


def measure(model_path, baselines=(), settings: WebSettings = WebSettings(), out_dir=None,
              progress: bool = True) -> dict:
    """Measure ``model_path`` against the baselines beside it in the browser and return the report;
    with ``out_dir``, write report.json and report.md (its section "In the browser") there.
    ``baselines``, if given, must be those files (the page serves the model's directory only)
    (``mtz_mobile.bench.bench`` is the entry point for every target)."""
    model = Path(model_path)
    describe_model(model)   # not a zipped .tflite: refused before a browser starts
    runs, warmup = settings.runs, settings.resolved_warmup
    if progress:
        print(f"bench web: {settings.trials} fresh browser(s) per set, zipped and separate files", file=sys.stderr,
              flush=True)
    raw = run_trials(model, settings.trials, runs, warmup, baselines)
    rows = summarize(raw)
    report = {"mode": "web", "model": str(model), "trials": settings.trials, "runs": runs, "warmup": warmup,
              "figures": rows, "raw": raw}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
        write_atomic(out / "report.md", "# Bench report\n\n## In the browser (LiteRT.js)\n\n"
                     + format_rows(rows, raw, model, runs) + "\n")
    return report
