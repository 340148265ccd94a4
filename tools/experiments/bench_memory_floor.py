"""Which way of loading a zipped .tflite keeps ONE resident copy of its weights, file-backed?

Issue 16: serving both tasks of the wide 784-2048-2048-10 pair from the zipped file with
CompiledModel.from_file and XNNPACK's ':memory' weight cache grows RSS by ~2x the unique weights
(a heap copy of the file + the packed weights in shared memory). This script compares, side by
side in one run, each loader × weight-cache combination, every one in its own fresh process:

  loaders: CompiledModel.from_file(path), CompiledModel.from_buffer(mmap of the file) (or of a
           bytes copy where the binding refuses an mmap), Interpreter(model_path=…) (no cache option)
  caches:  ':memory', a FILE beside the model (MODEL.xnnpack_cache): cold (absent) and warm
           (written by the previous process), and off

Per combination: growth of Anonymous, Pss and VmRSS from the runtime's set-up to after every
task ran (kB, /proc/self/smaps_rollup), split by whose pages they are (/proc/self/smaps: the model
file, the cache file, the runtime's own libraries, other files), the load time and load-to-first-
inference of every task, and each task's median latency. The
memory processes run in ``--rounds`` interleaved rounds (medians shown); latency is timed with
every combination loaded in one process, interleaved in the same rounds (side by side).

    python tools/experiments/bench_memory_floor.py --model M.tflite            # a converted zipped file
    python tools/experiments/bench_memory_floor.py --build-wide /tmp/wide       # build the wide pair first
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from mtz_mobile.bench.probe import CACHE_SUFFIX, TRANSIENT_INDIRECTION_FLAGS  # noqa: E402

# (name, loader, cache, XNNPACK flags): cache None = off, ":memory", "cold" = file absent, "warm" =
# file present; flags None = the runtime's default
COMBINATIONS = (
    ("file+:memory", "from_file", ":memory", None),
    ("file+cache-cold", "from_file", "cold", None),
    ("file+cache-warm", "from_file", "warm", None),
    ("file+cache-warm+transient-indirection", "from_file", "warm", TRANSIENT_INDIRECTION_FLAGS),
    ("file+off", "from_file", None, None),
    ("buffer(mmap)+:memory", "from_buffer", ":memory", None),
    ("buffer(mmap)+cache-warm", "from_buffer", "warm", None),
    ("interpreter(path)", "interpreter", None, None),
)
REFERENCE = "file+:memory"

CHILD = r'''
import json, mmap, statistics, sys, time
req = json.loads(sys.argv[1])
from mtz_mobile.bench.probe import CompiledModelFile, InterpreterModel, proc_status, resident_by_file

keep = []

def setup(loader):
    # the runtime imported and set up, the input generator run: "before" counts neither
    (InterpreterModel if loader == "interpreter" else CompiledModelFile).prepare()

def load(loader, model_path, cache, flags):
    # the bench's own loaders (mtz_mobile.bench.probe); returns (run(key), note)
    note = ""
    if loader == "interpreter":
        model = InterpreterModel(model_path, 1, "")
    elif loader == "from_file":
        model = CompiledModelFile(model_path, 1, cache or "", flags)
    else:
        f = open(model_path, "rb")
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            model = CompiledModelFile.from_buffer(data, 1, cache or "", flags)
            note = "from_buffer accepted the mmap"
        except TypeError as exc:
            note = "from_buffer refused the mmap (" + " ".join(str(exc).split())[:90] + "); given bytes(mmap), a heap copy"
            data = bytes(data)
            model = CompiledModelFile.from_buffer(data, 1, cache or "", flags)
        keep.append(data)
    keep.append(model)
    return model.run, note

clock = time.perf_counter
if req["kind"] == "memory":
    setup(req["loader"])
    before, files_before = proc_status(), resident_by_file()
    t0 = clock()
    run, note = load(req["loader"], req["model"], req["cache"], req["flags"])
    load_s = clock() - t0
    for k in req["keys"]:
        run(k)
    first_s = clock() - t0
    for _ in range(3):
        for k in req["keys"]:
            run(k)
    after, files_after = proc_status(), resident_by_file()
    growth = {name: {k: v[k] - files_before.get(name, {}).get(k, 0) for k in v} for name, v in files_after.items()}
    print("RESULT " + json.dumps({"before": before, "after": after, "load_s": load_s, "first_s": first_s, "note": note,
                                  "files": {n: g for n, g in growth.items() if g["Rss"] or g["Pss"]}}))
else:  # latency: every combination loaded in this one process, runs interleaved in rounds
    setup("from_file")
    runs = {name: load(loader, path, cache, flags)[0] for name, loader, path, cache, flags in req["combos"]}
    lat = {f"{name}/{k}": [] for name in runs for k in req["keys"]}
    for name, run in runs.items():
        for k in req["keys"]:
            run(k)
    for _ in range(req["rounds"]):
        for name, run in runs.items():
            for k in req["keys"]:
                for _ in range(req["runs"]):
                    t = time.perf_counter_ns(); run(k); lat[f"{name}/{k}"].append((time.perf_counter_ns() - t) / 1000)
    print("RESULT " + json.dumps({"median_us": {key: statistics.median(v) for key, v in lat.items()}}))
'''


def _child(req: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(req)], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{req} failed:\n{proc.stderr[-2000:]}")


def cache_path(model: Path, cache: str | None) -> str:
    return cache if cache == ":memory" else (str(model) + CACHE_SUFFIX if cache else "")


def run_memory(model: Path, loader: str, cache: str | None, flags: int | None, keys: list[str]) -> dict:
    """One fresh process: load, run every task, report the memory split and load→first inference."""
    cache_file = Path(str(model) + CACHE_SUFFIX)
    if cache == "cold":
        cache_file.unlink(missing_ok=True)
    elif cache == "warm" and not cache_file.exists():
        run_memory(model, loader, "cold", flags, keys)  # writes the file
    r = _child({"kind": "memory", "model": str(model), "cache": cache_path(model, cache), "loader": loader,
                "flags": flags, "keys": keys})
    r["cache_file_bytes"] = cache_file.stat().st_size if cache in ("cold", "warm") else 0
    return r


def run_latency(model: Path, keys: list[str], runs: int, rounds: int) -> dict:
    """Every combination loaded in ONE process, timed in interleaved rounds (side by side); a cold
    cache is timed as its warm one (after the first process the file exists)."""
    combos = [[name, loader, str(model), cache_path(model, "warm" if cache == "cold" else cache), flags]
              for name, loader, cache, flags in COMBINATIONS]
    return _child({"kind": "latency", "combos": combos, "keys": keys, "runs": runs, "rounds": rounds})["median_us"]


def build_wide_apart(out: Path) -> Path:
    """build_wide in a child process. The build loads the file in LiteRT to check it: a parent that
    kept LiteRT's library mapped would share its pages with every measured child, and Pss would
    charge each child half of them."""
    code = "import sys; from pathlib import Path; from wide_pair import build_wide; build_wide(Path(sys.argv[1]))"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"building the wide pair failed:\n{proc.stderr[-2000:]}")
    return out / "model.tflite"


def _mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def split_growth(r: dict, model: str, cache: str) -> dict:
    """The memory growth of one process by whose pages it is (kB): the rollup's Anonymous, Pss and
    VmRSS, shared memory (XNNPACK's ':memory' cache is a memfd), and the Rss/Pss of the model file,
    the cache file, the runtime's own libraries (code first run at load) and every other file."""
    b, a, files = r["before"], r["after"], r["files"]
    runtime = [n for n in files if "ai_edge_litert" in n]
    others = [n for n in files if n.startswith("/") and not n.startswith("/memfd:") and n not in (model, cache)
              and n not in runtime]
    return {"anon": a["Anonymous"] - b["Anonymous"], "pss": a["Pss"] - b["Pss"], "rss": a["VmRSS"] - b["VmRSS"],
            "shmem": a.get("RssShmem", 0) - b.get("RssShmem", 0),
            "model_rss": files.get(model, {}).get("Rss", 0), "cache_rss": files.get(cache, {}).get("Rss", 0),
            "runtime_pss": sum(files[n]["Pss"] for n in runtime), "others_pss": sum(files[n]["Pss"] for n in others)}


def table(results: dict, floor_bytes: int, keys: list[str]) -> list[str]:
    floor_kb = floor_bytes / 1024
    ref = results[REFERENCE]
    head = ("| combination | anon Δ MiB | shmem Δ MiB | Pss Δ MiB | VmRSS Δ MiB | model file resident MiB "
            "| cache file resident MiB | runtime library pages (Pss) MiB | other files (Pss) MiB "
            "| anon Δ / floor | Pss Δ / floor | load ms | load→first inference ms | "
            + " | ".join(f"{k} median µs" for k in keys) + " | latency / reference |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results.items():
        lat = [r["median_us"][k] for k in keys]
        rel = max(r["median_us"][k] / ref["median_us"][k] for k in keys)
        out.append(f"| {name} | {_mb(r['anon'])} | {_mb(r['shmem'])} | {_mb(r['pss'])} | {_mb(r['rss'])} | "
                   f"{_mb(r['model_rss'])} | {_mb(r['cache_rss'])} | {_mb(r['runtime_pss'])} | {_mb(r['others_pss'])} | "
                   f"{r['anon'] / floor_kb:.3f} | {r['pss'] / floor_kb:.3f} | {r['load_s'] * 1000:.1f} | "
                   f"{r['first_s'] * 1000:.1f} | " + " | ".join(f"{v:.0f}" for v in lat) + f" | {rel:.3f}× |")
    return out


def measure(model: Path, keys: list[str], combinations, rounds: int) -> dict:
    """Per combination, its memory processes' figures round by round (interleaved)."""
    out = {name: [] for name, *_ in combinations}
    for _ in range(rounds):
        for name, loader, cache, flags in combinations:
            r = run_memory(model, loader, cache, flags, keys)
            r.update(split_growth(r, str(model), cache_path(model, "warm") if cache in ("cold", "warm") else ""))
            out[name].append(r)
    return out


def medians(rounds: dict, latency: dict | None, keys: list[str]) -> dict:
    med = {}
    for name, rs in rounds.items():
        m = {k: statistics.median(r[k] for r in rs) for k in ("anon", "pss", "rss", "shmem", "model_rss", "cache_rss",
                                                                "runtime_pss", "others_pss", "load_s", "first_s")}
        m["median_us"] = {k: latency[f"{name}/{k}"] for k in keys} if latency else {}
        m["note"], m["cache_file_bytes"] = rs[0]["note"], rs[0]["cache_file_bytes"]
        med[name] = m
    return med


def original_rows(med: dict, floor_bytes: int) -> list[str]:
    """One original serving its own task, loaded the way the winner is: what its activations and the
    runtime cost without any sharing, against which the zipped file's fixed costs can be read."""
    out = ["| one original, combination | anon Δ MiB | Pss Δ MiB | model file resident MiB | cache file resident MiB "
           "| runtime library pages (Pss) MiB | Pss Δ / its own unique weights | load→first inference ms |",
           "|---|---|---|---|---|---|---|---|"]
    for name, r in med.items():
        out.append(f"| {name} | {_mb(r['anon'])} | {_mb(r['pss'])} | {_mb(r['model_rss'])} | {_mb(r['cache_rss'])} | "
                   f"{_mb(r['runtime_pss'])} | {r['pss'] * 1024 / floor_bytes:.3f} | {r['first_s'] * 1000:.1f} |")
    return out


def targets(med: dict, floor: int, keys: list[str]) -> list[str]:
    warm, ref = med["file+cache-warm"], med[REFERENCE]
    lat = max(warm["median_us"][k] / ref["median_us"][k] for k in keys)
    own = warm["pss"] - warm["runtime_pss"] - warm["others_pss"]
    speed = ref["first_s"] / warm["first_s"]
    verdict = lambda ok: "met" if ok else "missed"  # noqa: E731
    return [
        "targets for file+cache-warm (anon ≤ 0.1× floor, Pss ≤ 1.1× floor, load→first ≥ 5× faster than :memory, "
        "latency ≤ 1.05×):",
        f"  anonymous growth {warm['anon'] * 1024 / floor:.3f}× floor: {verdict(warm['anon'] * 1024 <= 0.1 * floor)}",
        f"  Pss growth {warm['pss'] * 1024 / floor:.3f}× floor: {verdict(warm['pss'] * 1024 <= 1.1 * floor)}",
        f"    of which the model's own pages (anonymous, shared memory, model and cache file) {own * 1024 / floor:.3f}× "
        f"floor; the runtime's library pages first run at load {_mb(warm['runtime_pss'])} MiB, other files "
        f"{_mb(warm['others_pss'])} MiB",
        f"  load→first inference {speed:.1f}× faster than :memory: {verdict(speed >= 5)} (the load alone "
        f"{ref['load_s'] / warm['load_s']:.1f}×: {ref['load_s'] * 1000:.1f} vs {warm['load_s'] * 1000:.1f} ms)",
        f"  per-task latency {lat:.3f}× the reference: {verdict(lat <= 1.05)}",
        f"  cache file {warm['cache_file_bytes']:,} bytes"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="a zipped .tflite (copied into a scratch directory)")
    p.add_argument("--build-wide", type=Path, metavar="DIR", help="build the wide pair in DIR and use it")
    p.add_argument("--original", type=Path, help="also measure this original (one task's own file, e.g. the "
                   "converter's MODEL.baseline_TASK.tflite) with a warm cache file, in the same rounds")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every combination")
    p.add_argument("--runs", type=int, default=20, help="timed runs per task and combination in each latency round")
    p.add_argument("--json", type=Path, help="also write the per-round figures here")
    args = p.parse_args(argv)
    if args.build_wide:
        args.model = build_wide_apart(args.build_wide)
    if args.model is None:
        p.error("give --model or --build-wide")
    from mtz_mobile.bench.core import describe_model

    info = describe_model(args.model)
    keys, floor = info["tasks"], info["unique_weight_bytes"]
    scratch = Path(tempfile.mkdtemp(prefix="memfloor-"))
    model = scratch / "model.tflite"
    shutil.copyfile(args.model, model)
    rounds = measure(model, keys, COMBINATIONS, args.rounds)
    med = medians(rounds, run_latency(model, keys, args.runs, args.rounds), keys)
    original = {}
    if args.original:
        o_info, o_model = describe_model(args.original), scratch / "original.tflite"
        shutil.copyfile(args.original, o_model)
        warm_rows = [c for c in COMBINATIONS if c[2] == "warm" and c[1] == "from_file"]
        original = medians(measure(o_model, o_info["tasks"], warm_rows, args.rounds), None, [])
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"model {args.model} ({info['file_bytes']:,} bytes), unique weight bytes (floor) {floor:,} "
          f"= {floor / 2**20:.1f} MiB; tasks {', '.join(keys)}; {args.rounds} interleaved rounds, {args.runs} "
          f"timed runs per task; medians over rounds; reference for latency: {REFERENCE}\n")
    print("\n".join(table(med, floor, keys)))
    for name, m in med.items():
        if m["note"]:
            print(f"\n{name}: {m['note']}")
    if original:
        print(f"\n{args.original} ({o_info['unique_weight_bytes']:,} bytes of weights), serving its own task:\n")
        print("\n".join(original_rows(original, o_info["unique_weight_bytes"])))
    print("\n" + "\n".join(targets(med, floor, keys)))
    if args.json:
        args.json.write_text(json.dumps({"floor_bytes": floor, "rounds": rounds, "medians": med,
                                         "original": original}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
