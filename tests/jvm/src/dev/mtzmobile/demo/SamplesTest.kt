package dev.mtzmobile.demo

import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized
import java.io.File
import java.security.MessageDigest

/** samples.json as mtz-mobile export-android writes it, read with the app's SampleSet. */
@RunWith(Parameterized::class)
class SamplesTest(private val name: String, private val case: JSONObject) {
    companion object {
        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): List<Array<Any>> = Plan.cases("samples")
    }

    @Test
    fun exported_samples_fit_the_model() {
        val file = case.getString("file")
        val manifest = ManifestParser.readEmbedded(Plan.map(file), name)
        val set = SampleSet.parse(File(case.getString("samples")).readText())
        val sha = MessageDigest.getInstance("SHA-256").digest(File(file).readBytes()).joinToString("") { "%02x".format(it) }
        assertEquals("$name: model_sha256", sha, set.modelSha256)
        assertEquals("$name: samples", case.getInt("count"), set.samples.size)
        for (task in manifest.tasks) {
            val list = set.forTask(task)
            assertEquals("$name: task ${task.name} runs every sample", set.samples.size, list.size)
            for (s in list) {
                assertEquals("$name: sample ${s.index} shape", task.input.shape.drop(1), s.shape)
                assertTrue("$name: sample ${s.index} truth ${s.truth[task.name]}", s.truth[task.name] in task.labels)
                assertEquals("$name: sample ${s.index} expected outputs", task.output.elementCount, s.expected[task.name]?.size)
            }
        }
    }
}
