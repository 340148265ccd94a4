package dev.mtzmobile.demo

import android.content.Context
import java.io.File
import java.io.FileInputStream
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import java.security.MessageDigest

/** Where the model comes from: a pushed file or the asset bundled in the APK. */
sealed class ModelSource {
    /** files/model.tflite, written by `mtz-mobile push model.tflite --app dev.mtzmobile.demo`. */
    data class Pushed(val path: String) : ModelSource()

    /** assets/model.tflite, written by tools/export_android_assets.py before the build. */
    data class Asset(val name: String) : ModelSource()
}

/** The model's bytes, memory-mapped read-only, and where they come from. */
class ModelFile(val source: ModelSource, val bytes: MappedByteBuffer) {
    val sizeBytes: Long get() = bytes.capacity().toLong()

    val description: String
        get() = when (source) {
            is ModelSource.Pushed -> "files/${Contract.DEVICE_MODEL_NAME} (pushed)"
            is ModelSource.Asset -> "assets/${source.name} (bundled in the APK)"
        }

    /**
     * SHA-256 of the file, lower-case hex (what samples.json records for its model). Read
     * through a stream, not the mapping, so that hashing adds no mapped pages to this process.
     */
    fun sha256(context: Context): String {
        val digest = MessageDigest.getInstance("SHA-256")
        val stream = when (source) {
            is ModelSource.Pushed -> FileInputStream(source.path)
            is ModelSource.Asset -> context.assets.open(source.name)
        }
        stream.use {
            val chunk = ByteArray(1 shl 16)
            while (true) {
                val n = it.read(chunk)
                if (n < 0) break
                digest.update(chunk, 0, n)
            }
        }
        return digest.digest().joinToString("") { "%02x".format(it) }
    }

    companion object {
        /** Where a pushed model lives. */
        fun pushedPath(context: Context): File = File(context.filesDir, Contract.DEVICE_MODEL_NAME)

        /** The pushed model when there is one, else the bundled asset, else null (no model at all). */
        fun locate(context: Context): ModelFile? {
            val pushed = pushedPath(context)
            if (pushed.isFile) {
                // A mapping stays valid after its channel is closed (FileChannel.map).
                val map = FileInputStream(pushed).use { stream ->
                    stream.channel.map(FileChannel.MapMode.READ_ONLY, 0, stream.channel.size())
                }
                return ModelFile(ModelSource.Pushed(pushed.absolutePath), map)
            }
            val name = Contract.DEVICE_MODEL_NAME
            if (context.assets.list("")?.contains(name) != true) return null
            // openFd needs the asset stored uncompressed: app/build.gradle.kts sets noCompress "tflite".
            val map = context.assets.openFd(name).use { afd ->
                FileInputStream(afd.fileDescriptor).use { stream ->
                    stream.channel.map(FileChannel.MapMode.READ_ONLY, afd.startOffset, afd.declaredLength)
                }
            }
            return ModelFile(ModelSource.Asset(name), map)
        }
    }
}

/** Reads assets/samples.json (tools/export_android_assets.py), or null when absent. */
fun SampleSet.Companion.load(context: Context): SampleSet? {
    if (context.assets.list("")?.contains(Contract.SAMPLES_ASSET) != true) return null
    val text = context.assets.open(Contract.SAMPLES_ASSET).bufferedReader().use { it.readText() }
    return SampleSet.parse(text)
}
