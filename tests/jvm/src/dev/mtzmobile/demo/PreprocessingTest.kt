package dev.mtzmobile.demo

import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized

/**
 * The app's model input (ModelInput.preprocess with the preprocessing its manifest reader gives)
 * for raw values the Python side chose, bit for bit equal to the Python side's own computation
 * (mtz_mobile/android_assets.py app_input, float32).
 */
@RunWith(Parameterized::class)
class PreprocessingTest(private val name: String, private val case: JSONObject) {
    companion object {
        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): List<Array<Any>> = Plan.cases("preprocessing")
    }

    @Test
    fun app_input_equals_pythons() {
        val manifest = ManifestParser.readEmbedded(Plan.map(case.getString("file")), name)
        val key = case.getString("task")
        val (input, preprocessing) = if (key == Contract.JOINT_KEY) {
            val joint = manifest.joint ?: throw AssertionError("$name: no joint signature in the manifest")
            joint.input to (ModelInput.jointPreprocessing(manifest) ?: throw AssertionError("$name: no joint preprocessing"))
        } else {
            val task = manifest.tasks.firstOrNull { it.name == key } ?: throw AssertionError("$name: no task $key")
            task.input to task.preprocessing
        }
        ModelInput.requireFloat(input, key)
        val raw = Plan.floats(case.getString("raw"))
        val expected = Plan.floats(case.getString("expected"))
        val n = input.elementCount
        assertEquals("$name: raw values for whole inputs", 0, raw.size % n)
        assertEquals("$name: as many expected values as raw ones", raw.size, expected.size)
        for (s in 0 until raw.size / n) {
            val x = ModelInput.preprocess(raw.copyOfRange(s * n, (s + 1) * n), input, preprocessing)
            for (i in 0 until n) {
                val want = expected[s * n + i]
                if (x[i].toRawBits() != want.toRawBits()) {
                    fail("$name: input $s value $i: raw ${raw[s * n + i]} gives ${x[i]} in the app, $want in Python " +
                        "(mean ${preprocessing.mean}, scale ${preprocessing.scale})")
                }
            }
        }
    }
}

/** The joint signature's preprocessing, the size check and the float32-only rule of ModelInput. */
@RunWith(Parameterized::class)
class ModelInputTest(private val name: String, private val case: JSONObject) {
    companion object {
        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): List<Array<Any>> = Plan.cases("joint")
    }

    @Test
    fun joint_preprocessing_and_checks() {
        val manifest = ManifestParser.readEmbedded(Plan.map(case.getString("file")), name)
        val joint = ModelInput.jointPreprocessing(manifest)
        if (case.isNull("preprocessing")) {
            assertNull("$name: the tasks preprocess differently, yet a joint preprocessing", joint)
        } else {
            val p = case.getJSONObject("preprocessing")
            assertNotNull("$name: the tasks agree, yet no joint preprocessing", joint)
            assertEquals("$name: joint scale", p.getDouble("scale").toFloat(), joint!!.scale)
            assertEquals("$name: joint mean", p.getDouble("mean").toFloat(), joint.mean)
        }
        val task = manifest.tasks.first()
        try {
            ModelInput.preprocess(FloatArray(task.input.elementCount + 1), task.input, task.preprocessing)
            fail("$name: an input of the wrong size was accepted")
        } catch (e: IllegalArgumentException) {
            assertEquals("${task.input.elementCount + 1} values for input 'input' of shape ${task.input.shape}", e.message)
        }
        try {
            ModelInput.requireFloat(task.input.copy(dtype = "int8"), task.name)
            fail("$name: an int8 input was accepted")
        } catch (e: UnsupportedOperationException) {
            // reported, not fed
        }
    }
}
