package dev.mtzmobile.demo

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import java.nio.ByteBuffer

/**
 * The manifest is missing, not JSON, or not what converters/manifest.schema.json describes. The
 * message is one printable line: it may quote a damaged file's contents.
 */
class ManifestException(message: String) : Exception(printableLine(message))

private fun printableLine(text: String): String {
    val line = text.replace(Regex("\\s+"), " ").replace(Regex("\\p{Cntrl}"), "?")
    return if (line.length <= 300) line else line.take(299) + "…"
}

/** A signature tensor: name, shape (batch first), dtype and, where given, layout and activation. */
data class TensorSpec(
    val name: String,
    val shape: List<Int>,
    val dtype: String,
    val layout: String?,
    val activation: String?,
) {
    /** Values per call: the product of the shape. */
    val elementCount: Int get() = shape.fold(1) { n, d -> n * d }
}

/** One task: its signature, tensors, class labels and the preprocessing its input needs. */
data class TaskSpec(
    val name: String,
    val signatureKey: String,
    val input: TensorSpec,
    val output: TensorSpec,
    val labels: List<String>,
    val preprocessing: Preprocessing,
)

/** model input = (raw value - mean) * scale. */
data class Preprocessing(val scale: Float, val mean: Float)

data class JointOutput(val task: String, val name: String, val shape: List<Int>, val dtype: String)

/** The signature that runs every task in one call. */
data class JointSpec(val signatureKey: String, val input: TensorSpec, val outputs: List<JointOutput>)

data class SharingSpec(
    val separateParams: Long,
    val zippedParams: Long,
    val sharedParams: Long,
    val sharedFraction: Double,
    val file: FileBytes,
)

/** Weight bytes in the file: all of them, and those used by two or more task signatures. */
data class FileBytes(val weightBytes: Long, val sharedWeightBytes: Long)

data class Manifest(
    val toolVersion: String,
    val quantization: String,
    val tasks: List<TaskSpec>,
    val joint: JointSpec?,
    val sharing: SharingSpec,
)

/**
 * Parses the embedded manifest (converters/manifest.schema.json). Each parse function reads
 * one object of the schema: a get...() read must be a required property of that object, an
 * opt...() read at least a property of it. tests/test_kotlin_jvm.py runs this parser on the JVM
 * over real converted files (it must give exactly the JSON the converter embedded), over every
 * schema-valid variant with an optional field removed (it must accept them) and over damaged ones
 * (ManifestException, nothing else).
 */
object ManifestParser {
    /**
     * The manifest embedded in a .tflite (metadata entry "mtz_manifest"); [model] holds the whole
     * file, [description] names it in the error when it has none. A damaged file gives
     * MalformedModelException, a missing or unreadable manifest ManifestException.
     */
    fun readEmbedded(model: ByteBuffer, description: String): Manifest {
        val bytes = TfliteMetadata.find(model, Contract.MANIFEST_METADATA)
            ?: throw ManifestException(
                "$description has no '${Contract.MANIFEST_METADATA}' metadata: it was not written by `mtz-mobile convert`",
            )
        return parse(String(bytes, Charsets.UTF_8))
    }

    fun parse(json: String): Manifest {
        checkNesting(json)
        return try {
            parseManifest(JSONObject(json))
        } catch (e: JSONException) {
            // org.json's syntax errors quote the whole input ("... at character 5 of {...}"): its start only
            val reason = (e.message ?: "").substringBefore(" of {").take(MAX_REASON)
            throw ManifestException("the embedded manifest is not what this app expects ($reason): convert the model again")
        }
    }

    /** The schema nests 5 levels deep; org.json parses recursively and would overflow the stack on a deeper file. */
    private const val MAX_NESTING = 32

    private const val MAX_REASON = 160

    private fun checkNesting(json: String) {
        var depth = 0
        var inString = false
        var escaped = false
        for (c in json) {
            when {
                escaped -> escaped = false
                inString -> if (c == '\\') escaped = true else if (c == '"') inString = false
                c == '"' -> inString = true
                c == '{' || c == '[' -> if (++depth > MAX_NESTING) {
                    throw ManifestException("the embedded manifest nests deeper than $MAX_NESTING levels: convert the model again")
                }
                c == '}' || c == ']' -> depth--
            }
        }
    }

    private fun parseManifest(o: JSONObject): Manifest {
        val format = o.getString("format")
        if (format != Contract.MANIFEST_FORMAT) throw ManifestException("unknown manifest format '$format'")
        val version = o.getInt("version")
        if (version != Contract.MANIFEST_VERSION) {
            throw ManifestException("manifest version $version; this app reads version ${Contract.MANIFEST_VERSION}")
        }
        val tasks = objects(o.getJSONArray("tasks")).map { parseTask(it) }
        if (tasks.isEmpty()) throw ManifestException("the manifest lists no tasks")
        return Manifest(
            toolVersion = o.getString("tool_version"),
            quantization = o.getString("quantization"),
            tasks = tasks,
            joint = o.optJSONObject("joint")?.let { parseJoint(it) },
            sharing = parseSharing(o.getJSONObject("sharing")),
        )
    }

    private fun parseTask(o: JSONObject): TaskSpec {
        val task = TaskSpec(
            name = o.getString("name"),
            signatureKey = o.getString("signature_key"),
            input = parseTensor(o.getJSONObject("input")),
            output = parseTensor(o.getJSONObject("output")),
            labels = strings(o.getJSONArray("labels")),
            preprocessing = parsePreprocessing(o.getJSONObject("preprocessing")),
        )
        // The naming rules of mtz_mobile/api.py (task_names): a file that breaks them came from another tool.
        if (task.input.name != Contract.INPUT_NAME || task.output.name != Contract.OUTPUT_NAME) {
            throw ManifestException(
                "task ${task.name}: signature tensors '${task.input.name}' -> '${task.output.name}', expected " +
                    "'${Contract.INPUT_NAME}' -> '${Contract.OUTPUT_NAME}'",
            )
        }
        return task
    }

    private fun parseTensor(o: JSONObject): TensorSpec =
        TensorSpec(
            name = o.getString("name"),
            shape = ints(o.getJSONArray("shape")),
            dtype = o.getString("dtype"),
            layout = o.optString("layout").ifEmpty { null },
            activation = o.optString("activation").ifEmpty { null },
        )

    private fun parsePreprocessing(o: JSONObject): Preprocessing =
        Preprocessing(scale = o.getDouble("scale").toFloat(), mean = o.getDouble("mean").toFloat())

    private fun parseJoint(o: JSONObject): JointSpec {
        val joint = JointSpec(
            signatureKey = o.getString("signature_key"),
            input = parseTensor(o.getJSONObject("input")),
            outputs = objects(o.getJSONArray("outputs")).map { parseJointOutput(it) },
        )
        if (joint.signatureKey != Contract.JOINT_KEY) {
            throw ManifestException("joint signature '${joint.signatureKey}', expected '${Contract.JOINT_KEY}'")
        }
        return joint
    }

    private fun parseJointOutput(o: JSONObject): JointOutput =
        JointOutput(
            task = o.getString("task"),
            name = o.getString("name"),
            shape = ints(o.getJSONArray("shape")),
            dtype = o.getString("dtype"),
        )

    private fun parseSharing(o: JSONObject): SharingSpec =
        SharingSpec(
            separateParams = o.getLong("separate_params"),
            zippedParams = o.getLong("zipped_params"),
            sharedParams = o.getLong("shared_params"),
            sharedFraction = o.getDouble("shared_fraction"),
            file = parseFileBytes(o.getJSONObject("file")),
        )

    private fun parseFileBytes(o: JSONObject): FileBytes =
        FileBytes(weightBytes = o.getLong("weight_bytes"), sharedWeightBytes = o.getLong("shared_weight_bytes"))

    private fun objects(a: JSONArray): List<JSONObject> = List(a.length()) { a.getJSONObject(it) }

    private fun strings(a: JSONArray): List<String> = List(a.length()) { a.getString(it) }

    private fun ints(a: JSONArray): List<Int> = List(a.length()) { a.getInt(it) }
}
