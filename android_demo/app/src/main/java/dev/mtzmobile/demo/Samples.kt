package dev.mtzmobile.demo

import org.json.JSONObject

/**
 * One test image as stored in its data set (raw values, e.g. 0-255), row-major in [shape]
 * (the model input's shape without the batch dimension), with each task's true label and the
 * outputs LiteRT gave on the machine that exported it.
 */
class Sample(
    val source: String,
    val index: Int,
    val shape: List<Int>,
    val raw: FloatArray,
    val truth: Map<String, String>,
    val expected: Map<String, FloatArray>,
)

/** samples.json: the samples and the SHA-256 of the model they were exported with. */
class SampleSet(val modelSha256: String, val samples: List<Sample>) {
    /** The samples this task can run: its truth is known and the size matches its input. */
    fun forTask(task: TaskSpec): List<Sample> {
        val n = task.input.elementCount
        return samples.filter { it.raw.size == n && task.name in it.truth }
    }

    companion object {
        /** samples.json's text (mtz-mobile export-android); ModelFile.kt's SampleSet.load reads the asset. */
        fun parse(text: String): SampleSet = parse(JSONObject(text))

        private fun parse(o: JSONObject): SampleSet {
            val format = o.getString("format")
            require(format == Contract.SAMPLES_FORMAT) { "${Contract.SAMPLES_ASSET} has format '$format'" }
            val list = o.getJSONArray("samples")
            val samples = List(list.length()) { parseSample(list.getJSONObject(it)) }
            return SampleSet(o.getString("model_sha256"), samples)
        }

        private fun parseSample(o: JSONObject): Sample {
            val shapeJson = o.getJSONArray("shape")
            val pixels = o.getJSONArray("pixels")
            val truthJson = o.getJSONObject("truth")
            val expectedJson = o.getJSONObject("expected")
            val truth = truthJson.keys().asSequence().associateWith { truthJson.getString(it) }
            val expected = expectedJson.keys().asSequence().associateWith { task ->
                val values = expectedJson.getJSONArray(task)
                FloatArray(values.length()) { values.getDouble(it).toFloat() }
            }
            return Sample(
                source = o.getString("source"),
                index = o.getInt("index"),
                shape = List(shapeJson.length()) { shapeJson.getInt(it) },
                raw = FloatArray(pixels.length()) { pixels.getDouble(it).toFloat() },
                truth = truth,
                expected = expected,
            )
        }
    }
}
