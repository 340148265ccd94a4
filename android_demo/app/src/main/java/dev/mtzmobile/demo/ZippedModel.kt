package dev.mtzmobile.demo

import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import java.io.File

/**
 * One zipped .tflite compiled once, serving every task: switching task means running another
 * signature of the same CompiledModel, with no second load.
 *
 * LiteRT API used here, all from com.google.ai.edge.litert:litert 2.2.0, as read in the LiteRT
 * sources at tag v2.2.0, litert/kotlin/src/main/kotlin/com/google/ai/edge/litert/:
 * - Model.kt: CompiledModel.create(filePath, options) and CompiledModel.create(assetManager,
 *   assetName, options); CompiledModel.Options(vararg Accelerator) with `var cpuOptions`;
 *   CompiledModel.CpuOptions(numThreads, xnnPackFlags, xnnPackWeightCachePath);
 *   createInputBuffer(inputName, signature), createOutputBuffer(outputName, signature);
 *   run(inputs: Map<String, TensorBuffer>, outputs: Map<String, TensorBuffer>, signature);
 *   CompiledModel is AutoCloseable (JniHandle, Common.kt).
 * - Common.kt: enum Accelerator { NONE, CPU, GPU, NPU }.
 * - TensorBuffer.kt: writeFloat(FloatArray), readFloat(): FloatArray, AutoCloseable.
 * The guide https://ai.google.dev/edge/litert/next/android_kotlin shows the same calls
 * (CompiledModel.create, CompiledModel.Options(Accelerator.CPU), writeFloat, run, readFloat).
 *
 * Not thread-safe: call it from one thread (MainActivity uses a single worker thread).
 */
class ZippedModel private constructor(
    val file: ModelFile,
    val manifest: Manifest,
    private val compiled: CompiledModel,
    /** SHA-256 of the model file, hashed once when it was opened (the cache stamp and samples.json name it). */
    val modelSha256: String,
    /** What the weight-cache check found before compiling ("valid": a warm start; see WeightCache.check). */
    val weightCacheFound: String,
) : AutoCloseable {

    /** One signature's buffers, created on its first run and reused. */
    private class Buffers(val input: TensorBuffer, val outputs: Map<String, TensorBuffer>) : AutoCloseable {
        override fun close() {
            input.close()
            outputs.values.forEach { it.close() }
        }
    }

    private val buffers = HashMap<String, Buffers>()

    private fun buffersFor(key: String, inputName: String, outputNames: List<String>): Buffers =
        buffers.getOrPut(key) {
            Buffers(
                compiled.createInputBuffer(inputName, key),
                outputNames.associateWith { compiled.createOutputBuffer(it, key) },
            )
        }

    /** Runs [task]'s signature on one raw sample; returns its output (e.g. class probabilities). */
    fun run(task: TaskSpec, raw: FloatArray): FloatArray {
        ModelInput.requireFloat(task.input, task.name)
        val b = buffersFor(task.signatureKey, task.input.name, listOf(task.output.name))
        b.input.writeFloat(ModelInput.preprocess(raw, task.input, task.preprocessing))
        compiled.run(mapOf(task.input.name to b.input), b.outputs, task.signatureKey)
        return b.outputs.getValue(task.output.name).readFloat()
    }

    /** The joint signature's preprocessing: every task's, when they agree; else null (no joint runs). */
    val jointPreprocessing: Preprocessing?
        get() = ModelInput.jointPreprocessing(manifest)

    /** Runs the joint signature once: every task's output, keyed by task name. */
    fun runJoint(raw: FloatArray): Map<String, FloatArray> {
        val joint = manifest.joint ?: throw IllegalStateException("this model has no joint signature")
        val preprocessing = jointPreprocessing
            ?: throw IllegalStateException("the tasks preprocess their inputs differently: run them one by one")
        ModelInput.requireFloat(joint.input, joint.signatureKey)
        val b = buffersFor(joint.signatureKey, joint.input.name, joint.outputs.map { it.name })
        b.input.writeFloat(ModelInput.preprocess(raw, joint.input, preprocessing))
        compiled.run(mapOf(joint.input.name to b.input), b.outputs, joint.signatureKey)
        return joint.outputs.associate { it.task to b.outputs.getValue(it.name).readFloat() }
    }

    override fun close() {
        buffers.values.forEach { it.close() }
        buffers.clear()
        compiled.close()
    }

    companion object {
        /** The LiteRT version this app is built against (gradle/libs.versions.toml's `litert`). */
        const val LITERT_VERSION = "2.2.0"

        /**
         * Reads the manifest from [file] and compiles the model for the CPU (XNNPACK) with its weight
         * cache in a FILE beside it (WeightCache): a block that several signatures use is packed
         * once, and a warm start maps the packed weights instead of packing them into anonymous
         * memory. The cache is checked against its stamp before the compile and stamped after a
         * compile that built it.
         */
        fun open(file: ModelFile): ZippedModel {
            val manifest = readManifest(file)
            val sha256 = file.sha256()
            val cache = WeightCache(File(file.path), "$LITERT_VERSION/${System.getProperty("os.arch")}")
            val found = cache.check(sha256)
            val options = CompiledModel.Options(Accelerator.CPU)
            options.cpuOptions = CompiledModel.CpuOptions(xnnPackWeightCachePath = cache.cache.path)
            // from a path for the bundled model too (its copy in files): see ModelSource.Asset
            val compiled = CompiledModel.create(file.path, options)
            if (found != "valid" && cache.cache.isFile) cache.writeStamp(sha256)
            return ZippedModel(file, manifest, compiled, sha256, found)
        }

        /** The manifest embedded in [file] (metadata entry "mtz_manifest"). */
        fun readManifest(file: ModelFile): Manifest = ManifestParser.readEmbedded(file.bytes, file.description)
    }
}
