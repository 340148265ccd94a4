"""Outputs for real: one writer per output (a second process is refused with the holder's pid), a
full disk ends in one line with nothing half-written left, and deploy redoes exactly the stages
whose settings changed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtz_mobile.bench.settings import HostSettings
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import lock_path, output_lock, write_atomic

ROOT = Path(__file__).resolve().parents[1]
DISK_FULL = re.compile(r"^mtz-mobile: error: disk full while writing \S+: free some space or choose another --out$")

# A child that runs a snippet against the Python API and ends like the CLI does: one line, exit 2.
# LIMIT() in the snippet caps the size of any file it writes from then on, a small disk where tmpfs
# cannot be mounted (the write fails with EFBIG instead of ENOSPC).
CHILD = textwrap.dedent("""
    import resource, signal, sys
    from mtz_mobile.errors import MTZError

    def LIMIT():
        limit = int(sys.argv[1])
        if limit:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    try:
        exec(sys.argv[2], {"LIMIT": LIMIT})
    except MTZError as exc:
        print(f"mtz-mobile: error: {exc}", file=sys.stderr)
        sys.exit(2)
""")


def run_child(code: str, fsize_limit: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", CHILD, str(fsize_limit), textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, timeout=300)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [l for l in proc.stderr.splitlines() if l.startswith("mtz-mobile")]


class SmallDisk:
    """A directory on a filesystem of ``size`` bytes: a tmpfs where this process may mount one,
    else a plain directory whose writers run under RLIMIT_FSIZE = ``file_limit`` (default ``size``)."""

    def __init__(self, root: Path, size: int, file_limit: int | None = None):
        self.root, self.size, self.file_limit = root, size, file_limit or size
        root.mkdir()
        # MTZ_TEST_NO_TMPFS=1 tries the file-size-limit way where a mount would work
        self.mounted = not os.environ.get("MTZ_TEST_NO_TMPFS") and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], capture_output=True).returncode == 0

    @property
    def limit(self) -> int:
        return 0 if self.mounted else self.file_limit

    def close(self):
        if self.mounted:
            subprocess.run(["umount", str(self.root)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    disks = []

    def make(size: int, file_limit: int | None = None) -> SmallDisk:
        disks.append(SmallDisk(tmp_path / f"disk{len(disks)}", size, file_limit))
        return disks[-1]

    yield make
    for d in disks:
        d.close()


@contextlib.contextmanager
def held_by_another_process(*outs: Path):
    """A real second process holding the output locks of ``outs`` until the block ends."""
    code = ("import contextlib, sys\nfrom mtz_mobile.fileio import output_lock\n"
            "with contextlib.ExitStack() as s:\n"
            f"    [s.enter_context(output_lock(p)) for p in {[str(o) for o in outs]!r}]\n"
            "    print('held', flush=True)\n    sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def refusal(pid: int, out: Path) -> str:
    return (f"another mtz-mobile process (pid {pid}) is writing {out}: wait for it to finish or "
            "choose another --out")


@pytest.fixture(scope="module")
def zip_dir(tmp_path_factory, small_models, fmnist):
    from mtz_mobile.graph.keras_io import read_model
    from mtz_mobile.zipper import ZipConfig, zip_networks
    from mtz_mobile.zipper.config import RetrainSettings

    out = tmp_path_factory.mktemp("outputs") / "zip"
    chains = {n: read_model(p) for n, p in zip(("a", "b"), small_models)}
    config = ZipConfig(shared=["all"], calibration_samples=500, retrain=RetrainSettings(iterations=0))
    zip_networks(chains, {"a": fmnist, "b": fmnist}, config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def converted(zip_dir):
    from converters import convert_zip

    return convert_zip(zip_dir, zip_dir.parent / "model.tflite", joint=True, baselines=True)


# ---------------------------------------------------------------- one writer per output

def test_convert_is_refused_while_another_process_writes_then_runs(zip_dir, tmp_path):
    from converters import convert_zip

    out = tmp_path / "model.tflite"
    with held_by_another_process(out) as pid:
        with pytest.raises(MTZError) as err:
            convert_zip(zip_dir, out, baselines=True)
        assert str(err.value) == refusal(pid, out)
        assert lock_path(out).read_text().strip() == str(pid)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite.lock"]
    result = convert_zip(zip_dir, out, baselines=True)
    assert out.is_file() and all(p.is_file() for p in result.baselines.values())
    assert not lock_path(out).exists()


def test_deploy_and_bench_from_a_second_process_get_one_line(converted, small_models, tmp_path):
    out, bench_out = tmp_path / "deploy", tmp_path / "bench"
    with held_by_another_process(out, bench_out) as pid:
        proc = run_child(f"""
            from mtz_mobile.pipeline import deploy
            deploy({[str(m) for m in small_models]!r}, {str(out)!r}, progress=False)
        """)
        assert proc.returncode == 2 and error_lines(proc) == [f"mtz-mobile: error: {refusal(pid, out)}"]
        assert not out.exists()
        proc = run_child(f"""
            from mtz_mobile.bench import HostSettings, bench
            bench({str(converted.path)!r}, settings=HostSettings(runs=1), out_dir={str(bench_out)!r}, progress=False)
        """)
        assert proc.returncode == 2 and error_lines(proc) == [f"mtz-mobile: error: {refusal(pid, bench_out)}"]
        assert not bench_out.exists()


def test_a_killed_writer_leaves_the_output_free(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.Popen([sys.executable, "-c", "import sys\nfrom mtz_mobile.fileio import output_lock\n"
                             f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    sys.stdin.read()\n"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.readline().strip() == "held"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert lock_path(out).read_text().strip() == str(proc.pid)  # left behind, but no longer locked
    with output_lock(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock_path(out).exists()


# ---------------------------------------------------------------- a full disk

def test_write_atomic_on_a_full_disk_keeps_the_old_file(small_disk):
    disk = small_disk(16 * 1024)
    target = disk.root / "data.bin"
    write_atomic(target, b"old")
    proc = run_child(f"""
        from mtz_mobile.fileio import write_atomic
        LIMIT()
        write_atomic({str(target)!r}, b"x" * (1 << 20))
    """, disk.limit)
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc) == [f"mtz-mobile: error: disk full while writing {target}: free some space or "
                                 "choose another --out"]
    assert target.read_bytes() == b"old" and [p.name for p in disk.root.iterdir()] == ["data.bin"]


def test_write_atomic_past_the_file_size_limit(tmp_path):
    """EFBIG, what `ulimit -f` gives, ends the same way as ENOSPC."""
    target = tmp_path / "data.bin"
    proc = run_child(f"""
        from mtz_mobile.fileio import write_atomic
        LIMIT()
        write_atomic({str(target)!r}, b"x" * 100000)
    """, 4096)
    assert proc.returncode == 2 and len(error_lines(proc)) == 1 and DISK_FULL.match(error_lines(proc)[0])
    assert list(tmp_path.iterdir()) == []


def test_zip_on_a_full_disk_leaves_no_zip_and_no_partial(small_models, small_disk):
    # tmpfs: room for the lock and the copied sources, not for the first checkpoint (float64 blocks);
    # file-size limit: the sources are hard links on the same filesystem, the checkpoint is over 2 KB
    sources = [Path(p).stat().st_size for p in small_models]
    disk = small_disk(sum(sources) + 4 * 4096, file_limit=2048)
    out = disk.root / "zip"
    proc = run_child(f"""
        from mtz_mobile.data import load_task_data
        from mtz_mobile.graph.keras_io import read_model
        from mtz_mobile.zipper import ZipConfig, zip_networks
        from mtz_mobile.zipper.config import RetrainSettings
        data = load_task_data("fashion-mnist").head(600, 100)
        chains = {{n: read_model(p) for n, p in zip(("a", "b"), {[str(p) for p in small_models]!r})}}
        LIMIT()
        zip_networks(chains, {{"a": data, "b": data}}, ZipConfig(calibration_samples=500,
                     retrain=RetrainSettings(iterations=0)), {str(out)!r}, progress=False)
    """, disk.limit)
    assert proc.returncode == 2, proc.stderr
    assert len(error_lines(proc)) == 1 and DISK_FULL.match(error_lines(proc)[0]), proc.stderr
    assert list(disk.root.iterdir()) == []


def test_convert_on_a_full_disk_leaves_no_model_and_no_baseline(converted, zip_dir, small_disk):
    # room for the lock and both baselines but not for the model written after them: the baselines
    # this run wrote must go again
    sizes = [p.stat().st_size for p in converted.baselines.values()]
    disk = small_disk(sum(sizes) + 4 * 4096 + converted.path.stat().st_size // 2,
                      file_limit=converted.path.stat().st_size // 2)
    out = disk.root / "model.tflite"
    proc = run_child(f"""
        from converters import convert_zip
        LIMIT()
        convert_zip({str(zip_dir)!r}, {str(out)!r}, joint=True, baselines=True)
    """, disk.limit)
    assert proc.returncode == 2, proc.stderr
    assert len(error_lines(proc)) == 1 and DISK_FULL.match(error_lines(proc)[0]), proc.stderr
    assert list(disk.root.iterdir()) == []


def test_bench_on_a_full_disk_leaves_no_report_directory(converted, small_disk):
    disk = small_disk(40 * 1024, file_limit=24 * 1024)  # the lock and the first chart fit, the second does not
    out = disk.root / "bench"
    proc = run_child(f"""
        from mtz_mobile.bench import HostSettings, bench
        LIMIT()
        bench({str(converted.path)!r}, {[str(p) for p in converted.baselines.values()]!r}, out_dir={str(out)!r},
              settings=HostSettings(runs=2, switch_steps=2, memory_repeats=1), progress=False)
    """, disk.limit)
    assert proc.returncode == 2, proc.stderr
    assert len(error_lines(proc)) == 1 and DISK_FULL.match(error_lines(proc)[0]), proc.stderr
    assert list(disk.root.iterdir()) == []


# ---------------------------------------------------------------- deploy asks each stage

@pytest.fixture
def redeploy(deployed, small_models, fmnist, tmp_path):
    """deploy again into a copy of the session's deployed directory, with some settings changed."""
    from mtz_mobile.pipeline import deploy

    out = tmp_path / "out"
    shutil.copytree(deployed.out_dir, out)
    base = dict(data={"a": fmnist, "b": fmnist}, progress=True, retrain_iterations=0, calibration_samples=500)
    return lambda bench=HostSettings(runtime="compiled", runs=3), **changed: deploy(small_models, out, bench=bench,
                                                                                   **dict(base, **changed))


def manifest_of(path):
    from converters.flatbuffer import load_model
    from converters.manifest import read_manifest

    return read_manifest(load_model(path))


def test_deploy_converts_again_when_quantization_or_joint_change(redeploy, capsys):
    from converters.inspection import inspect_model

    result = redeploy(quantize="fp16", bench=None)
    assert result.stages == {"zip": "skipped", "convert": "done"}
    assert "convert: quantization changed (none → fp16), converting again" in capsys.readouterr().err
    assert manifest_of(result.model)["quantization"] == "fp16"
    assert "all" in inspect_model(result.model)["signatures"]

    result = redeploy(quantize="fp16", joint=False, bench=None)
    assert result.stages == {"zip": "skipped", "convert": "done"}
    assert "convert: joint signature not wanted, converting again" in capsys.readouterr().err
    assert "all" not in inspect_model(result.model)["signatures"] and manifest_of(result.model)["joint"] is None

    assert redeploy(quantize="fp16", joint=False, bench=None).stages == {"zip": "skipped", "convert": "skipped"}


def test_deploy_converts_again_when_a_baseline_was_replaced(redeploy, deployed, capsys):
    baseline = redeploy(bench=None).baselines["a"]
    shutil.copyfile(deployed.baselines["b"], baseline)
    result = redeploy(bench=None)
    assert result.stages == {"zip": "skipped", "convert": "done"}
    assert "convert: baselines changed, converting again" in capsys.readouterr().err
    assert baseline.read_bytes() == deployed.baselines["a"].read_bytes()


def test_deploy_benches_again_when_the_runtime_changes(redeploy, capsys):
    from mtz_mobile.bench import read_report

    result = redeploy(HostSettings(runtime="interpreter", runs=3))
    assert result.stages == {"zip": "skipped", "convert": "skipped", "bench": "done"}
    assert ("bench: bench settings changed (runtime compiled → interpreter, xnnpack_cache file → off), running again"
            in capsys.readouterr().err)
    report = read_report(result.out_dir / "bench" / "report.json")
    assert (report["settings"]["runtime"], report["settings"]["xnnpack_cache"]) == ("interpreter", "off")
    assert result.report == report
    assert redeploy(HostSettings(runtime="interpreter", runs=3)).stages == {"zip": "skipped", "convert": "skipped", "bench": "skipped"}
    result = redeploy(HostSettings(runtime="compiled", xnnpack_cache="off", runs=2))
    assert result.stages["bench"] == "done" and result.report["settings"]["xnnpack_cache"] == "off"

    # a report written before --transient-indirection existed ran without it: still current
    from mtz_mobile.bench.staleness import bench_staleness

    path = result.out_dir / "bench" / "report.json"
    old = json.loads(path.read_text())
    del old["settings"]["xnnpack_transient_indirection"]
    path.write_text(json.dumps(old))
    settings = dict(runtime="compiled", xnnpack_cache="off", runs=2)
    assert bench_staleness(path.parent, result.model, result.baselines.values(), settings) is None
    capsys.readouterr()
    result = redeploy(HostSettings(runtime="compiled", xnnpack_cache="off", runs=2, transient_indirection=True))
    assert result.stages["bench"] == "done" and result.report["settings"]["xnnpack_transient_indirection"] is True
    assert "xnnpack_transient_indirection False → True" in capsys.readouterr().err
