"""Android devices over adb: find the one to use, read its properties, push a file verified by
checksum (temporary name → sha256 on the device → rename), into /data/local/tmp or an app's files.

    from .device import Adb, push_model
    adb = Adb.connect()                       # the one attached device, or Adb.connect("SERIAL")
    push_model("model.tflite", app="dev.mtzmobile.demo")

Every failure is one MTZError line that says what to do.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .contract import DEVICE_MODEL_NAME

from mtz_mobile.fileio import sha256_of
from .errors import MTZError

DEVICE_TMP = "/data/local/tmp"
REQUIRED_ABI = "arm64-v8a"
ADB_INSTALL_HINT = ("install it with `apt-get install adb` (Debian/Ubuntu) or Android SDK Platform-Tools "
                    "(developer.android.com/tools/releases/platform-tools) and put it on PATH")
_RC_MARK = "__MTZ_RC="


def find_adb() -> str:
    path = shutil.which("adb")
    if path is None:
        raise MTZError(f"no `adb` on PATH: {ADB_INSTALL_HINT}")
    return path


@dataclass
class DeviceEntry:
    serial: str
    state: str


def parse_devices(text: str) -> list[DeviceEntry]:
    """The lines of `adb devices [-l]` after its header: serial and state (several words for
    'no permissions (…)')."""
    out, listing = [], False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("List of devices"):
            listing = True  # lines before the header are adb's own messages ("* daemon started…")
            continue
        if not listing or not line or line.startswith("*"):
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            continue
        serial, rest = parts
        state = "no permissions" if rest.startswith("no permissions") else rest.partition(" ")[0]
        out.append(DeviceEntry(serial, state.strip()))
    return out


def _adb_failure(stderr: str, stdout: str = "") -> str:
    lines = [l.strip() for l in (stderr + "\n" + stdout).splitlines() if l.strip() and not l.startswith("*")]
    return lines[0] if lines else "no output"


def _state_error(entry: DeviceEntry) -> MTZError | None:
    s, state = entry.serial, entry.state
    if state == "device":
        return None
    if state == "unauthorized":
        return MTZError(f"device {s} is unauthorized: unlock it and accept the 'Allow USB debugging?' prompt, "
                        "then run again (no prompt: revoke USB debugging authorizations on the device, replug)")
    if state == "offline":
        return MTZError(f"device {s} is offline: replug it or restart adb (`adb kill-server`), then run again")
    if state == "no permissions":
        return MTZError(f"adb has no permission to open device {s}: install udev rules (`apt-get install "
                        "android-sdk-platform-tools-common`) and replug, or run adb as a plugdev member")
    return MTZError(f"device {s} is in state '{state}', not booted into Android: boot it normally and run again")


class Adb:
    """adb bound to one device serial."""

    def __init__(self, serial: str, adb: str | None = None, timeout_s: float = 600.0):
        self.serial, self.adb, self.timeout_s = serial, adb or find_adb(), timeout_s

    @staticmethod
    def devices(adb: str | None = None, timeout_s: float = 60.0) -> list[DeviceEntry]:
        adb = adb or find_adb()
        try:
            proc = subprocess.run([adb, "devices", "-l"], capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise MTZError("`adb devices` did not answer: restart the adb server (`adb kill-server`) and retry") from None
        if proc.returncode != 0:
            raise MTZError(f"`adb devices` failed ({_adb_failure(proc.stderr, proc.stdout)}): restart the adb "
                           "server (`adb kill-server`) and retry")
        return parse_devices(proc.stdout)

    @classmethod
    def connect(cls, serial: str | None = None, timeout_s: float = 600.0) -> "Adb":
        """The device to use: ``serial``, or the only one attached; one clear line otherwise."""
        adb = find_adb()
        entries = cls.devices(adb)
        if serial is None:
            serial = os.environ.get("ANDROID_SERIAL") or None
        if serial is not None:
            chosen = next((e for e in entries if e.serial == serial), None)
            if chosen is None:
                listed = ", ".join(f"{e.serial} ({e.state})" for e in entries) or "none"
                raise MTZError(f"device {serial} not found (adb devices lists: {listed}): check --serial")
        elif not entries:
            raise MTZError("no Android device found (`adb devices` lists none): connect one with USB debugging "
                           "on, or start an emulator, then run again")
        elif len(entries) > 1:
            listed = ", ".join(f"{e.serial} ({e.state})" for e in entries)
            raise MTZError(f"{len(entries)} devices attached ({listed}): choose one with --serial SERIAL")
        else:
            chosen = entries[0]
        error = _state_error(chosen)
        if error is not None:
            raise error
        return cls(chosen.serial, adb, timeout_s)

    def run(self, *args: str, timeout_s: float | None = None) -> subprocess.CompletedProcess:
        cmd = [self.adb, "-s", self.serial, *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s or self.timeout_s)
        except subprocess.TimeoutExpired:
            raise MTZError(f"`adb {' '.join(args[:2])}` ran past {timeout_s or self.timeout_s:.0f} s: check the "
                           "device, or use fewer --runs") from None
        proc.stdout = proc.stdout.decode("utf-8", "replace")
        proc.stderr = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0 and args and args[0] != "shell":
            raise self._error(args, proc)
        return proc

    def _error(self, args, proc) -> MTZError:
        text = _adb_failure(proc.stderr, proc.stdout)
        low = text.lower()
        if "unauthorized" in low:
            return _state_error(DeviceEntry(self.serial, "unauthorized"))
        if "more than one device" in low:
            return MTZError("several devices attached: choose one with --serial SERIAL")
        if "not found" in low and "device" in low or "no devices" in low:
            return MTZError(f"device {self.serial} is gone ({text}): reconnect it and run again")
        return MTZError(f"`adb {args[0]}` failed on {self.serial} ({text})")

    def shell(self, command: str, check: bool = True, timeout_s: float | None = None) -> tuple[int, str]:
        """Run ``command`` in the device's shell; (exit status, stdout+stderr). The status is read
        from a marker line, which works with every adb, old or new."""
        proc = self.run("shell", f"{command}; echo {_RC_MARK}$?", timeout_s=timeout_s)
        text = proc.stdout + proc.stderr
        rc, lines = None, []
        for line in text.splitlines():
            if line.startswith(_RC_MARK):
                try:
                    rc = int(line[len(_RC_MARK):].strip())
                except ValueError:
                    rc = None
            else:
                lines.append(line.rstrip("\r"))
        output = "\n".join(lines)
        if rc is None:  # the shell never ran: adb itself failed
            raise self._error(("shell",), proc)
        if check and rc != 0:
            first = next((l for l in lines if l.strip()), "no output")
            raise MTZError(f"`{command.split()[0]}` failed on {self.serial} (exit {rc}: {first.strip()})")
        return rc, output

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {shlex.quote(name)}")[1].strip()

    def push(self, local: str | os.PathLike, remote: str) -> None:
        self.run("push", str(local), remote)

    def sha256(self, remote: str, run_as: str | None = None) -> str | None:
        """The file's sha256 on the device, or None when it does not exist."""
        cmd = f"sha256sum {shlex.quote(remote)}"
        if run_as:
            cmd = f"run-as {shlex.quote(run_as)} {cmd}"
        rc, out = self.shell(cmd, check=False)
        if rc != 0:
            low = out.lower()
            if "no such file" in low:
                return None
            if "not found" in low and "sha256sum" in low:
                raise MTZError(f"device {self.serial} has no sha256sum (toybox has it from Android 7): use a newer "
                               "device")
            if run_as and "run-as" in low:
                raise _run_as_error(run_as, out)
            raise MTZError(f"cannot checksum {remote} on {self.serial} ({out.strip().splitlines()[0] if out.strip() else rc})")
        token = out.split()[0] if out.split() else ""
        if len(token) != 64:
            raise MTZError(f"unexpected sha256sum output on {self.serial} ({out.strip()[:60]!r})")
        return token.lower()


def _run_as_error(package: str, output: str) -> MTZError:
    line = next((l.strip() for l in output.splitlines() if l.strip()), "no output")
    return MTZError(f"cannot write into {package}'s files ({line}): install a debuggable build of the app "
                    "(run-as works only for debuggable apps) or push without --app")


def device_info(adb: Adb) -> dict:
    props = {"model": "ro.product.model", "abi": "ro.product.cpu.abi", "soc": "ro.soc.model",
             "board_platform": "ro.board.platform", "android_release": "ro.build.version.release",
             "sdk": "ro.build.version.sdk"}
    out = {"kind": "android", "serial": adb.serial}
    for key, prop in props.items():
        out[key] = adb.getprop(prop) or None
    out["model"] = out["model"] or "unknown"
    return out


def check_abi(info: dict) -> None:
    if info.get("abi") != REQUIRED_ABI:
        raise MTZError(f"device {info['serial']} reports ABI {info.get('abi') or 'unknown'}, not {REQUIRED_ABI}: "
                       "LiteRT's arm64 benchmark_model and the demo app need a 64-bit ARM device")


@dataclass
class PushResult:
    local: str
    remote: str
    sha256: str
    bytes: int
    skipped: bool
    app: str | None = None


def push_file(adb: Adb, local: str | os.PathLike, remote: str, mode: str | None = None,
              skip_if_same: bool = True) -> PushResult:
    """Push ``local`` to ``remote`` so that ``remote`` is never a partial file: push to a
    temporary name beside it, compare sha256 on the device with ours, then rename."""
    local = Path(local)
    if not local.is_file():
        raise MTZError(f"{local} not found: give an existing file")
    digest, size = sha256_of(local), local.stat().st_size
    if skip_if_same and adb.sha256(remote) == digest:
        return PushResult(str(local), remote, digest, size, skipped=True)
    parent = str(PurePosixPath(remote).parent)
    tmp = f"{remote}.part-{secrets.token_hex(4)}"
    adb.shell(f"mkdir -p {shlex.quote(parent)}")
    adb.push(local, tmp)
    try:
        remote_digest = adb.sha256(tmp)
        if remote_digest != digest:
            raise MTZError(f"checksum mismatch after pushing {local.name} ({(remote_digest or 'missing')[:12]}… on "
                           f"the device, {digest[:12]}… here): the transfer was damaged, push again")
        if mode:
            adb.shell(f"chmod {mode} {shlex.quote(tmp)}")
        adb.shell(f"mv -f {shlex.quote(tmp)} {shlex.quote(remote)}")
    except BaseException:
        adb.shell(f"rm -f {shlex.quote(tmp)}", check=False)
        raise
    return PushResult(str(local), remote, digest, size, skipped=False)


def push_to_app(adb: Adb, local: str | os.PathLike, package: str, name: str = DEVICE_MODEL_NAME,
                skip_if_same: bool = True) -> PushResult:
    """Into the app's private files dir (files/NAME) through `run-as PACKAGE`: stage in
    /data/local/tmp (verified), copy to files/NAME.part, verify again, rename."""
    local = Path(local)
    if not local.is_file():
        raise MTZError(f"{local} not found: give an existing file")
    digest, size = sha256_of(local), local.stat().st_size
    final, part = f"files/{name}", f"files/{name}.part"
    if skip_if_same:
        try:
            if adb.sha256(final, run_as=package) == digest:
                return PushResult(str(local), final, digest, size, skipped=True, app=package)
        except MTZError:
            pass  # the checks below say precisely what is wrong
    rc, out = adb.shell(f"run-as {shlex.quote(package)} true", check=False)
    if rc != 0:
        raise _run_as_error(package, out)
    staging = f"{DEVICE_TMP}/mtz-stage-{secrets.token_hex(4)}-{local.name}"
    staged = push_file(adb, local, staging, mode="644", skip_if_same=False)
    try:
        pkg = shlex.quote(package)
        inner = shlex.quote(f"mkdir -p files && cat > {part}")
        rc, out = adb.shell(f"run-as {pkg} sh -c {inner} < {shlex.quote(staging)}", check=False)
        if rc != 0:
            raise _run_as_error(package, out)
        remote_digest = adb.sha256(part, run_as=package)
        if remote_digest != staged.sha256:
            adb.shell(f"run-as {pkg} rm -f {shlex.quote(part)}", check=False)
            raise MTZError(f"checksum mismatch in {package}'s files ({(remote_digest or 'missing')[:12]}… vs "
                           f"{digest[:12]}…): push again")
        rc, out = adb.shell(f"run-as {pkg} mv -f {shlex.quote(part)} {shlex.quote(final)}", check=False)
        if rc != 0:
            raise _run_as_error(package, out)
    finally:
        adb.shell(f"rm -f {shlex.quote(staging)}", check=False)
    return PushResult(str(local), final, digest, size, skipped=False, app=package)


def push_model(model: str | os.PathLike, serial: str | None = None, app: str | None = None,
               adb: Adb | None = None) -> PushResult:
    """`mtz-mobile push`: the model to /data/local/tmp/<name>, or with ``app`` into that app's
    files/model.tflite; checksum-verified, never leaving a partial file where it is read."""
    model = Path(model)
    if not model.is_file():
        raise MTZError(f"model {model} not found: give the .tflite to push")
    with open(model, "rb") as f:
        head = f.read(8)
    if head[4:8] != b"TFL3":
        raise MTZError(f"{model} is not a .tflite (no TFL3 identifier): push the file `mtz-mobile convert` wrote")
    adb = adb or Adb.connect(serial)
    if app:
        return push_to_app(adb, model, app)
    return push_file(adb, model, f"{DEVICE_TMP}/{model.name}")
