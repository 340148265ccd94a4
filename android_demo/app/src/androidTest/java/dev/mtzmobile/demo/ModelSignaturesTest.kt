package dev.mtzmobile.demo

import android.content.Context
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assume.assumeTrue
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import java.nio.ByteBuffer
import kotlin.math.abs

/**
 * On a device: the model the app would load (files/model.tflite if pushed, else the bundled
 * asset) runs every signature its manifest lists, with outputs of the manifest's shape, finite,
 * and summing to 1 where the activation is softmax. Run with `./gradlew connectedDebugAndroidTest`.
 */
@RunWith(AndroidJUnit4::class)
class ModelSignaturesTest {
    private val context: Context = InstrumentationRegistry.getInstrumentation().targetContext

    private fun modelFile(): ModelFile =
        ModelFile.locate(context)
            ?: throw AssertionError(
                "no model: run mtz-mobile export-android before building, or " +
                    "`mtz-mobile push model.tflite --app ${Contract.APP_PACKAGE}`",
            )

    /** The app's own sample for [task] when there is one, else a mid-grey input. */
    private fun input(samples: SampleSet?, task: TaskSpec): FloatArray =
        samples?.forTask(task)?.firstOrNull()?.raw ?: FloatArray(task.input.elementCount) { 128f }

    private fun checkOutput(what: String, out: FloatArray, shape: List<Int>, activation: String?) {
        assertEquals("$what: output size for shape $shape", shape.fold(1) { n, d -> n * d }, out.size)
        for (v in out) assertTrue("$what: output $v is not finite", v.isFinite())
        if (activation == "softmax") {
            val sum = out.fold(0.0) { s, v -> s + v }
            assertEquals("$what: softmax outputs sum to $sum", 1.0, sum, 1e-4)
            for (v in out) assertTrue("$what: probability $v outside [0, 1]", v >= 0f && v <= 1f)
        }
    }

    @Test
    fun everySignatureInTheManifestRuns() {
        val file = modelFile()
        val samples = SampleSet.load(context)
        ZippedModel.open(file, LiteRtEngine.FACTORY, 1).use { model ->
            val manifest = model.manifest
            assertTrue("the manifest lists no tasks", manifest.tasks.isNotEmpty())
            val byTask = HashMap<String, FloatArray>()
            for (task in manifest.tasks) {
                assertEquals("task ${task.name}: signature key", task.name, task.signatureKey)
                val out = model.run(task, input(samples, task))
                checkOutput("task ${task.name}", out, task.output.shape, task.output.activation)
                assertEquals("task ${task.name}: one label per output", task.labels.size, out.size)
                byTask[task.name] = out
            }
            val joint = manifest.joint ?: return
            if (model.jointPreprocessing == null) return
            assertEquals(manifest.tasks.map { it.name }.toSet(), joint.outputs.map { it.task }.toSet())
            val first = manifest.tasks.first()
            val outputs = model.runJoint(input(samples, first))
            for (o in joint.outputs) {
                val task = manifest.tasks.first { it.name == o.task }
                val out = outputs.getValue(o.task)
                checkOutput("joint output ${o.name}", out, o.shape, task.output.activation)
                // Same input as the task signature when the tasks share samples: same answer.
                if (input(samples, task).contentEquals(input(samples, first))) {
                    val single = byTask.getValue(o.task)
                    val diff = out.indices.maxOf { abs(out[it] - single[it]) }
                    assertTrue("joint output ${o.name} differs from signature ${o.task} by $diff", diff <= 1e-5f)
                }
            }
        }
    }

    @Test
    fun deviceMatchesTheHostOnTheExportedSamples() {
        val file = modelFile()
        // Skipped, not passed, when there is nothing to compare: phone-check reports the difference.
        val samples = SampleSet.load(context)
        assumeTrue("no samples.json bundled: nothing to compare", samples != null)
        assumeTrue("samples.json was exported with another model", samples!!.modelSha256 == file.sha256())
        ZippedModel.open(file, LiteRtEngine.FACTORY, 1).use { model ->
            var compared = 0
            for (task in model.manifest.tasks) {
                for (sample in samples.forTask(task)) {
                    val host = sample.expected[task.name] ?: continue
                    val out = model.run(task, sample.raw)
                    assertEquals(host.size, out.size)
                    val diff = out.indices.maxOf { abs(out[it] - host[it]) }
                    assertTrue("task ${task.name}, ${sample.source} #${sample.index}: device differs from host by $diff", diff <= 1e-4f)
                    compared++
                }
            }
            assertTrue("samples.json holds no sample with host outputs", compared > 0)
        }
    }

    @Test
    fun aFileThatIsNotTfliteIsRejected() {
        try {
            TfliteMetadata.find(ByteBuffer.wrap(ByteArray(64)), Contract.MANIFEST_METADATA)
            fail("64 zero bytes were read as a .tflite")
        } catch (e: MalformedModelException) {
            assertTrue(e.message.orEmpty().contains("TFL3"))
        }
    }

    @Test
    fun theManifestEntryIsFound() {
        val file = modelFile()
        assertNull(TfliteMetadata.find(file.bytes, "no_such_entry"))
        val manifest = ZippedModel.readManifest(file)
        assertTrue("the manifest lists no tasks", manifest.tasks.isNotEmpty())
    }
}
