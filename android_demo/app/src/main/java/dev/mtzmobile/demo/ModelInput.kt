package dev.mtzmobile.demo

/**
 * What a signature is fed, from the manifest alone (no LiteRT, no Android: tests/test_kotlin_jvm.py
 * runs it on the JVM against the Python side's own input computation).
 */
object ModelInput {
    /** model input = (raw - mean) * scale, in float32, checked against the input's size. */
    fun preprocess(raw: FloatArray, input: TensorSpec, p: Preprocessing): FloatArray {
        require(raw.size == input.elementCount) {
            "${raw.size} values for input '${input.name}' of shape ${input.shape}"
        }
        return FloatArray(raw.size) { (raw[it] - p.mean) * p.scale }
    }

    /**
     * The joint signature's preprocessing: every task's, when they agree; else null (the tasks
     * must then run one by one, each on its own input).
     */
    fun jointPreprocessing(manifest: Manifest): Preprocessing? =
        manifest.tasks.map { it.preprocessing }.distinct().singleOrNull()

    /** This demo feeds float32 only: a fully int8-quantised input is reported, not fed. */
    fun requireFloat(input: TensorSpec, key: String) {
        if (input.dtype != "float32") {
            throw UnsupportedOperationException("signature $key takes ${input.dtype} input; this demo feeds float32")
        }
    }
}
