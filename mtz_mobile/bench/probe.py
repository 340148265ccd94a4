"""The child process of the host benchmark: load model files in a fresh interpreter, run, report.

Run as ``python -m mtz_mobile.bench.probe`` with a JSON request on stdin; it prints one line
``MTZ-PROBE {json}`` on stdout. Every memory figure the report shows comes from one such fresh
process, so that nothing loaded by an earlier measurement (or by TensorFlow in the parent)
is counted. Only ai-edge-litert and numpy are imported here.
"""

from __future__ import annotations

import json
import sys
import time

MARKER = "MTZ-PROBE "
# also the report's metric order (peak first): the host bench iterates this tuple
STATUS_KEYS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
# the split of the resident pages by who else maps them (/proc/self/smaps_rollup): Pss charges a
# page shared by n processes 1/n; Anonymous is heap/anonymous mmap; Private_Clean + Shared_Clean
# holds the pages of mapped files that were only read (a model or cache file mapped from disk)
SMAPS_KEYS = ("Pss", "Private_Dirty", "Private_Clean", "Shared_Clean", "Shared_Dirty", "Anonymous")
# the metrics the report compares zipped against baselines on
METRIC_KEYS = STATUS_KEYS + ("Pss", "Anonymous")
# --xnnpack-cache file: the weight cache of MODEL lives in MODEL + this suffix (see weight_cache.py)
CACHE_SUFFIX = ".xnnpack_cache"
# --transient-indirection: XNNPACK delegate flags = the default build's QS8 | QU8 (0x03) plus
# TRANSIENT_INDIRECTION_BUFFER (0x20), with which convolutions rebuild their indirection buffers in the
# shared workspace on every run instead of holding one per operator: less anonymous memory, slower runs
TRANSIENT_INDIRECTION_FLAGS = 0x23


def _read_kb(path: str, keys) -> dict[str, int]:
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                out[key] = int(value.split()[0])
    return out


def proc_status() -> dict[str, int]:
    """This process's memory counters in kB: /proc/self/status and the /proc/self/smaps_rollup split."""
    out = _read_kb("/proc/self/status", STATUS_KEYS)
    try:
        out.update(_read_kb("/proc/self/smaps_rollup", SMAPS_KEYS))
    except OSError:  # kernels before 4.14 have no smaps_rollup: the split is left out
        pass
    return out


def resident_by_file() -> dict[str, dict[str, int]]:
    """Rss and Pss in kB of every mapped file (and named mapping such as ``[heap]`` or
    ``/memfd:XNNPack``), summed over its mappings, from /proc/self/smaps: which file's pages a
    growth is made of."""
    out: dict[str, dict[str, int]] = {}
    current = None
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header: range perms offset dev inode [name]
                current = out.setdefault(" ".join(fields[5:]) or "[anonymous]", {"Rss": 0, "Pss": 0})
            elif fields[0] in ("Rss:", "Pss:") and current is not None:
                current[fields[0][:-1]] += int(fields[1])
    return out


def warm_input_generator() -> None:
    """Run the bench's input generator once, so that its code pages (numpy's random modules) are
    resident before a memory baseline and are not counted as the model's."""
    import numpy as np

    rng = np.random.default_rng(0)
    for dtype in ("float32", "int8", "bool"):
        _random_input([1], dtype, rng)


def _random_input(shape, dtype, rng):
    import numpy as np

    dtype = np.dtype(dtype)
    shape = [max(1, int(d)) for d in shape]
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    raise ValueError(f"input dtype {dtype} is not supported by the benchmark")


class InterpreterModel:
    """One file in ai_edge_litert.interpreter.Interpreter (XNNPACK applied by default)."""

    @staticmethod
    def prepare():
        from mtz_mobile import litert_runtime  # noqa: F401

        warm_input_generator()

    def __init__(self, path: str, threads: int, cache_path: str, xnnpack_flags: int | None = None):
        if cache_path or xnnpack_flags is not None:
            raise ValueError("the Interpreter runtime has no XNNPACK weight cache or flags option")
        from mtz_mobile.litert_runtime import make_interpreter
        import numpy as np

        self.interpreter = make_interpreter(path, num_threads=threads, xnnpack=True)
        rng = np.random.default_rng(0)
        self.keys = list(self.interpreter.get_signature_list())
        self.runners, self.inputs = {}, {}
        for key in self.keys:
            runner = self.interpreter.get_signature_runner(key)
            self.runners[key] = runner
            self.inputs[key] = {name: _random_input(d["shape"], d["dtype"], rng)
                                for name, d in runner.get_input_details().items()}

    def run(self, key: str) -> None:
        self.runners[key](**self.inputs[key])

    def close(self) -> None:
        self.runners = self.inputs = None
        self.interpreter = None


class CompiledModelFile:
    """One file in ai_edge_litert.compiled_model.CompiledModel on the CPU accelerator, with
    CpuOptions(num_threads, xnnpack_weight_cache_path, xnnpack_flags) — "" leaves the weight cache
    off, flags None leaves the runtime's default."""

    _environment = None

    @classmethod
    def prepare(cls):
        """Import the runtime and create the one LiteRT Environment the process shares (as an app
        would), so that a memory figure taken after this counts the model, not the runtime."""
        import os

        from ai_edge_litert import compiled_model
        from ai_edge_litert.environment import Environment, EnvironmentOptions

        if cls._environment is None:
            warm_input_generator()
            runtime_path = os.path.dirname(os.path.abspath(compiled_model.__file__))
            cls._environment = Environment.create(options=EnvironmentOptions(runtime_path=runtime_path))
        return cls._environment

    def __init__(self, path: str, threads: int, cache_path: str, xnnpack_flags: int | None = None):
        from ai_edge_litert.compiled_model import CompiledModel

        options = self.options(threads, cache_path, xnnpack_flags)
        self._serve(CompiledModel.from_file(path, environment=self.prepare(), options=options))

    @classmethod
    def from_buffer(cls, data, threads: int, cache_path: str, xnnpack_flags: int | None = None) -> "CompiledModelFile":
        """The same over the model's bytes (CompiledModel.from_buffer), which
        tools/experiments/bench_memory_floor.py compares against the file."""
        from ai_edge_litert.compiled_model import CompiledModel

        self = cls.__new__(cls)
        options = cls.options(threads, cache_path, xnnpack_flags)
        self._serve(CompiledModel.from_buffer(data, environment=cls.prepare(), options=options))
        return self

    @staticmethod
    def options(threads: int, cache_path: str, xnnpack_flags: int | None):
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        return Options(HardwareAccelerator.CPU, cpu_options=CpuOptions(
            num_threads=threads, xnnpack_weight_cache_path=cache_path or "", xnnpack_flags=xnnpack_flags))

    def _serve(self, model) -> None:
        """Every signature's input (random, fixed seed) and output buffers, made once."""
        import numpy as np

        self.model = model
        rng = np.random.default_rng(0)
        self.keys = list(model.get_signature_list())
        self.buffers = {}
        for key in self.keys:
            index = model.get_signature_index(key)
            ins, outs = model.create_input_buffers(index), model.create_output_buffers(index)
            for buf, d in zip(ins, model.get_input_tensor_details(key).values()):
                buf.write(_random_input(d["shape"], d["dtype"], rng))
            out_details = list(model.get_output_tensor_details(key).values())
            sizes = [(int(np.prod(d["shape"])), np.dtype(d["dtype"])) for d in out_details]
            self.buffers[key] = (index, ins, outs, sizes)

    def run(self, key: str) -> None:
        index, ins, outs, sizes = self.buffers[key]
        self.model.run_by_index(index, ins, outs)
        for buf, (n, dtype) in zip(outs, sizes):
            buf.read(n, dtype)

    def close(self) -> None:
        self.buffers = None
        if self.model is not None:
            self.model.close()
        self.model = None


RUNTIMES = {"interpreter": InterpreterModel, "compiled": CompiledModelFile}


def load(path: str, request: dict):
    """``cache_beside``: each file's weight cache in a file next to it, else ``cache_path`` for all."""
    cache = path + CACHE_SUFFIX if request.get("cache_beside") else request.get("cache_path") or ""
    return RUNTIMES[request["runtime"]](path, int(request["threads"]), cache, request.get("xnnpack_flags"))


def _memory(request: dict) -> dict:
    """Load every file, run the listed (file, signature) pairs ``repeats`` times each. ``before``
    is taken once the runtime is imported and set up, so the differences count the models."""
    RUNTIMES[request["runtime"]].prepare()
    before = proc_status()
    t0 = time.perf_counter()
    models = [load(p, request) for p in request["files"]]
    load_seconds = time.perf_counter() - t0
    after_load = proc_status()
    for index, key in request["runs"]:
        for _ in range(int(request.get("repeats", 3))):
            models[index].run(key)
    after_runs = proc_status()
    return {"before": before, "after_load": after_load, "after_runs": after_runs, "load_seconds": load_seconds}


def _latency(request: dict) -> dict:
    """Median-ready samples per (variant, signature), interleaved in rounds so that zipped and
    separate models see the same machine load; warm-up runs first, not recorded."""
    models = {name: [load(p, request) for p in files] for name, files in request["variants"].items()}
    jobs = [(variant, int(index), key) for variant, index, key in request["jobs"]]
    runs, warmup, rounds = int(request["runs"]), int(request["warmup"]), max(1, int(request.get("rounds", 5)))
    for variant, index, key in jobs:
        for _ in range(warmup):
            models[variant][index].run(key)
    samples = {f"{v}/{k}": [] for v, _, k in jobs}
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    clock = time.perf_counter_ns
    for n in per_round:
        for variant, index, key in jobs:
            model, out = models[variant][index], samples[f"{variant}/{key}"]
            for _ in range(n):
                t = clock()
                model.run(key)
                out.append((clock() - t) / 1000.0)
    return {"samples": samples}


def _switch(request: dict) -> dict:
    """Alternate tasks A, B, A, B…; each step's time from the switch to the task's output."""
    keys, steps, clock = request["keys"], int(request["steps"]), time.perf_counter_ns
    order = [keys[(i + 1) % len(keys)] for i in range(steps)]  # step 0 switches away from keys[0]
    out = {}

    zipped = load(request["zipped"], request)
    for key in keys:
        zipped.run(key)
    times = []
    for key in order:
        t = clock()
        zipped.run(key)
        times.append((clock() - t) / 1000.0)
    zipped.close()
    del zipped
    out["zipped_switch_signature"] = times

    files = request["baselines"]
    both = {key: load(files[key], request) for key in keys}
    for key in keys:
        both[key].run(key)
    times = []
    for key in order:
        t = clock()
        both[key].run(key)
        times.append((clock() - t) / 1000.0)
    for model in both.values():
        model.close()
    del both
    out["separate_both_resident"] = times

    current = load(files[keys[0]], request)
    current.run(keys[0])
    times = []
    for key in order:
        t = clock()
        current.close()
        current = load(files[key], request)
        current.run(key)
        times.append((clock() - t) / 1000.0)
    current.close()
    out["separate_one_resident"] = times
    return out


KINDS = {"memory": _memory, "latency": _latency, "switch": _switch}


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        result = KINDS[request["kind"]](request)
    except Exception as exc:  # reported to the parent, which turns it into one MTZError line
        print(f"probe failed: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
