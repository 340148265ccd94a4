"""A stand-in for the `adb` client at the subprocess boundary, for tests without a device.

It answers what mtz_mobile.device and mtz_mobile.bench.android ask of adb: `devices -l`,
`-s SERIAL push`, `-s SERIAL shell CMD`. The device is a directory ($root/data/local/tmp,
$root/data/data/PACKAGE/...) in which shell commands run for real under bash, with `getprop`
and `run-as` defined as shell functions; benchmark_model runs replay recorded transcripts
(tests/data/benchmark_model/). The scenario is a JSON file named by $FAKE_ADB_SCENARIO;
every invocation is appended to its "log" file as one JSON line. Commands the device itself would
answer (`am`, `pm`, `logcat`, `install`) replay the scenario's "replay" table: command prefix ->
the transcripts of successive calls (the last one repeats), each a path, null (no output), or
{"file": path or null, "then": a shell command run on the fake device afterwards}.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

UNAUTHORIZED = ("error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
                "Try 'adb kill-server' if that seems wrong.\nOtherwise check for a confirmation dialog on your device.\n")


def load():
    with open(os.environ["FAKE_ADB_SCENARIO"]) as f:
        return json.load(f)


def devices(scenario):
    out = []
    for line in scenario["devices"].splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            out.append((parts[0], parts[1]))
    return out


def fail(message, code=1):
    sys.stderr.write(message if message.endswith("\n") else message + "\n")
    sys.exit(code)


def device_path(scenario, path):
    return os.path.join(scenario["root"], path.lstrip("/"))


def rewrite(scenario, command):
    root = scenario["root"].rstrip("/")
    return re.sub(r"(?<![\w/])/data/", root + "/data/", command)


PRELUDE = r'''
getprop() { if [ -f "$FAKE_ROOT/props/$1" ]; then cat "$FAKE_ROOT/props/$1"; fi; echo; }
run-as() {
  local pkg="$1"; shift
  if [ ! -d "$FAKE_ROOT/data/data/$pkg" ]; then echo "run-as: unknown package: $pkg" >&2; return 1; fi
  if [ -f "$FAKE_ROOT/data/data/$pkg/.not_debuggable" ]; then echo "run-as: package not debuggable: $pkg" >&2; return 1; fi
  (cd "$FAKE_ROOT/data/data/$pkg" && "$@")
}
'''


def flip_first_byte(path):
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))


def damage_run_as_copy(scenario, command):
    """The copy into an app's files dir (`run-as PKG sh -c '... cat > PART' < STAGED`) arrives damaged."""
    m = re.match(r"run-as (\S+) sh -c .*cat > ([^'\"\s]+)", command)
    if m:
        target = os.path.join(scenario["root"], "data", "data", m.group(1), m.group(2))
        if os.path.isfile(target) and os.path.getsize(target):
            flip_first_byte(target)


def benchmark(scenario, command):
    body = command.split("; echo __MTZ_RC=")[0]
    argv = shlex.split(body)
    binary = device_path(scenario, argv[0])
    flags = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
    if not os.path.isfile(binary):
        print(f"/system/bin/sh: {argv[0]}: inaccessible or not found")
        print("__MTZ_RC=127")
        return
    graph = flags.get("graph", "")
    if not os.path.isfile(device_path(scenario, graph)):
        print(f"ERROR: Could not open '{graph}'.")  # the tool's own wording for a missing graph
        print("__MTZ_RC=1")
        return
    if flags.get("list_signatures") == "true":
        name = scenario["list_signatures"]
    else:
        key = flags.get("signature_to_run_for", "")
        table = scenario["transcripts"]
        name = table.get(os.path.basename(graph) + ":" + key) or table.get(key) or table["*"]
    with open(name) as f:
        sys.stdout.write(f.read())
    print("\n__MTZ_RC=0")


def replay(scenario, command):
    """The next recorded answer to ``command`` when the scenario's "replay" table has its prefix, else None."""
    table = scenario.get("replay", {})
    body = command.split("; echo __MTZ_RC=")[0].strip()
    keys = [k for k in table if body == k or body.startswith(k + " ")]
    if not keys:
        return None
    key = max(keys, key=len)
    state_path = os.path.join(scenario["root"], ".replay_state.json")
    state = json.load(open(state_path)) if os.path.exists(state_path) else {}
    calls = table[key]
    item = calls[min(state.get(key, 0), len(calls) - 1)]
    state[key] = state.get(key, 0) + 1
    with open(state_path, "w") as f:
        json.dump(state, f)
    item = item if isinstance(item, dict) else {"file": item}
    text = open(item["file"]).read() if item.get("file") else ""
    if item.get("then"):
        subprocess.run(["bash", "-c", rewrite(scenario, item["then"])], check=True, cwd=scenario["root"])
    return text


def main(argv):
    scenario = load()
    with open(scenario["log"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    serial = None
    if argv[:1] == ["-s"]:
        serial, argv = argv[1], argv[2:]
    if not argv:
        fail("adb: usage: no command specified")
    if argv[0] == "devices":
        sys.stdout.write(scenario["devices"])
        return
    known = devices(scenario)
    if serial is None:
        if not known:
            fail("error: no devices/emulators found")
        if len(known) > 1:
            fail("error: more than one device/emulator")
        serial = known[0][0]
    state = dict(known).get(serial)
    if state is None:
        fail(f"error: device '{serial}' not found")
    if state == "unauthorized":
        fail(UNAUTHORIZED)
    if argv[0] == "install":
        text = replay(scenario, " ".join(argv))
        if text is None:
            fail("adb: failed to install: no recorded answer")
        sys.stdout.write(text)
        return
    if argv[0] == "push":
        local, remote = argv[1], argv[2]
        target = device_path(scenario, remote)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(local, target)
        if scenario.get("corrupt_push"):
            flip_first_byte(target)
        print(f"{local}: 1 file pushed, 0 skipped.")
        return
    if argv[0] == "shell":
        command = " ".join(argv[1:])
        text = replay(scenario, command)
        if text is not None:
            sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
            print("__MTZ_RC=0")
            return
        words = command.split()
        if words and words[0].strip("'\"").endswith("/benchmark_model"):
            benchmark(scenario, command)
            return
        env = dict(os.environ, FAKE_ROOT=scenario["root"])
        proc = subprocess.run(["bash", "-c", PRELUDE + rewrite(scenario, command)], env=env,
                              capture_output=True, text=True, cwd=scenario["root"])
        if scenario.get("corrupt_run_as_copy"):
            damage_run_as_copy(scenario, command)
        sys.stdout.write(proc.stdout.replace(scenario["root"].rstrip("/"), ""))
        sys.stdout.write(proc.stderr.replace(scenario["root"].rstrip("/"), ""))
        return
    fail(f"adb: unknown command {argv[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
