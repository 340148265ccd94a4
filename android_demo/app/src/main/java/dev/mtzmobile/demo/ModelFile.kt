package dev.mtzmobile.demo

import java.io.File
import java.io.FileInputStream
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/** Where the model comes from: a pushed file or the asset bundled in the APK. */
sealed class ModelSource {
    /** files/model.tflite, written by `mtz-mobile push model.tflite --app dev.mtzmobile.demo`. */
    data class Pushed(val path: String) : ModelSource()

    /**
     * assets/model.tflite, written by mtz-mobile export-android before the build, and [path],
     * the copy of it this app made in its no-backup files once per installed APK. LiteRT's
     * CompiledModel.create(assetManager, …) reads an asset into a buffer it owns (anonymous memory);
     * created from a file path, the weights stay file-backed pages that the system can drop.
     */
    data class Asset(val name: String, val path: String) : ModelSource()
}

/**
 * The model's bytes, memory-mapped read-only, and where they come from. Finding the file
 * (ModelFile.locate) needs an Android Context: AndroidPlatform.kt.
 */
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
        /** [source]'s file, mapped. */
        fun open(source: ModelSource): ModelFile = when (source) {
            is ModelSource.Pushed -> ModelFile(source, mapFile(File(source.path)))
            is ModelSource.Asset -> ModelFile(source, mapFile(File(source.path)))
        }

        // A mapping stays valid after its channel is closed (FileChannel.map).
        private fun mapFile(file: File): MappedByteBuffer = FileInputStream(file).use { stream ->
            stream.channel.map(FileChannel.MapMode.READ_ONLY, 0, stream.channel.size())
        }
    }
}
