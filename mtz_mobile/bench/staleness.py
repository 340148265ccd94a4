"""Is a saved host bench report current, i.e. a measurement of these files with these settings?
Asked by `deploy` before it benches again."""

from __future__ import annotations

from pathlib import Path

from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import sha256_of

from .settings import HostSettings
from .report import read_report

SETTING_KEYS = ("runtime", "xnnpack_cache", "xnnpack_transient_indirection", "threads", "runs", "warmup",
                "switch_steps", "memory_repeats")
# what a report written before a setting existed measured with
BEFORE_THE_SETTING = {"xnnpack_transient_indirection": False}


def bench_staleness(report_dir, model, baselines=(), settings=None) -> str | None:
    """Why ``report_dir`` does not hold a host bench of these files with these settings (a
    HostSettings, or a dict of its options), or None when it does."""
    if not isinstance(settings, HostSettings):
        settings = HostSettings(**(settings or {}))
    want = settings.to_json()
    path = Path(report_dir) / "report.json"
    if not path.is_file():
        return "missing"
    try:
        report = read_report(path)
    except MTZError:
        return "report.json damaged"
    if report["mode"] != "host":
        return "not a host report"
    if report["model"]["sha256"] != sha256_of(model):
        return "model changed"
    if not all(Path(b).is_file() for b in baselines):
        return "baselines missing"
    if sorted(b["sha256"] for b in report["baselines"]) != sorted(sha256_of(b) for b in baselines):
        return "baselines changed"
    saved = report["settings"]
    saved = {k: saved.get(k, BEFORE_THE_SETTING.get(k)) for k in SETTING_KEYS}
    changed = [f"{k} {saved[k]} → {want[k]}" for k in SETTING_KEYS if saved[k] != want[k]]
    if changed:
        return f"bench settings changed ({', '.join(changed)})"
    files = [report["files"]["markdown"]] + report["files"]["charts"]
    if not all((Path(report_dir) / name).is_file() for name in files):
        return "report files missing"
    return None
