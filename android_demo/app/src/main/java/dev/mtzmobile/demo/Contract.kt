package dev.mtzmobile.demo

/**
 * The names this app shares with the Python side. Each one equals a constant of
 * mtz_mobile/contract.py (or converters/manifest.py, mtz_mobile/android_assets.py): the JVM
 * test tests/jvm ContractTest compares every constant here with the Python side's, and
 * tests/test_android_contract.py checks that no other Kotlin file spells them. Keep every such
 * literal in this file.
 */
object Contract {
    /** Every task signature's one input. */
    const val INPUT_NAME = "input"

    /** Every task signature's one output. */
    const val OUTPUT_NAME = "output"

    /** The optional signature that runs every task in one call (one output per task, named by the task). */
    const val JOINT_KEY = "all"

    /** The model metadata entry holding the manifest (UTF-8 JSON). */
    const val MANIFEST_METADATA = "mtz_manifest"

    /** The manifest's "format" value. */
    const val MANIFEST_FORMAT = "mtz-mobile/manifest"

    /** The manifest version this app understands. */
    const val MANIFEST_VERSION = 1

    /** The application id that `mtz-mobile push --app` names. */
    const val APP_PACKAGE = "dev.mtzmobile.demo"

    /** The model's file name: files/model.tflite when pushed, assets/model.tflite when bundled. */
    const val DEVICE_MODEL_NAME = "model.tflite"

    /** Sample images with their labels, written by mtz-mobile export-android. */
    const val SAMPLES_ASSET = "samples.json"

    /** The "format" value of samples.json. */
    const val SAMPLES_FORMAT = "mtz-mobile/android-samples"

    /** XNNPACK's weight cache file beside a model: the model's path + this. */
    const val XNNPACK_CACHE_SUFFIX = ".xnnpack_cache"

    /** The cache file's stamp: the cache file's path + this. */
    const val XNNPACK_STAMP_SUFFIX = ".json"
}
