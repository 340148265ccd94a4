package dev.mtzmobile.demo

/**
 * The compiled model as the app uses it. On the phone it is LiteRT's CompiledModel and TensorBuffer
 * (LiteRtEngine.kt, the only file that imports LiteRT); the JVM tests put a double here, because
 * LiteRT's Android runtime cannot run on the JVM. Nothing else is behind an interface: the model
 * file, its manifest, the preprocessing and the weight cache file are read and written for real.
 */
interface Engine : AutoCloseable {
    fun createInputBuffer(name: String, signature: String): Tensor

    fun createOutputBuffer(name: String, signature: String): Tensor

    fun run(inputs: Map<String, Tensor>, outputs: Map<String, Tensor>, signature: String)
}

/** One input or output buffer of a signature (LiteRT's TensorBuffer). */
interface Tensor : AutoCloseable {
    fun writeFloat(data: FloatArray)

    fun readFloat(): FloatArray
}

/**
 * Compiles [modelPath] for the CPU (XNNPACK) with [threads] threads and XNNPACK's weight cache in
 * the file [cachePath]. May throw anything LiteRT throws, including UnsatisfiedLinkError (no native
 * library for this ABI) and OutOfMemoryError.
 */
fun interface EngineFactory {
    fun compile(modelPath: String, cachePath: String, threads: Int): Engine
}

/** Closes every one of [resources], even when some throw; the first failure is rethrown (or added to [cause]). */
fun closeAll(resources: Iterable<AutoCloseable?>, cause: Throwable? = null) {
    var first = cause
    for (r in resources) {
        try {
            r?.close()
        } catch (t: Throwable) {
            if (first == null) first = t else if (first !== t) first.addSuppressed(t)
        }
    }
    if (cause == null && first != null) throw first
}
