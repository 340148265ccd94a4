package dev.mtzmobile.demo

/** One signature's timings over [runs] calls after [warmup] untimed calls, in microseconds. */
data class SignatureTiming(val key: String, val runs: Int, val warmup: Int, val firstMicros: Double, val medianMicros: Double, val p90Micros: Double)

/**
 * The benchmark's statistics (no Android: tests/test_kotlin_jvm.py compares them on the JVM with
 * Python's statistics.median and the nearest-rank percentile).
 */
object BenchmarkStats {
    /** [micros]: one latency per timed call, in call order (not changed here). */
    fun summarize(key: String, warmup: Int, firstMicros: Double, micros: DoubleArray): SignatureTiming {
        val sorted = micros.sortedArray()
        return SignatureTiming(key, micros.size, warmup, firstMicros, median(sorted), percentile(sorted, 0.9))
    }

    /** Median of sorted values (NaN when there are none). */
    fun median(sorted: DoubleArray): Double {
        if (sorted.isEmpty()) return Double.NaN
        val mid = sorted.size / 2
        return if (sorted.size % 2 == 1) sorted[mid] else (sorted[mid - 1] + sorted[mid]) / 2
    }

    /** The smallest value with at least fraction [q] of the values at or below it (sorted input; NaN when empty). */
    fun percentile(sorted: DoubleArray, q: Double): Double {
        if (sorted.isEmpty()) return Double.NaN
        val rank = Math.ceil(q * sorted.size).toInt().coerceIn(1, sorted.size)
        return sorted[rank - 1]
    }
}
