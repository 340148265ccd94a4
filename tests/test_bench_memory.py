"""The host bench's memory split (/proc/self/smaps_rollup) against an independent mapping: a file of
known size mapped and read in a fresh process must show up as file-backed clean pages, not as
anonymous memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtz_mobile.bench.probe import SMAPS_KEYS, proc_status, resident_by_file

ROOT = Path(__file__).resolve().parents[1]
MB = 1024


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc/self/smaps_rollup")
def test_proc_status_has_the_split():
    s = proc_status()
    assert set(SMAPS_KEYS) <= set(s)
    assert 0 < s["Pss"] <= s["VmRSS"] + 256 and s["Anonymous"] <= s["VmRSS"] + 256


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc/self/smaps_rollup")
def test_a_mapped_file_counts_as_file_backed_clean_pages(tmp_path):
    size_kb = 32 * MB
    path = tmp_path / "blob.bin"
    with open(path, "wb") as f:
        f.write(os.urandom(size_kb * 1024))
        f.flush()
        os.fsync(f.fileno())  # written back: its page-cache pages are clean, as a model file's are
    # a fresh process, so that nothing else moves its counters while it maps and reads the file
    code = textwrap.dedent(f"""
        import json, mmap
        from mtz_mobile.bench.probe import proc_status, resident_by_file
        f = open({str(path)!r}, "rb")
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        before = proc_status()
        total = sum(m[i] for i in range(0, len(m), 4096))  # one byte a page: every page resident
        after = proc_status()
        print(json.dumps({{"before": before, "after": after, "files": resident_by_file()}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    import json

    r = json.loads(out.stdout)
    grow = {k: r["after"][k] - r["before"][k] for k in r["after"]}
    clean = grow["Private_Clean"] + grow["Shared_Clean"]
    assert 0.95 * size_kb <= clean <= 1.05 * size_kb, grow
    assert 0.95 * size_kb <= grow["RssFile"] <= 1.05 * size_kb, grow
    assert grow["Anonymous"] < 0.05 * size_kb and grow["Private_Dirty"] < 0.05 * size_kb, grow
    # the file is mapped by this process alone: its pages count whole in Pss
    assert 0.95 * size_kb <= grow["Pss"] <= 1.05 * size_kb, grow
    # and the per-file split names the file those pages are of
    mine = r["files"][str(path)]
    assert 0.95 * size_kb <= mine["Rss"] <= 1.05 * size_kb and 0.95 * size_kb <= mine["Pss"] <= 1.05 * size_kb, mine


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc/self/smaps_rollup")
def test_resident_by_file_sums_to_the_rollup():
    files, rollup = resident_by_file(), proc_status()
    assert abs(sum(f["Pss"] for f in files.values()) - rollup["Pss"]) <= 0.02 * rollup["Pss"] + 64
    assert abs(sum(f["Rss"] for f in files.values()) - rollup["VmRSS"]) <= 0.02 * rollup["VmRSS"] + 64
