package dev.mtzmobile.demo

import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized

/**
 * The benchmark's statistics on the Python side's numbers: the median equal to Python's
 * statistics.median, the percentiles to numpy's nearest-rank ("inverted_cdf") percentile, exactly.
 */
@RunWith(Parameterized::class)
class BenchmarkStatsTest(private val name: String, private val case: JSONObject) {
    companion object {
        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): List<Array<Any>> = Plan.cases("stats")
    }

    private fun expected(key: String): Double = if (case.isNull(key)) Double.NaN else case.getDouble(key)

    @Test
    fun statistics_equal_pythons() {
        val micros = Plan.doubles(case.getJSONArray("values"))
        val before = micros.copyOf()
        val timing = BenchmarkStats.summarize("task", 10, 12.5, micros)
        assertArrayEquals("$name: summarize changed its input", before, micros, 0.0)
        assertEquals("$name: runs", micros.size, timing.runs)
        assertEquals("$name: warmup", 10, timing.warmup)
        assertEquals("$name: first", 12.5, timing.firstMicros, 0.0)
        assertEquals("$name: median", expected("median"), timing.medianMicros, 0.0)
        assertEquals("$name: p90", expected("p90"), timing.p90Micros, 0.0)
        val sorted = micros.sortedArray()
        val quantiles = case.getJSONObject("percentiles")
        for (q in quantiles.keys()) {
            assertEquals("$name: percentile $q", quantiles.getDouble(q), BenchmarkStats.percentile(sorted, q.toDouble()), 0.0)
        }
    }
}
