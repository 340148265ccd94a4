#!/usr/bin/env python3
"""The plain `mtz-mobile deploy` of two MobileNetV3Small as a user has them, timed stage by stage,
default recipe against ``--preset paper`` side by side.

    python tools/experiments/v3_deploy.py --out results/v3_deploy            # everything, resumable
    python tools/experiments/v3_deploy.py --out results/v3_deploy --presets default   # one side only

What it builds (each step skipped when its output is there, seeded):

1. two image folders, ``OUT/data/a`` and ``OUT/data/b`` (``train/CLASS/*.png``, ``test/CLASS/*.png``):
   Fashion-MNIST classes 0–4 and 5–9, each task's images drawn from its own half of the training set
   (and of the test set), ``TRAIN_PER_CLASS`` training and ``TEST_PER_CLASS`` test images per class,
   zero-padded to 32×32 and written as RGB PNGs (grey repeated), so ``dir:PATH`` loads them as they are;
2. two ``keras.applications.MobileNetV3Small(alpha=0.75, weights=None, input_shape=(32, 32, 3),
   classes=5)`` trained by Keras' ``fit`` (BatchNorm momentum 0.9, at most ``EPOCHS`` epochs, the best
   on a 10 % hold-out kept), in ``OUT/refs`` with a reference.json in train-reference's format, from
   which the default preset reads the references' training length;
3. ``mtz-mobile deploy refs/a.keras refs/b.keras --data dir:… --data dir:… --out OUT/deploy_PRESET``
   with nothing else (``default``) and with ``--preset paper``, each in a fresh process under a
   time limit (``--limit-paper``, ``--limit-default``), deleted first so that every stage runs.

The deploy runs through the CLI's own entry point in a child process that wraps the pipeline's
stage functions (zip, convert, page samples, bench, summary) with timers: per stage the wall time,
the CPU time (user + system of the process and its children) and the peak resident memory (VmHWM,
reset at each stage's start through /proc/self/clear_refs), and the machine's load (``uptime``)
before and after. Inside the zip the time is also split by phase (preflight, calibration forward
passes, Hessians, factorisations, metric, pairing, merges, compensation, retraining, checkpoints,
validation). A run stopped at its limit is reported with the stage it was in and the zip's last line.
Writes ``OUT/timings.json`` and ``OUT/timings.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
TASKS = {"a": range(0, 5), "b": range(5, 10)}
TRAIN_PER_CLASS = 1200     # 6,000 training images per task
TEST_PER_CLASS = 300       # 1,500 test images per task (the 80/20 split of a 7,500-image folder)
# At most; early stopping on the hold-out keeps the best epoch. With Keras' BatchNorm momentum
# (0.999 in the application, 0.99 as train-reference sets it) MobileNetV3Small on 6,000 images
# answered one class for every image at inference after 4-6 epochs (the moving statistics lag the
# weights), which the preflight rightly refuses; 0.9 follows the weights within a few dozen steps.
EPOCHS = 5
PATIENCE = 2
BATCH = 64
BN_MOMENTUM = 0.9
SEED = 0
PRESETS = {"default": [], "paper": ["--preset", "paper"]}
STAGES = ["zip", "convert", "page samples", "bench", "summary"]


def uptime() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


# ---------------------------------------------------------------- 1. the image folders

def make_folders(out: Path) -> dict[str, Path]:
    from PIL import Image

    from mtz_mobile.data import load_fashion_mnist_raw

    folders = {t: out / "data" / t for t in TASKS}
    if all((f / "done").is_file() for f in folders.values()):
        return folders
    raw = load_fashion_mnist_raw()
    rng = np.random.default_rng(SEED)
    halves = {}
    for split in ("train", "test"):
        order = rng.permutation(len(raw[f"y_{split}"]))
        halves[split] = dict(zip(TASKS, np.array_split(order, 2)))   # task a: the first half, b: the second
    for (task, classes), folder in zip(TASKS.items(), folders.values()):
        for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
            x, y, idx = raw[f"x_{split}"], raw[f"y_{split}"], halves[split][task]
            for c in classes:
                chosen = idx[y[idx] == c][:per_class]
                target = folder / split / CLASS_NAMES[c]
                target.mkdir(parents=True, exist_ok=True)
                for j in chosen:
                    img = np.pad(x[j], 2)   # 28×28 → 32×32, centred, as train-reference pads
                    Image.fromarray(np.repeat(img[:, :, None], 3, axis=2)).save(target / f"{j:05d}.png")
        (folder / "done").write_text("ok\n")
    return folders


# ---------------------------------------------------------------- 2. the references

def train_references(out: Path, folders: dict[str, Path], epochs: int) -> Path:
    """a.keras, b.keras and a reference.json in train-reference's format (the presets read the training
    length from it, the preflight the validation error), trained here with Keras' own fit."""
    import keras
    import tensorflow as tf

    from mtz_mobile.data import error_rate, load_task_data

    refs = out / "refs"
    if (refs / "reference.json").is_file():
        return refs
    refs.mkdir(parents=True, exist_ok=True)
    records = []
    for seed, (name, folder) in enumerate(folders.items(), start=1):
        data = load_task_data(f"dir:{folder}").holdout(0.1)   # the hold-out picks the epoch kept
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        model = keras.applications.MobileNetV3Small(alpha=0.75, weights=None, input_shape=(32, 32, 3), classes=5,
                                                    include_preprocessing=False)   # [0, 1] pixels, as dir: loads
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = BN_MOMENTUM
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["sparse_categorical_accuracy"])
        stop = keras.callbacks.EarlyStopping(monitor="val_sparse_categorical_accuracy", mode="max",
                                             patience=PATIENCE, restore_best_weights=True)
        history = model.fit(data.x_train, data.y_train, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=2,
                            validation_data=data.validation, callbacks=[stop])
        path = refs / f"{name}.keras"
        model.save(path)
        epochs_run = len(history.history["loss"])
        records.append({"name": name, "path": str(path), "data": data.spec, "seed": seed, "arch": "mobilenet_v3_small",
                        "epochs": epochs, "epochs_run": epochs_run, "batch_size": BATCH,
                        "iterations": epochs_run * -(-len(data.y_train) // BATCH),
                        "validation_error": error_rate(model.predict(data.x_val, verbose=0), data.y_val),
                        "test_error": error_rate(model.predict(data.x_test, verbose=0), data.y_test)})
    (refs / "reference.json").write_text(json.dumps(records, indent=1) + "\n")
    return refs


# ---------------------------------------------------------------- 3. the timed deploys

def deploy_argv(refs: Path, folders: dict[str, Path], target: Path, preset: str) -> list[str]:
    argv = ["deploy", str(refs / "a.keras"), str(refs / "b.keras")]
    for f in folders.values():
        argv += ["--data", f"dir:{f}"]
    return argv + ["--out", str(target)] + PRESETS[preset]


def time_deploy(out: Path, refs: Path, folders: dict[str, Path], preset: str, limit: float) -> dict:
    import shutil

    target = out / f"deploy_{preset}"
    record = out / f"stages_{preset}.json"
    log = out / f"deploy_{preset}.log"
    for p in (target, target.with_name(target.name + ".partial"), record):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "_probe", str(record), "--",
           *deploy_argv(refs, folders, target, preset)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before, t0 = load_average(), time.perf_counter()
    with open(log, "w") as sink:
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = child.wait(timeout=limit)
            stopped = False
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGTERM)   # only the process group this script started
            rc, stopped = child.wait(), True
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    probe = json.loads(record.read_text()) if record.is_file() else {"stages": {}}
    return {"preset": preset, "command": "mtz-mobile " + " ".join(deploy_argv(refs, folders, target, preset)),
            "rc": rc, "stopped_at_limit": stopped, "limit_s": limit, "wall_s": wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_gb": after.ru_maxrss / 2**20, "load_before": load_before, "load_after": load_average(),
            "stages": probe["stages"], "phases": probe.get("phases", {}), "phases_cpu": probe.get("phases_cpu", {}),
            "current": probe.get("current"),
            "last_line": _last_progress_line(log)}


def _last_progress_line(log: Path) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    zip_lines = [ln for ln in lines if ln.startswith("zip")]
    return (zip_lines or lines or [""])[-1][:200]


# ---------------------------------------------------------------- the probe (child process)

class StageMeter:
    """Per stage: wall, CPU (self + children) and VmHWM, written to ``record`` after every change."""

    def __init__(self, record: Path):
        self.record, self.stages, self.current = record, {}, None
        self.timer = None

    def wrap(self, owner, name: str, stage: str) -> None:
        if not hasattr(owner, name):   # the pipeline was refactored: say so rather than time nothing silently
            print(f"v3_deploy: {owner.__name__}.{name} not found, stage {stage} not timed", file=sys.stderr)
            return
        fn, meter = getattr(owner, name), self

        def timed(*args, **kwargs):
            meter.start(stage)
            try:
                return fn(*args, **kwargs)
            finally:
                meter.stop(stage)

        setattr(owner, name, timed)

    def start(self, stage: str) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")   # resets VmHWM to the current RSS
        except OSError:
            pass
        self.current = {"stage": stage, "wall": time.perf_counter(), "cpu": _cpu(), "started": time.time()}
        self.save()

    def stop(self, stage: str) -> None:
        self.stages[stage] = {"wall_s": time.perf_counter() - self.current["wall"],
                              "cpu_s": _cpu() - self.current["cpu"], "peak_rss_gb": _vmhwm_gb(),
                              "load": load_average()}
        self.current = None
        self.save()

    def save(self) -> None:
        phases = self.timer.totals if self.timer is not None else {}
        phases_cpu = getattr(self.timer, "cpu", {})
        current = None if self.current is None else {"stage": self.current["stage"],
                                                     "for_s": time.time() - self.current["started"]}
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stages": self.stages, "phases": phases, "phases_cpu": phases_cpu,
                                   "current": current}, indent=1))
        tmp.replace(self.record)


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _vmhwm_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def probe(record: Path, argv: list[str]) -> int:
    """Run the CLI with ``argv``, its deploy stages and zip phases timed (see the module docstring)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_zip_graphs import SplitTimer

    from mtz_mobile import pipeline
    from mtz_mobile.cli import main as cli_main
    from mtz_mobile.zipper import run, step

    meter = StageMeter(record)
    for name, stage in (("_zip_stage", "zip"), ("_convert_stage", "convert"), ("_page_samples", "page samples"),
                        ("_bench_stage", "bench"), ("summarize", "summary")):
        meter.wrap(pipeline, name, stage)
    timer = SplitTimer()
    for totals in (getattr(timer, name) for name in ("totals", "cpu")):   # wall and, where kept, CPU
        if isinstance(totals, dict):
            totals.update({c: 0.0 for c in ("preflight", "retrain", "checkpoint", "validation")})
    timer.install()
    from mtz_mobile import api, preflight
    from mtz_mobile.zipper import validation

    timer.wrap(api, "checked_data", "preflight")
    timer.wrap(preflight, "checked_data", "preflight")
    timer.wrap(step, "retrain_tasks", "retrain")
    timer.wrap(run, "retrain_tasks", "retrain")
    timer.wrap(run.Checkpoint, "save", "checkpoint")
    timer.wrap(validation.Validation, "__init__", "validation")
    timer.wrap(validation.Validation, "report", "validation")
    meter.timer = timer
    # the layer loop's own Progress line: save the phase split as the zip goes, for a run stopped at its limit
    original_advance = run.Progress.advance

    def advance(self, *args, **kwargs):
        meter.save()
        return original_advance(self, *args, **kwargs)

    run.Progress.advance = advance
    try:
        return cli_main(argv)
    finally:
        meter.save()


# ---------------------------------------------------------------- the table

def table(results: list[dict]) -> str:
    from mtz_mobile.markdown import markdown_table

    head = ["stage"]
    for r in results:
        head += [f"{r['preset']} wall s", f"{r['preset']} CPU s", f"{r['preset']} peak RSS GB"]
    rows = []
    for stage in STAGES + ["total (process)"]:
        row = [stage]
        for r in results:
            s = r["stages"].get(stage)
            if stage == "total (process)":
                s = {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "peak_rss_gb": r["peak_rss_gb"]}
            if s is None:
                cur = r.get("current") or {}
                ran = r["wall_s"] - sum(v["wall_s"] for v in r["stages"].values())   # with the process start
                mark = f"stopped after about {ran:.0f} s" if r["stopped_at_limit"] and cur.get("stage") == stage else "-"
                row += [mark, "-", "-"]
            else:
                row += [f"{s['wall_s']:.1f}", f"{s['cpu_s']:.1f}", f"{s['peak_rss_gb']:.2f}"]
        rows.append(row)
    lines = [markdown_table(head, rows), ""]
    for r in results:
        state = (f"stopped at its {r['limit_s']:.0f} s limit in {(r.get('current') or {}).get('stage')}; last line: "
                 f"{r['last_line']}" if r["stopped_at_limit"] else f"exit {r['rc']}")
        lines.append(f"- {r['preset']}: {state}; load average {r['load_before']} before, {r['load_after']} after")
        if r["phases"]:
            split = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["phases"].items(), key=lambda kv: -kv[1])
                              if v >= 0.05)
            lines.append(f"  zip phases (exclusive wall s): {split}")
        if r.get("phases_cpu"):
            split = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["phases_cpu"].items(), key=lambda kv: -kv[1])
                              if v >= 0.05)
            lines.append(f"  zip phases (exclusive CPU s of the process): {split}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_probe"]:
        return probe(Path(argv[1]), argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="the references' training epochs")
    parser.add_argument("--limit-default", type=float, default=1800.0,
                        help="seconds before the default deploy is stopped")
    parser.add_argument("--limit-paper", type=float, default=1500.0, help="seconds before the paper deploy is stopped")
    parser.add_argument("--reuse", action="store_true", help="print the table of the timings already in --out")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "timings.json"
    results = json.loads(saved.read_text()) if saved.is_file() else []
    if not args.reuse:
        folders = make_folders(args.out)
        refs = train_references(args.out, folders, args.epochs)
        for preset in args.presets:
            limit = args.limit_paper if preset == "paper" else args.limit_default
            print(f"deploy ({preset}) under a {limit:.0f} s limit, load {load_average()}", flush=True)
            result = time_deploy(args.out, refs, folders, preset, limit)
            # read again: a run of the other preset may have finished meanwhile (run side by side)
            results = json.loads(saved.read_text()) if saved.is_file() else []
            results = [r for r in results if r["preset"] != preset] + [result]
            results.sort(key=lambda r: list(PRESETS).index(r["preset"]))
            saved.write_text(json.dumps(results, indent=1) + "\n")
    text = table(results)
    (args.out / "timings.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
