#!/usr/bin/env bash
# Install mtz-mobile (editable, with test tools) into the current Python, and Fashion-MNIST from
# Debian's package where apt exists. Activate a virtual environment first if you want one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] && command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist adb >/dev/null \
        || echo "install.sh: could not apt-get dataset-fashion-mnist; the loader will try --data-dir or Keras' download" >&2
fi
python3 -m pip install -q -e ".[dev]"

# The JVM tests of the Android app's Kotlin (tests/test_kotlin_jvm.py): JUnit 4, Hamcrest and Android's own
# org.json from Debian (with a Java runtime), JetBrains' Kotlin compiler from npm at the version pinned in
# tests/jvm/package-lock.json. Skipped when already there; without them that test fails and names what is missing.
jvm_missing=""
for jar in junit4.jar hamcrest.jar com.android.json.jar; do [ -e "/usr/share/java/$jar" ] || jvm_missing=1; done
command -v java >/dev/null || jvm_missing=1
command -v npm >/dev/null || jvm_missing=1
if [ -n "$jvm_missing" ] && command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    pkgs="junit4 libhamcrest-java libandroid-json-java"
    command -v java >/dev/null || pkgs="$pkgs default-jre-headless"
    command -v npm >/dev/null || pkgs="$pkgs npm"
    # shellcheck disable=SC2086
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $pkgs >/dev/null \
        || echo "install.sh: could not apt-get $pkgs; tests/test_kotlin_jvm.py will fail and name what is missing" >&2
fi
kotlin_version() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d.get("version") or d["packages"]["node_modules/kotlin-compiler"]["version"])' "$1" 2>/dev/null || true; }
if [ "$(kotlin_version tests/jvm/node_modules/kotlin-compiler/package.json)" != "$(kotlin_version tests/jvm/package-lock.json)" ]; then
    if command -v npm >/dev/null; then
        (cd tests/jvm && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
            || echo "install.sh: npm ci in tests/jvm failed; tests/test_kotlin_jvm.py will fail and say so" >&2
    else
        echo "install.sh: no npm for the Kotlin compiler (tests/jvm); tests/test_kotlin_jvm.py will fail and say so" >&2
    fi
fi

# The browser page (`mtz-mobile serve`) and its tests (tests/test_browser.py): LiteRT.js and playwright-core from
# npm at the versions pinned in mtz_mobile/web/package-lock.json, Debian's chromium for playwright to drive.
# Skipped when already there; without them the page cannot start and that test fails and names this script.
web_missing=""
command -v chromium >/dev/null || web_missing="chromium"
command -v npm >/dev/null || web_missing="$web_missing npm"
if [ -n "$web_missing" ] && command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    # shellcheck disable=SC2086
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $web_missing >/dev/null \
        || echo "install.sh: could not apt-get$web_missing; tests/test_browser.py will fail and say so" >&2
fi
npm_version() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d.get("version") or d["packages"]["node_modules/" + sys.argv[2]]["version"])' "$1" "$2" 2>/dev/null || true; }
web_stale=""
for pkg in @litertjs/core @litertjs/wasm-utils playwright-core; do
    [ "$(npm_version "mtz_mobile/web/node_modules/$pkg/package.json" "$pkg")" = "$(npm_version mtz_mobile/web/package-lock.json "$pkg")" ] \
        || web_stale=1
done
if [ -n "$web_stale" ]; then
    if command -v npm >/dev/null; then
        (cd mtz_mobile/web && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
            || echo "install.sh: npm ci in mtz_mobile/web failed; mtz-mobile serve and tests/test_browser.py will say so" >&2
    else
        echo "install.sh: no npm for LiteRT.js (mtz_mobile/web); mtz-mobile serve and tests/test_browser.py will say so" >&2
    fi
fi
