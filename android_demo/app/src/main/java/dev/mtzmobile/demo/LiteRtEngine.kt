package dev.mtzmobile.demo

import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer

/**
 * LiteRT's CompiledModel behind the app's Engine interface: the only file that imports LiteRT.
 *
 * LiteRT API used here, all from com.google.ai.edge.litert:litert 2.2.0, as read in the LiteRT
 * sources at tag v2.2.0, litert/kotlin/src/main/kotlin/com/google/ai/edge/litert/:
 * - Model.kt: CompiledModel.create(filePath, options); CompiledModel.Options(vararg Accelerator)
 *   with `var cpuOptions`; CompiledModel.CpuOptions(numThreads, xnnPackFlags, xnnPackWeightCachePath);
 *   createInputBuffer(inputName, signature), createOutputBuffer(outputName, signature);
 *   run(inputs: Map<String, TensorBuffer>, outputs: Map<String, TensorBuffer>, signature);
 *   CompiledModel is AutoCloseable (JniHandle, Common.kt).
 * - Common.kt: enum Accelerator { NONE, CPU, GPU, NPU }.
 * - TensorBuffer.kt: writeFloat(FloatArray), readFloat(): FloatArray, AutoCloseable.
 * The guide https://ai.google.dev/edge/litert/next/android_kotlin shows the same calls.
 */
class LiteRtEngine private constructor(private val compiled: CompiledModel) : Engine {
    private class Buffer(val buffer: TensorBuffer) : Tensor {
        override fun writeFloat(data: FloatArray) {
            buffer.writeFloat(data)
        }

        override fun readFloat(): FloatArray = buffer.readFloat()

        override fun close() {
            buffer.close()
        }
    }

    override fun createInputBuffer(name: String, signature: String): Tensor =
        Buffer(compiled.createInputBuffer(name, signature))

    override fun createOutputBuffer(name: String, signature: String): Tensor =
        Buffer(compiled.createOutputBuffer(name, signature))

    override fun run(inputs: Map<String, Tensor>, outputs: Map<String, Tensor>, signature: String) {
        compiled.run(inputs.mapValues { (it.value as Buffer).buffer }, outputs.mapValues { (it.value as Buffer).buffer }, signature)
    }

    override fun close() {
        compiled.close()
    }

    companion object {
        /** From the file's path (the bundled model too, through its copy in files: see ModelSource.Asset). */
        val FACTORY = EngineFactory { modelPath, cachePath, threads ->
            val options = CompiledModel.Options(Accelerator.CPU)
            options.cpuOptions = CompiledModel.CpuOptions(numThreads = threads, xnnPackWeightCachePath = cachePath)
            LiteRtEngine(CompiledModel.create(modelPath, options))
        }
    }
}
