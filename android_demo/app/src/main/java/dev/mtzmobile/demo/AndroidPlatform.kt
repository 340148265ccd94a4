package dev.mtzmobile.demo

import android.content.Context
import android.os.Debug
import java.io.File

/** Where a pushed model lives. */
fun ModelFile.Companion.pushedPath(context: Context): File = File(context.filesDir, Contract.DEVICE_MODEL_NAME)

/** The pushed model when there is one, else the bundled asset, else null (no model at all). */
fun ModelFile.Companion.locate(context: Context): ModelFile? {
    val pushed = pushedPath(context)
    if (pushed.isFile) return open(ModelSource.Pushed(pushed.absolutePath))
    val name = Contract.DEVICE_MODEL_NAME
    if (context.assets.list("")?.contains(name) != true) return null
    val copy = copyAssetOnce(context, name)
    return open(ModelSource.Asset(name, copy.absolutePath))
}

/**
 * The asset copied to noBackupFilesDir, named after the APK's install time so that an updated APK's
 * model replaces the old copy; written to a temporary name and renamed, so a copy interrupted
 * half-way is never used.
 */
@Suppress("DEPRECATION")  // getPackageInfo(String, Int): the overload every API level has
private fun copyAssetOnce(context: Context, name: String): File {
    val installed = context.packageManager.getPackageInfo(context.packageName, 0).lastUpdateTime
    val dir = context.noBackupFilesDir
    val copy = File(dir, "bundled-$installed-$name")
    if (copy.isFile) return copy
    dir.listFiles { f -> f.name.startsWith("bundled-") }?.forEach { it.delete() }
    val part = File(dir, "${copy.name}.part")
    context.assets.open(name).use { input -> part.outputStream().use { input.copyTo(it, 1 shl 16) } }
    if (!part.renameTo(copy)) throw java.io.IOException("cannot rename $part to $copy")
    return copy
}

/** Reads assets/samples.json (mtz-mobile export-android), or null when absent. */
fun SampleSet.Companion.load(context: Context): SampleSet? {
    if (context.assets.list("")?.contains(Contract.SAMPLES_ASSET) != true) return null
    val text = context.assets.open(Contract.SAMPLES_ASSET).bufferedReader().use { it.readText() }
    return SampleSet.parse(text)
}

/** This process's memory now: PSS from Debug.getPss(), RSS and its parts from /proc/self/status. */
fun androidMemory(): MemorySnapshot = MemorySnapshot.fromStatus(Debug.getPss(), File("/proc/self/status"))

/** The app's files as ModelHost asks for them. */
class AppLocator(context: Context) : ModelLocator {
    private val app = context.applicationContext

    override fun locate(): ModelFile? = ModelFile.locate(app)

    override fun samples(): SampleSet? = SampleSet.load(app)

    override fun noModelMessage(): String =
        "No model. Looked for ${ModelFile.pushedPath(app).path} and assets/${Contract.DEVICE_MODEL_NAME}.\n\n" +
            "Push one from the host:\n  mtz-mobile push model.tflite --app ${Contract.APP_PACKAGE}\n" +
            "then tap \"Reload model\"; or bundle one before building:\n" +
            "  mtz-mobile export-android model.tflite"
}
