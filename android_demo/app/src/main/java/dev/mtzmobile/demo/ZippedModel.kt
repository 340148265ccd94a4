package dev.mtzmobile.demo

import java.io.File

/** How long opening a model took, in milliseconds: hashing (the model, the cache check, the stamp) and the compile alone. */
data class LoadTimings(val hashMillis: Double, val compileMillis: Double)

/**
 * One zipped .tflite compiled once, serving every task: switching task means running another
 * signature of the same compiled model, with no second load. The compiled model is an [Engine]
 * (LiteRT's CompiledModel on the phone: LiteRtEngine.kt).
 *
 * Not thread-safe: call it from one thread (ModelHost's worker).
 */
class ZippedModel private constructor(
    val file: ModelFile,
    val manifest: Manifest,
    private val engine: Engine,
    private val cache: WeightCache,
    /** SHA-256 of the model file, hashed once when it was opened (the cache stamp and samples.json name it). */
    val modelSha256: String,
    /** What the weight-cache check found before compiling ("valid": a warm start; see WeightCache.check, afterCompile). */
    val weightCacheFound: String,
    /** LiteRT CPU threads this model was compiled with. */
    val threads: Int,
    val timings: LoadTimings,
    private val stamped: WeightCache.Fingerprint?,
) : AutoCloseable {

    /** One signature's buffers, created on its first run and reused. */
    private class Buffers(val input: Tensor, val outputs: Map<String, Tensor>) : AutoCloseable {
        override fun close() = closeAll(listOf(input) + outputs.values)
    }

    private val buffers = HashMap<String, Buffers>()

    private fun buffersFor(key: String, inputName: String, outputNames: List<String>): Buffers {
        buffers[key]?.let { return it }
        val created = ArrayList<Tensor>()
        try {
            val input = engine.createInputBuffer(inputName, key).also { created += it }
            val outputs = LinkedHashMap<String, Tensor>()
            for (name in outputNames) outputs[name] = engine.createOutputBuffer(name, key).also { created += it }
            return Buffers(input, outputs).also { buffers[key] = it }
        } catch (t: Throwable) {
            closeAll(created, t)  // the buffers made before the failure
            throw t
        }
    }

    /** Runs [task]'s signature on one raw sample; returns its output (e.g. class probabilities). */
    fun run(task: TaskSpec, raw: FloatArray): FloatArray {
        ModelInput.requireFloat(task.input, task.name)
        val b = buffersFor(task.signatureKey, task.input.name, listOf(task.output.name))
        b.input.writeFloat(ModelInput.preprocess(raw, task.input, task.preprocessing))
        engine.run(mapOf(task.input.name to b.input), b.outputs, task.signatureKey)
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
        engine.run(mapOf(joint.input.name to b.input), b.outputs, joint.signatureKey)
        return joint.outputs.associate { it.task to b.outputs.getValue(it.name).readFloat() }
    }

    override fun close() {
        val all = buffers.values.toList<AutoCloseable>() + engine
        buffers.clear()
        closeAll(all)
        cache.locked { cache.afterClose(stamped, modelSha256) }
    }

    companion object {
        /** The LiteRT version this app is built against (gradle/libs.versions.toml's `litert`). */
        const val LITERT_VERSION = "2.2.0"

        /**
         * Reads the manifest from [file] and compiles the model with [threads] CPU threads (XNNPACK)
         * with its weight cache in a FILE beside it (WeightCache): a block that several signatures use
         * is packed once, and a warm start maps the packed weights instead of packing them into
         * anonymous memory. The cache is checked against its stamp before the compile and stamped
         * after a compile that wrote it, all under the cache file's lock (one writer at a time). On
         * any failure everything made so far is closed.
         */
        fun open(file: ModelFile, factory: EngineFactory, threads: Int): ZippedModel {
            val manifest = readManifest(file)
            val cache = WeightCache(File(file.path), "$LITERT_VERSION/${System.getProperty("os.arch")}")
            return cache.locked {
                val t0 = System.nanoTime()
                val sha256 = file.sha256()
                val found = cache.check(sha256)
                val before = cache.fingerprint()
                val t1 = System.nanoTime()
                val engine = factory.compile(file.path, cache.cache.path, threads)
                val t2 = System.nanoTime()
                try {
                    val state = cache.afterCompile(found, before, sha256)
                    val timings = LoadTimings(((t1 - t0) + (System.nanoTime() - t2)) / 1e6, (t2 - t1) / 1e6)
                    ZippedModel(file, manifest, engine, cache, sha256, state, threads, timings, cache.fingerprint())
                } catch (t: Throwable) {
                    closeAll(listOf(engine), t)
                    throw t
                }
            }
        }

        /** The manifest embedded in [file] (metadata entry "mtz_manifest"). */
        fun readManifest(file: ModelFile): Manifest = ManifestParser.readEmbedded(file.bytes, file.description)
    }
}
