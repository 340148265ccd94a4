"""How to bench, per target: every setting once, with its default, its allowed values and its help line.

    HostSettings     LiteRT on this machine (bench.host)
    AndroidSettings  LiteRT's benchmark_model on a phone over adb (bench.android)
    WebSettings      LiteRT.js in headless chromium (web.bench)

Fields are ``option()``s as in ``ZipConfig``: the command line is derived from them
(``cli.options.add_settings_options``), so a new bench option is one field here; what a value may
be is checked when the object is made (``__post_init__``: the metadata's choices and minimum, then
each target's own rules), before anything is measured. A field a base class holds means the same
for every target that inherits it. The objects are frozen: what a None field stands for (the
warm-up, the weight cache, the switching steps) is computed, not written back, so a settings object
compares equal to the one it was made from. Importing this module does not start TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtz_mobile.contract import XNNPACK_CACHE_SUFFIX
from mtz_mobile.errors import MTZError
from mtz_mobile.flat_options import check_options, option

from .probe import CACHE_SUFFIX, RUNTIMES, TRANSIENT_INDIRECTION_FLAGS

CACHE_STATES = ("off", "on", "file")   # XNNPACK's weight cache: none, ':memory', a file beside the model
MEMORY_CACHE_PATH = ":memory"
FILE_CACHE_PATH = "MODEL" + CACHE_SUFFIX
RUNTIME_DETAIL = {
    "interpreter": "ai_edge_litert.interpreter.Interpreter (mtz_mobile.litert_runtime.make_interpreter), "
                   "XNNPACK applied by default; this runtime has no XNNPACK weight-cache option",
    "compiled": "ai_edge_litert.compiled_model.CompiledModel on HardwareAccelerator.CPU with "
                "CpuOptions(num_threads, xnnpack_weight_cache_path, xnnpack_flags), one shared LiteRT Environment per "
                "process",
}
DEVICE_DIR = "/data/local/tmp/mtz"
CACHE_FLAG = "--xnnpack_weight_cache_file_path={path}"
DEVICE_CACHE_PATTERN = f"{DEVICE_DIR}/MODEL.SIGNATURE{XNNPACK_CACHE_SUFFIX}"


def default_warmup(runs: int) -> int:
    """Warm-up runs before timing when none are given: a fifth of the timed runs, 1 to 20."""
    return max(1, min(20, runs // 5))


@dataclass(frozen=True)
class BenchSettings:
    """What every target times: ``runs`` timed runs after ``warmup`` untimed ones."""

    runs: int = option(50, "timed runs per signature (in the browser: per task and trial)", minimum=1)
    warmup: int | None = option(None, "warm-up runs before timing (default: runs/5, 1..20)", minimum=0)

    def __post_init__(self):
        check_options(self)

    @property
    def resolved_warmup(self) -> int:
        return default_warmup(self.runs) if self.warmup is None else self.warmup


@dataclass(frozen=True)
class CpuSettings(BenchSettings):
    """LiteRT with XNNPACK on a CPU, on the host or on a phone."""

    threads: int = option(1, "LiteRT CPU threads", minimum=1)
    xnnpack_cache: str | None = option(
        None, "XNNPACK weight cache: on = ':memory', file = MODEL.xnnpack_cache beside each model (host: checked "
              "against its stamp, rebuilt when stale; Android: one file per signature on the device, built by a cold "
              "run before the measured one) (default: host compiled file, host interpreter off, which has no such "
              "option; Android each of off, on, file)", choices=CACHE_STATES)
    timeout_s: float = option(600.0, "seconds one measurement (a fresh process, an adb command) may take",
                              minimum=1, flag="--timeout", metavar="SECONDS")


@dataclass(frozen=True)
class HostSettings(CpuSettings):
    runtime: str = option("interpreter", "LiteRT Interpreter (XNNPACK by default) or CompiledModel with "
                                         "CpuOptions", choices=tuple(RUNTIMES))
    transient_indirection: bool = option(
        False, "compiled runtime: XNNPACK's TRANSIENT_INDIRECTION_BUFFER flag, convolutions rebuild their "
               "indirection buffers on every run instead of holding them (less anonymous memory, slower runs)")
    switch_steps: int | None = option(None, "task-switching steps A,B,A,B… (default: min(runs, 50), at least 4)",
                                      minimum=2)
    memory_repeats: int = option(3, "runs of each task per fresh-process memory figure", minimum=1)

    def __post_init__(self):
        super().__post_init__()
        if self.runtime == "interpreter" and self.resolved_cache != "off":
            raise MTZError("the interpreter runtime cannot turn XNNPACK's weight cache on (ai-edge-litert's Interpreter "
                           f"has no such option): use --runtime compiled --xnnpack-cache {self.xnnpack_cache}")
        if self.transient_indirection and self.runtime != "compiled":
            raise MTZError("--transient-indirection sets an XNNPACK flag through CpuOptions, which only the compiled "
                           "runtime has: use --runtime compiled")

    @property
    def resolved_cache(self) -> str:
        # file for compiled: the best loading measured (docs/RESULTS.md, "Memory"): a warm load maps
        # the packed weights from the stamped cache file instead of packing them into anonymous memory
        if self.xnnpack_cache is not None:
            return self.xnnpack_cache
        return "file" if self.runtime == "compiled" else "off"

    @property
    def resolved_switch_steps(self) -> int:
        return max(4, min(self.runs, 50)) if self.switch_steps is None else self.switch_steps

    @property
    def cache_path(self) -> str:
        return {"on": MEMORY_CACHE_PATH, "file": FILE_CACHE_PATH}.get(self.resolved_cache, "")

    @property
    def xnnpack_flags(self) -> int | None:
        return TRANSIENT_INDIRECTION_FLAGS if self.transient_indirection else None

    def to_json(self) -> dict:
        return {"runtime": self.runtime, "runtime_detail": RUNTIME_DETAIL[self.runtime], "threads": self.threads,
                "runs": self.runs, "warmup": self.resolved_warmup, "xnnpack": True,
                "xnnpack_cache": self.resolved_cache, "xnnpack_cache_path": self.cache_path or None,
                "xnnpack_cache_chosen_by": "default" if self.xnnpack_cache is None else "user",
                "xnnpack_transient_indirection": self.transient_indirection,
                "switch_steps": self.resolved_switch_steps, "memory_repeats": self.memory_repeats}


@dataclass(frozen=True)
class AndroidSettings(CpuSettings):
    """``xnnpack_cache`` may also be a tuple of states (the API's way to run two of them)."""

    serial: str | None = option(None, "the device to run benchmark_model on (default: the only one "
                                      "attached)", flag="--adb-serial")
    benchmark_binary: str | None = option(None, "LiteRT's arm64 benchmark_model to push", metavar="PATH")

    def __post_init__(self):
        super().__post_init__()
        caches = self.caches
        if not caches or len(set(caches)) != len(caches):
            raise MTZError(f"weight-cache settings must be distinct ones of {', '.join(CACHE_STATES)}, got "
                           f"{', '.join(caches) or 'none'}: give each state once")

    @property
    def caches(self) -> tuple[str, ...]:
        """The weight-cache states to run in, in order: every one unless some are named."""
        if self.xnnpack_cache is None:
            return CACHE_STATES
        return (self.xnnpack_cache,) if isinstance(self.xnnpack_cache, str) else tuple(self.xnnpack_cache)

    def to_json(self) -> dict:
        """The report's settings: one state by name, or 'all' (off, on and file) / 'both' (two of them)."""
        detail = ("LiteRT benchmark_model on the device, --use_xnnpack=true --report_peak_memory_footprint=true, "
                  "one process per run; weight cache on = " + CACHE_FLAG.format(path=MEMORY_CACHE_PATH)
                  + "; file = " + CACHE_FLAG.format(path=DEVICE_CACHE_PATTERN) + ", one file per file and signature, "
                  "deleted (rm -f), built by a cold run (--num_runs=1 --warmup_runs=0), then the measured run "
                  "loads it warm")
        caches = self.caches
        path = DEVICE_CACHE_PATTERN if "file" in caches else MEMORY_CACHE_PATH if "on" in caches else None
        return {"runtime": "benchmark_model", "runtime_detail": detail, "threads": self.threads, "runs": self.runs,
                "warmup": self.resolved_warmup, "xnnpack": True,
                "xnnpack_cache": caches[0] if len(caches) == 1 else "both" if len(caches) == 2 else "all",
                "xnnpack_cache_path": path,
                "xnnpack_cache_chosen_by": "default" if self.xnnpack_cache is None else "user",
                "switch_steps": None}


@dataclass(frozen=True)
class WebSettings(BenchSettings):
    """LiteRT.js: one thread, no weight-cache or XNNPACK flag options."""

    trials: int = option(3, "fresh browsers per set, zipped and separate", minimum=1)


TARGETS = {"host": HostSettings, "android": AndroidSettings, "web": WebSettings}
