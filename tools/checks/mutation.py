#!/usr/bin/env python3
"""Mutation testing of the core modules with mutmut: does the suite notice when the code is wrong?

Each target is a set of modules and the tests meant to guard them. The run copies the working
tree (tracked and untracked, not ignored files) to OUT/TARGET/tree, writes mutmut's settings
there, runs ``mutmut run`` (one mutant at a time, forked from a warm pytest process; only the
tests that executed the mutated function run against it) and writes OUT/TARGET/report.md and
OUT/summary.md: killed, survived, not covered, and each survivor with its diff and, when
tools/checks/mutation_survivors.txt explains it, the reason.

    python tools/checks/mutation.py math pairing step layout      # the targets held to 85 %
    python tools/checks/mutation.py --list
    python tools/checks/mutation.py layout --out results/mutation --tests tests/test_converter.py
    python tools/checks/mutation.py step --sample 150 --seed 0   # a seeded sample where a full run takes hours
    python tools/checks/mutation.py math --rerun-survivors         # after adding tests: the survivors again

Score = killed / (mutants − explained survivors). Mutants no selected test executes count as not
killed: uncovered code is unguarded code. Timeouts count as killed (the mutant hangs the code).
Not run in CI: a target takes minutes to an hour on 2 cores. Trained test models are cached
for the run (MTZ_TEST_MODEL_CACHE) because no target mutates the training code.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPLAINED = ROOT / "tools" / "checks" / "mutation_survivors.txt"
COPIED = ["converters/", "mtz_mobile/", "tests/", "tools/", "android_demo/", "docs/bench/"]   # what the tests import or read


@dataclass(frozen=True)
class Target:
    modules: tuple[str, ...]
    tests: tuple[str, ...]
    goal: float | None = 0.85
    # seconds added to mutmut's per-mutant CPU-time budget before its x15 multiplier: for tests whose
    # session fixtures (a whole deploy) run again in every mutant's process and are not in its estimate
    timeout_constant: float | None = None


TARGETS = {
    "math": Target(("mtz_mobile/zipper/mtz_math.py", "mtz_mobile/zipper/merge.py"),
                   ("tests/test_mtz_math.py", "tests/test_zip_guards.py")),
    "pairing": Target(("mtz_mobile/zipper/pairing.py",), ("tests/test_pairing.py",)),
    # a zip-level mutant that survives runs every test that reached it: the slow zips (a minute
    # each: application models, repeated or retrained zips) are left out, the small ones stand in
    "step": Target(("mtz_mobile/zipper/step.py",), (
        "tests/test_zip_guards.py", *(f"tests/test_zipper.py::test_{t}" for t in (
            "permuted_copy_zips_back_exactly", "permuted_copy_stays_exact_with_compensation",
            "nothing_shared_reproduces_both_originals", "blocks_compute_what_the_joint_tf_model_computes",
            "parameter_accounting_matches_the_papers_formula", "mtz_beats_random_sharing",
            "end_schedule_retrains_once_after_the_last_layer")),
        "tests/test_mobile_zip.py::test_permuted_conv1d_net_zips_back",
        "tests/test_mobile_zip.py::test_permuted_separable_net_zips_back_and_converts",
        "tests/test_step_paths.py", "tests/test_conv_residual.py::test_sparse_zip_keeps_masks")),
    "layout": Target(("converters/layout.py",), ("tests/test_layout_roles.py", "tests/test_layout_proof.py")),
    # rewrites read back by LiteRT and by the flatbuffer's raw tables, a tiny zip's manifest against LiteRT's
    # signatures: seconds per mutant, where test_converter.py's conversions took ~400 s
    "flatbuffer": Target(("converters/flatbuffer.py", "converters/manifest.py"), (
        "tests/test_flatbuffer_rewrite.py", "tests/test_manifest_contents.py",
        "tests/test_buffer_alignment.py::test_rewriting_keeps_the_alignment_whatever_precedes_the_buffers"), 0.90,
        timeout_constant=60.0),   # the module fixtures' TFLite conversions (and a zip) run in every mutant's process
    # the refit against its ridge least-squares definition (dense, both solvers), the conv consumer's
    # stationarity: seconds per mutant, where test_zipper.py's zips took minutes
    "compensation": Target(("mtz_mobile/zipper/compensation.py",), (
        "tests/test_compensation_refit.py", "tests/test_low_rank.py::test_refit_from_rows_solves_the_normal_equations",
        "tests/test_conv_residual.py::test_compensation_refits_a_stream_paired_consumer_before_its_merge"), 0.90),
    # the push and the adb layer against the fake adb (a shell script over a folder): the bench tests
    # that need the suite's deploy (minutes per mutant) are left out
    "push": Target(("mtz_mobile/device.py",), ("tests/test_adb_device.py", *(f"tests/test_device.py::test_{t}" for t in (
        "parse_devices_listing_and_daemon_lines", "no_adb_on_path", "real_adb_without_a_device",
        "unauthorized_device", "several_devices_need_a_serial", "push_verifies_checksum_and_renames",
        "damaged_transfer_leaves_nothing_where_it_is_read", "push_into_the_app_files_dir",
        "damaged_copy_into_the_app_leaves_nothing_where_the_app_reads", "push_into_an_app_that_run_as_cannot_enter",
        "missing_and_wrong_benchmark_binary"))), 0.90),
    # the bench's pure parts: staleness rules, the weight cache's stamp, memory arithmetic, report.md
    "bench": Target(("mtz_mobile/bench/memory.py", "mtz_mobile/bench/report.py", "mtz_mobile/bench/staleness.py",
                     "mtz_mobile/bench/weight_cache.py"),
                    # what needs no bench run: report.md against saved reports, the staleness of real files;
                    # test_report_columns.py's and test_staleness.py's deploy (a minute per mutant) is left out
                    ("tests/test_bench_report_render.py",
                     "tests/test_staleness.py::test_each_stamp_field_invalidates_the_cache",
                     "tests/test_staleness.py::test_memory_growth_subtracts_each_processs_own_set_up"), 0.90),
    "data": Target(("mtz_mobile/data.py", "mtz_mobile/image_folder.py"),
                   ("tests/test_data.py", "tests/test_data_specs.py", "tests/test_folder_order.py",
                    *(f"tests/test_validation_split.py::test_{t}" for t in (
                       "holdout_is_stratified_seeded_and_disjoint_from_training",
                       "tasks_labelling_the_same_images_hold_out_the_same_images",
                       "npz_and_folder_may_bring_their_own_validation_set", "bad_validation_arrays_are_refused_on_one_line",
                       "bad_split_is_refused"))), 0.90, timeout_constant=30.0),   # the Fashion-MNIST loads
}

# mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into what the score needs
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout", 24: "timeout",
          -24: "timeout", 152: "timeout", 255: "timeout", 37: "killed", None: "not checked"}


def explained_survivors(path: Path = EXPLAINED) -> dict[str, str]:
    """mutant name → one-line reason it may survive, from lines ``NAME  reason`` (# comments)."""
    reasons = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if line:
            name, _, reason = line.partition(" ")
            reasons[name] = reason.strip()
    return reasons


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    if dest.exists():
        shutil.rmtree(dest)
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def write_settings(tree: Path, target: Target, tests: tuple[str, ...]) -> None:
    tests = tuple(t for t in tests if (tree / t.split("::")[0]).exists())
    if not tests:
        raise SystemExit(f"mutation: none of the tests {', '.join(target.tests)} exist: name them with --tests")
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text().split("[tool.mutmut]")[0]
    timeout = f"timeout_constant = {target.timeout_constant}\n" if target.timeout_constant else ""
    pyproject.write_text(text + "\n[tool.mutmut]\n"
                         f"source_paths = {json.dumps(list(target.modules))}\n"
                         f"pytest_add_cli_args_test_selection = {json.dumps(list(tests))}\n"
                         f"also_copy = {json.dumps(COPIED)}\n{timeout}"
                         # forked from a process that ran TensorFlow, a worker can wait forever on a
                         # lock a thread of its parent held: fork from a server that only collected
                         'process_isolation = "forkserver"\n')


def outcomes(tree: Path, modules: tuple[str, ...]) -> dict[str, str]:
    result = {}
    for module in modules:
        meta = json.loads((tree / "mutants" / (module + ".meta")).read_text())
        for name, code in meta["exit_code_by_key"].items():
            result[name] = STATUS.get(code, "suspicious")
    return result


def diff_of(tree: Path, name: str) -> str:
    out = subprocess.run(["mutmut", "show", name], cwd=tree, capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def score(status: dict[str, str], explained: dict[str, str]) -> tuple[int, int, float]:
    killed = sum(s in ("killed", "timeout") for s in status.values())
    counted = len(status) - sum(1 for n, s in status.items() if s != "killed" and n in explained)
    return killed, counted, killed / counted if counted else float("nan")


def report(name: str, target: Target, tree: Path, status: dict[str, str], seconds: float) -> str:
    explained = explained_survivors()
    killed, counted, frac = score(status, explained)
    tally = {s: sum(v == s for v in status.values()) for s in sorted(set(status.values()))}
    lines = [f"# Mutation testing: {name}", "",
             f"Modules: {', '.join(target.modules)}; tests: {', '.join(target.tests)}.",
             f"Mutants: {len(status)} ({', '.join(f'{k} {v}' for k, v in tally.items())}); "
             f"explained survivors: {sum(1 for n, s in status.items() if s != 'killed' and n in explained)}.",
             f"**Score {killed}/{counted} = {frac:.1%}**" + (f" (goal {target.goal:.0%})" if target.goal else ""),
             f"Run time {seconds / 60:.1f} min.", ""]
    for kind in ("survived", "no tests", "suspicious", "not checked"):
        names = sorted(n for n, s in status.items() if s == kind)
        if names:
            lines += [f"## {kind} ({len(names)})", ""]
            for n in names:
                why = explained.get(n)
                lines += [f"- `{n}`" + (f" — explained: {why}" if why else " — **unexplained**"),
                          "", "  ```diff", *("  " + d for d in diff_of(tree, n).splitlines()), "  ```", ""]
    return "\n".join(lines)


def run_target(name: str, out: Path, tests: tuple[str, ...] | None, children: int,
               sample: int | None = None, seed: int = 0, rerun: bool = False) -> tuple[int, int, float]:
    target = TARGETS[name]
    tree = out / name / "tree"
    if not rerun:
        copy_tree(tree)
        write_settings(tree, target, tests or target.tests)
    env = dict(os.environ, MTZ_TEST_MODEL_CACHE=str(out / "model-cache"), TF_CPP_MIN_LOG_LEVEL="2")
    log = out / name / "mutmut.log"
    log.write_text("")
    print(f"mutation: {name}: running mutmut on {', '.join(target.modules)} (log {log})", file=sys.stderr)
    start = time.perf_counter()
    names: list[str] = []
    if rerun:   # the last run's survivors only, against the working tree's tests as they are now
        verdicts = out / name / "verdicts.json"   # the last run's, kept apart from mutmut's own (it may reset them)
        previous = json.loads(verdicts.read_text()) if verdicts.exists() else outcomes(tree, target.modules)
        changed = [m for m in target.modules if (tree / m).read_bytes() != (ROOT / m).read_bytes()]
        if changed:
            raise SystemExit(f"mutation: {', '.join(changed)} changed since the last run: run {name} again in full")
        for folder in COPIED:   # everything but the mutated modules, as it is now
            for src in (ROOT / folder).rglob("*"):
                rel = src.relative_to(ROOT).as_posix()
                if src.is_file() and rel not in target.modules and "__pycache__" not in rel and "node_modules" not in rel:
                    for dest in (tree / rel, tree / "mutants" / rel):
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, dest)
        write_settings(tree, target, tests or target.tests)   # the target's tests as they are now, new ones too
        # timeouts too: a mutant that ran past the CPU budget before any test could fail (a module
        # fixture's conversion) is decided again under the target's budget as it is now
        names = sorted(n for n, s in previous.items() if s in ("survived", "no tests", "timeout"))
        if names:
            _mutmut(["run", "--max-children", str(children), *names], tree, env, log, name)
        # mutmut forgets every verdict when the test selection changed (a test file added): the ones not
        # run again keep the last run's
        now = outcomes(tree, target.modules)
        status = {n: s for n, s in (previous | {n: now[n] for n in names}).items() if s != "not checked"}
        verdicts.write_text(json.dumps(status, indent=0))
        (out / name / "report.md").write_text(report(name, target, tree, status, time.perf_counter() - start))
        return score(status, explained_survivors())
    if sample:   # generate every mutant (mutmut then stops: no mutant has this name), run a seeded sample
        _mutmut(["run", "--max-children", str(children), "no-such-mutant"], tree, env, log, name, check=False)
        every = sorted(outcomes(tree, target.modules))
        names = sorted(random.Random(seed).sample(every, min(sample, len(every))))
    _mutmut(["run", "--max-children", str(children), *names], tree, env, log, name)
    seconds = time.perf_counter() - start
    status = {n: s for n, s in outcomes(tree, target.modules).items() if not names or n in names}
    text = report(name, target, tree, status, seconds)
    if names:
        text = text.replace("\n", f"\n\nA seeded random sample (seed {seed}) of {len(names)} of the module's "
                            f"{len(every)} mutants.\n", 1)
    (out / name / "verdicts.json").write_text(json.dumps(status, indent=0))
    (out / name / "report.md").write_text(text)
    return score(status, explained_survivors())


def _mutmut(args: list[str], tree: Path, env: dict, log: Path, name: str, check: bool = True) -> None:
    with open(log, "a") as fh:
        rc = subprocess.run(["mutmut", *args], cwd=tree, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if check and rc != 0:
        raise SystemExit(f"mutation: mutmut failed on {name} (exit {rc}): see the end of {log}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("targets", nargs="*", metavar="TARGET", help=f"one or more of {', '.join(TARGETS)}")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "mutation")
    ap.add_argument("--tests", nargs="+", help="test files to run instead of the target's own")
    ap.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--sample", type=int, help="run a seeded random sample of this many mutants per target "
                    "(for targets whose tests zip real models: a full run takes hours on 2 cores)")
    ap.add_argument("--seed", type=int, default=0, help="the sample's seed")
    ap.add_argument("--rerun-survivors", action="store_true",
                    help="run only the last run's surviving, uncovered and timed-out mutants again, against the tests "
                         "and the other modules as they are now")
    ap.add_argument("--list", action="store_true", help="print the targets and exit")
    args = ap.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        ap.error(f"unknown target {unknown[0]!r}: use one of {', '.join(TARGETS)}")
    if args.list or not args.targets:
        for name, t in TARGETS.items():
            print(f"{name:10s} {', '.join(t.modules)}  ← {', '.join(t.tests)}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.targets:
        killed, counted, frac = run_target(name, args.out, tuple(args.tests) if args.tests else None,
                                           args.max_children, args.sample, args.seed, args.rerun_survivors)
        goal = TARGETS[name].goal
        rows.append(f"| {name} | {killed} | {counted} | {frac:.1%} | {f'{goal:.0%}' if goal else '—'} |")
        print(f"mutation: {name}: {killed}/{counted} killed = {frac:.1%}", file=sys.stderr)
    path = args.out / "summary.md"   # earlier runs' rows stay, this run's replace theirs
    kept = [r for r in (path.read_text().splitlines()[2:] if path.exists() else [])
            if r.split("|")[1].strip() not in args.targets]
    summary = ["| target | killed | counted | score | goal |", "|---|---:|---:|---:|---:|", *kept, *rows]
    path.write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
