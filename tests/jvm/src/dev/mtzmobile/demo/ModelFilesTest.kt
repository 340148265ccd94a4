package dev.mtzmobile.demo

import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized

/**
 * Every file tests/test_kotlin_jvm.py wrote (converted models, their damaged and edited copies),
 * read the way ZippedModel.readManifest reads the app's model: the manifest the converter
 * embedded, or the reader's own exception (MalformedModelException, ManifestException) with a
 * one-line message. Any other exception fails the test.
 */
@RunWith(Parameterized::class)
class ModelFilesTest(private val name: String, private val case: JSONObject) {
    companion object {
        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): List<Array<Any>> = Plan.cases("models")
    }

    private fun read(): Any =
        try {
            ManifestParser.readEmbedded(Plan.map(case.getString("file")), name)
        } catch (e: MalformedModelException) {
            e
        } catch (e: ManifestException) {
            e
        }

    @Test
    fun read_file() {
        val outcome = read()
        val expect = case.getString("expect")
        if (outcome is Exception) {
            val message = outcome.message ?: ""
            assertTrue("$name: empty ${outcome.javaClass.simpleName} message", message.isNotBlank())
            assertFalse("$name: a message with control characters: $message", message.any { it.isISOControl() })
            assertTrue("$name: a message of ${message.length} characters: ${message.take(300)}…", message.length <= 300)
            if (case.has("message")) {
                assertTrue("$name: '$message' does not say '${case.getString("message")}'", message.contains(case.getString("message")))
            }
        }
        when (expect) {
            "manifest" -> {
                if (outcome is Exception) fail("$name: ${outcome.javaClass.simpleName}: ${outcome.message}")
                ManifestView.assertSame(case.getJSONObject("manifest"), ManifestView.of(outcome as Manifest), "$name: manifest")
            }
            "malformed_or_manifest" -> when (outcome) {
                is MalformedModelException -> Unit
                is Manifest -> ManifestView.assertSame(case.getJSONObject("manifest"), ManifestView.of(outcome), "$name: manifest")
                else -> fail("$name: ${outcome.javaClass.simpleName}: ${(outcome as Exception).message}, expected MalformedModelException")
            }
            "malformed" -> assertEquals("$name: ${describe(outcome)}", MalformedModelException::class.java, outcome.javaClass)
            "manifest_error" -> assertEquals("$name: ${describe(outcome)}", ManifestException::class.java, outcome.javaClass)
            else -> fail("$name: unknown expectation '$expect'")
        }
    }

    private fun describe(outcome: Any): String =
        if (outcome is Exception) "${outcome.javaClass.simpleName}: ${outcome.message}" else "read a manifest"
}
