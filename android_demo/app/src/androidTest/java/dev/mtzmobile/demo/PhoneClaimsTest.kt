package dev.mtzmobile.demo

import android.content.Context
import android.util.Log
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit

/**
 * What `mtz-mobile phone-check` measures in the app's process: each test logs one JSON line
 * (`adb logcat -s MtzCheck`) that the host reads and judges; the thresholds live on the host
 * (mtz_mobile/phone_check.py), the tests only fail on what is wrong whatever the threshold.
 */
@RunWith(AndroidJUnit4::class)
class PhoneClaimsTest {
    private val context: Context = InstrumentationRegistry.getInstrumentation().targetContext

    private fun report(check: String, fields: JSONObject) {
        Log.i(TAG, fields.put("check", check).toString())
    }

    private fun <T> await(start: ((T) -> Unit) -> Unit): T {
        val latch = CountDownLatch(1)
        var value: T? = null
        start { value = it; latch.countDown() }
        assertTrue("timed out", latch.await(300, TimeUnit.SECONDS))
        @Suppress("UNCHECKED_CAST")
        return value as T
    }

    private fun host(runs: Int = 100): ModelHost =
        ModelHost(AppLocator(context), LiteRtEngine.FACTORY, 1, ::androidMemory, benchmarkRuns = runs)

    /** Twenty task switches, alternating over every task: the host compiled the model once. */
    @Test
    fun switchingTasksNeverRecompiles() {
        val host = host()
        try {
            val loaded = await<Loaded> { host.load(it) }
            assertTrue("the model did not load: ${(loaded as? Loaded.Failed)?.message}", loaded is Loaded.Ready)
            val tasks = (loaded as Loaded.Ready).manifest.tasks
            repeat(20) { i ->
                val task = tasks[i % tasks.size]
                val result = await<Result<FloatArray>> { done -> host.withModel("switch", done) { it.run(task, FloatArray(task.input.elementCount)) } }
                assertTrue("task ${task.name}: ${result.exceptionOrNull()}", result.isSuccess)
            }
            report("switch", JSONObject().put("switches", 20).put("tasks", tasks.size).put("compiles", host.compiles))
            assertEquals("compiles for one load and 20 task switches", 1, host.compiles)
        } finally {
            host.release()
        }
    }

    /** Memory of this process before a warm open and after every signature ran once. */
    @Test
    fun memoryAfterAWarmLoad() {
        val file = ModelFile.locate(context)
        assertNotNull("no model", file)
        ZippedModel.open(file!!, LiteRtEngine.FACTORY, 1).close()  // builds the cache file when absent
        System.gc()
        val before = androidMemory()
        ZippedModel.open(file, LiteRtEngine.FACTORY, 1).use { model ->
            for (task in model.manifest.tasks) model.run(task, FloatArray(task.input.elementCount))
            report("memory", JSONObject().put("found", model.weightCacheFound).put("before", before.toJson())
                .put("after", androidMemory().toJson()).put("weight_bytes", model.manifest.sharing.file.weightBytes))
        }
    }

    /** PSS after each of ten Reload + Benchmark cycles, as the buttons do them. */
    @Test
    fun pssOverTenReloadBenchmarkCycles() {
        val host = host(runs = 20)
        val pss = JSONArray()
        try {
            repeat(10) {
                val loaded = await<Loaded> { host.load(it) }
                assertTrue("reload: ${(loaded as? Loaded.Failed)?.message}", loaded is Loaded.Ready)
                val (text, _, reloaded) = await<Triple<String, String?, Loaded?>> { done ->
                    host.benchmark(null) { t, j, r -> done(Triple(t, j, r)) }
                }
                assertTrue(text, !text.startsWith("Benchmark failed") && reloaded == null)
                System.gc()
                pss.put(androidMemory().pssKb)
            }
            report("cycles", JSONObject().put("pss_kb", pss))
        } finally {
            host.release()
        }
    }

    companion object {
        const val TAG = "MtzCheck"
    }
}
