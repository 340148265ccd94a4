package dev.mtzmobile.demo

import org.json.JSONArray
import org.json.JSONObject
import org.junit.runner.Description
import org.junit.runner.JUnitCore
import org.junit.runner.notification.Failure
import org.junit.runner.notification.RunListener
import java.io.File

/**
 * Runs every JVM test class with JUnit 4 and writes one result per test to the file named by
 * -Dmtz.results (tests/test_kotlin_jvm.py reads it); prints JUnit's own report too.
 */
object JvmTests {
    val CLASSES = arrayOf(
        ContractTest::class.java,
        ModelFilesTest::class.java,
        FuzzTest::class.java,
        PreprocessingTest::class.java,
        ModelInputTest::class.java,
        SamplesTest::class.java,
        BenchmarkStatsTest::class.java,
        WeightCacheTest::class.java,
        LifecycleTest::class.java,
    )

    @JvmStatic
    fun main(args: Array<String>) {
        val results = LinkedHashMap<String, JSONObject>()
        fun key(d: Description) = "${d.testClass?.simpleName ?: d.className}.${d.methodName ?: d.displayName}"
        val core = JUnitCore()
        core.addListener(object : RunListener() {
            override fun testStarted(d: Description) {
                results[key(d)] = JSONObject().put("class", d.testClass?.simpleName ?: d.className).put("test", d.methodName ?: d.displayName).put("ok", true)
            }

            override fun testFailure(f: Failure) {
                val entry = results.getOrPut(key(f.description)) {
                    JSONObject().put("class", f.description.testClass?.simpleName ?: f.description.className).put("test", f.description.methodName ?: f.description.displayName)
                }
                val e = f.exception
                val line = if (e is AssertionError) (e.message ?: "assertion failed") else "${e.javaClass.name}: ${e.message} at ${e.stackTrace.firstOrNull()}"
                entry.put("ok", false).put("message", line)
            }
        })
        core.addListener(org.junit.internal.TextListener(System.out))
        val result = core.run(*CLASSES)
        val out = System.getProperty("mtz.results")
        if (out != null) File(out).writeText(JSONObject().put("run", result.runCount).put("tests", JSONArray(results.values)).toString(1))
        System.exit(if (result.wasSuccessful()) 0 else 1)
    }
}
