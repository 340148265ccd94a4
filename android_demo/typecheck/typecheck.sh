#!/bin/sh
# Type-checks every Kotlin file of the app and of its instrumented tests (warnings as errors) against
# LiteRT's own Kotlin sources at the version the build pins, with the hand-written stubs beside this
# script standing in for the Android SDK classes they use (signatures only, no behaviour). It needs a
# git clone of github.com/google-ai-edge/LiteRT, a JDK (javac), Debian's junit4, hamcrest and
# android-json jars, and tests/jvm's Kotlin compiler (npm ci in tests/jvm). It proves the calls
# compile, not that they behave: that is the phone's job (mtz-mobile phone-check).
#
#   android_demo/typecheck/typecheck.sh /path/to/LiteRT
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
litert=${1:?usage: typecheck.sh LITERT_GIT_CLONE}
tag=v$(sed -n 's/^litert = "\(.*\)"$/\1/p' "$repo/android_demo/gradle/libs.versions.toml")
kotlinc=$repo/tests/jvm/node_modules/kotlin-compiler/bin/kotlinc
jars=/usr/share/java/junit4.jar:/usr/share/java/hamcrest.jar:/usr/share/java/com.android.json.jar
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/litert" "$work/stubs"
dir=litert/kotlin/src/main/kotlin/com/google/ai/edge/litert
# CompiledModel and what it needs (ModelProvider.kt, which needs androidx lifecycle, is not used here)
for f in Model.kt TensorBuffer.kt Common.kt Environment.kt LiteRtException.kt AcceleratorProvider.kt; do
    git -C "$litert" show "$tag:$dir/$f" > "$work/litert/$f"
done
javac -nowarn -d "$work/stubs" -cp "$jars" $(find "$here/stubs" -name '*.java')
"$kotlinc" -jvm-target 17 -nowarn -cp "$work/stubs" -d "$work/litert.jar" "$work"/litert/*.kt
"$kotlinc" -jvm-target 17 -Werror -cp "$work/litert.jar:$work/stubs:$jars" -d "$work/app.jar" \
    "$repo"/android_demo/app/src/main/java/dev/mtzmobile/demo/*.kt \
    "$repo"/android_demo/app/src/androidTest/java/dev/mtzmobile/demo/*.kt
echo "the app and its instrumented tests type-check against LiteRT $tag's Kotlin sources (warnings as errors)"
