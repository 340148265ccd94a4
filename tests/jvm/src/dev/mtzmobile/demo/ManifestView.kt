package dev.mtzmobile.demo

import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.fail

/**
 * The parsed [Manifest] as the manifest JSON it came from: the fields the app keeps, under their
 * names in converters/manifest.schema.json, with the Kotlin types the parser gave them (Int/Long
 * for integers, Float/Double for numbers). tests/test_kotlin_jvm.py writes the same view of the
 * JSON the converter embedded; [assertSame] compares the two, types included.
 */
object ManifestView {
    fun of(m: Manifest): Map<String, Any?> = mapOf(
        "format" to Contract.MANIFEST_FORMAT,
        "version" to Contract.MANIFEST_VERSION,
        "tool_version" to m.toolVersion,
        "quantization" to m.quantization,
        "tasks" to m.tasks.map { task(it) },
        "joint" to m.joint?.let { joint(it) },
        "sharing" to mapOf(
            "separate_params" to m.sharing.separateParams,
            "zipped_params" to m.sharing.zippedParams,
            "shared_params" to m.sharing.sharedParams,
            "shared_fraction" to m.sharing.sharedFraction,
            "file" to mapOf(
                "weight_bytes" to m.sharing.file.weightBytes,
                "shared_weight_bytes" to m.sharing.file.sharedWeightBytes,
            ),
        ),
    )

    private fun task(t: TaskSpec): Map<String, Any?> = mapOf(
        "name" to t.name,
        "signature_key" to t.signatureKey,
        "input" to tensor(t.input),
        "output" to tensor(t.output),
        "labels" to t.labels,
        "preprocessing" to mapOf("scale" to t.preprocessing.scale, "mean" to t.preprocessing.mean),
    )

    private fun tensor(t: TensorSpec): Map<String, Any?> = mapOf(
        "name" to t.name,
        "shape" to t.shape,
        "dtype" to t.dtype,
        "layout" to t.layout,
        "activation" to t.activation,
    )

    private fun joint(j: JointSpec): Map<String, Any?> = mapOf(
        "signature_key" to j.signatureKey,
        "input" to tensor(j.input),
        "outputs" to j.outputs.map { mapOf("task" to it.task, "name" to it.name, "shape" to it.shape, "dtype" to it.dtype) },
    )

    /**
     * [expected]: org.json's reading of the Python view; [actual]: [of]'s. A null value and an
     * absent key are the same (the app keeps absent optional fields as null). An Int/Long must
     * be a JSON integer; a Float or Double must equal the JSON number read at that precision.
     */
    fun assertSame(expected: Any?, actual: Any?, path: String) {
        val e = if (expected == JSONObject.NULL) null else expected
        when (actual) {
            null -> if (e != null) fail("$path: the file holds ${show(e)}, the app read nothing")
            is Map<*, *> -> {
                if (e !is JSONObject) return mismatch(path, e, actual)
                val keys = (e.keys().asSequence().filter { !e.isNull(it) } + actual.keys.filter { actual[it] != null }.map { it as String }).toSortedSet()
                for (k in keys) assertSame(if (e.has(k)) e.get(k) else null, actual[k], "$path.$k")
            }
            is List<*> -> {
                if (e !is JSONArray) return mismatch(path, e, actual)
                if (e.length() != actual.size) fail("$path: the file holds ${e.length()} elements, the app read ${actual.size}")
                for (i in actual.indices) assertSame(e.get(i), actual[i], "$path[$i]")
            }
            is String -> if (e != actual) mismatch(path, e, actual)
            is Int, is Long -> if (!(e is Int || e is Long) || (e as Number).toLong() != (actual as Number).toLong()) mismatch(path, e, actual)
            is Float -> if (e !is Number || e.toFloat() != actual) mismatch(path, e, actual)
            is Double -> if (e !is Number || e.toDouble() != actual) mismatch(path, e, actual)
            else -> fail("$path: the app read a ${actual.javaClass.simpleName}, which this view does not know")
        }
    }

    private fun mismatch(path: String, expected: Any?, actual: Any?) {
        fail("$path: the file holds ${show(expected)}, the app read ${show(actual)}")
    }

    private fun show(v: Any?): String = when (v) {
        null -> "nothing"
        is String -> "\"$v\" (String)"
        is JSONObject -> "an object"
        is JSONArray -> "an array of ${v.length()}"
        is Map<*, *> -> "an object"
        is List<*> -> "a list of ${v.size}"
        else -> "$v (${v.javaClass.simpleName})"
    }
}
