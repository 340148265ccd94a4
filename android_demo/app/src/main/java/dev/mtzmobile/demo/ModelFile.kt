package dev.mtzmobile.demo

import android.content.Context
import java.io.File
import java.io.FileInputStream
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/** Where the model comes from: a pushed file or the asset bundled in the APK. */
sealed class ModelSource {
    /** files/model.tflite, written by `mtz-mobile push model.tflite --app dev.mtzmobile.demo`. */
    data class Pushed(val path: String) : ModelSource()

    /**
     * assets/model.tflite, written by tools/export_android_assets.py before the build, and [path],
     * the copy of it this app made in its no-backup files once per installed APK. LiteRT's
     * CompiledModel.create(assetManager, …) reads an asset into a buffer it owns (anonymous memory);
     * created from a file path, the weights stay file-backed pages that the system can drop.
     */
    data class Asset(val name: String, val path: String) : ModelSource()
}

/** The model's bytes, memory-mapped read-only, and where they come from. */
class ModelFile(val source: ModelSource, val bytes: MappedByteBuffer) {
    /** The file LiteRT compiles: the pushed file or the bundled asset's copy. */
    val path: String
        get() = when (source) {
            is ModelSource.Pushed -> source.path
            is ModelSource.Asset -> source.path
        }

    val sizeBytes: Long get() = bytes.capacity().toLong()

    val description: String
        get() = when (source) {
            is ModelSource.Pushed -> "files/${Contract.DEVICE_MODEL_NAME} (pushed)"
            is ModelSource.Asset -> "assets/${source.name} (bundled in the APK)"
        }

    /** SHA-256 of the file, lower-case hex (what samples.json records for its model). */
    fun sha256(): String = fileSha256(File(path))

    companion object {
        /** Where a pushed model lives. */
        fun pushedPath(context: Context): File = File(context.filesDir, Contract.DEVICE_MODEL_NAME)

        /** The pushed model when there is one, else the bundled asset, else null (no model at all). */
        fun locate(context: Context): ModelFile? {
            val pushed = pushedPath(context)
            if (pushed.isFile) return ModelFile(ModelSource.Pushed(pushed.absolutePath), mapFile(pushed))
            val name = Contract.DEVICE_MODEL_NAME
            if (context.assets.list("")?.contains(name) != true) return null
            val copy = copyAssetOnce(context, name)
            return ModelFile(ModelSource.Asset(name, copy.absolutePath), mapFile(copy))
        }

        // A mapping stays valid after its channel is closed (FileChannel.map).
        private fun mapFile(file: File): MappedByteBuffer = FileInputStream(file).use { stream ->
            stream.channel.map(FileChannel.MapMode.READ_ONLY, 0, stream.channel.size())
        }

        /**
         * The asset copied to noBackupFilesDir, named after the APK's install time so that an
         * updated APK's model replaces the old copy; written to a temporary name and renamed, so a
         * copy interrupted half-way is never used.
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
    }
}

/** Reads assets/samples.json (tools/export_android_assets.py), or null when absent. */
fun SampleSet.Companion.load(context: Context): SampleSet? {
    if (context.assets.list("")?.contains(Contract.SAMPLES_ASSET) != true) return null
    val text = context.assets.open(Contract.SAMPLES_ASSET).bufferedReader().use { it.readText() }
    return SampleSet.parse(text)
}
