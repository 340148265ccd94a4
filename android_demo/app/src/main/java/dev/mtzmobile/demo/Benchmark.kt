package dev.mtzmobile.demo

import android.os.Debug
import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.io.IOException
import java.util.Locale

/** This process's memory, in kB: PSS (Debug.getPss) and, from /proc/self/status, RSS and its parts. */
data class MemorySnapshot(val pssKb: Long, val rssKb: Long?, val rssAnonKb: Long?, val rssFileKb: Long?) {
    fun toJson(): JSONObject = JSONObject()
        .put("pss_kb", pssKb)
        .put("rss_kb", rssKb ?: JSONObject.NULL)
        .put("rss_anon_kb", rssAnonKb ?: JSONObject.NULL)
        .put("rss_file_kb", rssFileKb ?: JSONObject.NULL)

    companion object {
        fun now(): MemorySnapshot {
            val status = procStatus()
            // RssAnon: what the runtime allocated (arenas; packed weights only where no cache file maps them);
            // RssFile: pages of the model file and of its weight cache file.
            return MemorySnapshot(Debug.getPss(), status["VmRSS"], status["RssAnon"], status["RssFile"])
        }

        /** "Key:   123 kB" lines of /proc/self/status; RssAnon/RssFile need Linux 4.5 or newer. */
        private fun procStatus(): Map<String, Long> =
            try {
                File("/proc/self/status").readLines().mapNotNull { line ->
                    val parts = line.split(Regex("\\s+"))
                    val value = parts.getOrNull(1)?.toLongOrNull()
                    if (parts.size >= 3 && parts[0].endsWith(":") && value != null) parts[0].dropLast(1) to value else null
                }.toMap()
            } catch (e: IOException) {
                emptyMap()
            }
    }
}

data class BenchmarkResult(
    val model: String,
    val fileBytes: Long,
    val sharedWeightBytes: Long,
    val weightBytes: Long,
    val loadMillis: Double,
    val weightCacheFound: String,
    val timings: List<SignatureTiming>,
    val beforeLoad: MemorySnapshot,
    val afterLoad: MemorySnapshot,
    val afterRuns: MemorySnapshot,
) {
    fun toJson(): JSONObject = JSONObject()
        .put("model", model)
        .put("file_bytes", fileBytes)
        .put("weight_bytes", weightBytes)
        .put("shared_weight_bytes", sharedWeightBytes)
        .put("xnnpack_weight_cache", "file")
        .put("xnnpack_weight_cache_found", weightCacheFound)
        .put("load_ms", loadMillis)
        .put("signatures", JSONArray(timings.map {
            JSONObject().put("key", it.key).put("runs", it.runs).put("warmup", it.warmup)
                .put("first_us", it.firstMicros).put("median_us", it.medianMicros).put("p90_us", it.p90Micros)
        }))
        .put("memory", JSONObject().put("before_load", beforeLoad.toJson()).put("after_load", afterLoad.toJson())
            .put("after_runs", afterRuns.toJson()))

    fun toText(): String = buildString {
        appendLine("model: $model, ${"%,d".format(Locale.US, fileBytes)} bytes")
        appendLine("weights: ${"%,d".format(Locale.US, weightBytes)} bytes, of which " +
            "${"%,d".format(Locale.US, sharedWeightBytes)} used by two or more tasks (stored once)")
        appendLine("XNNPACK weight cache: a file beside the model, found $weightCacheFound (shared blocks packed once)")
        appendLine("load + compile: ${"%.1f".format(Locale.US, loadMillis)} ms")
        appendLine()
        appendLine(String.format(Locale.US, "%-10s %10s %10s %10s %6s", "signature", "first µs", "median µs", "p90 µs", "runs"))
        for (t in timings) {
            appendLine(String.format(Locale.US, "%-10s %10.1f %10.1f %10.1f %6d", t.key, t.firstMicros, t.medianMicros, t.p90Micros, t.runs))
        }
        appendLine()
        appendLine(String.format(Locale.US, "%-12s %9s %9s %9s %9s", "memory kB", "PSS", "RSS", "RssAnon", "RssFile"))
        for ((label, m) in listOf("before load" to beforeLoad, "after load" to afterLoad, "after runs" to afterRuns)) {
            appendLine(String.format(Locale.US, "%-12s %9d %9s %9s %9s", label, m.pssKb, m.rssKb ?: "-", m.rssAnonKb ?: "-", m.rssFileKb ?: "-"))
        }
    }
}

/**
 * Every task signature (and the joint one, when present) run [runs] times each on a freshly
 * compiled model: latency per call (preprocessing, input write, run, output read), the file
 * size, and this process's memory before loading, after loading, and after every signature ran.
 * In-process numbers: for a clean per-process measurement use `mtz-mobile bench` on the host.
 */
object Benchmark {
    fun run(file: ModelFile, samples: SampleSet?, runs: Int = 100, warmup: Int = 10): BenchmarkResult {
        System.gc()
        val beforeLoad = MemorySnapshot.now()
        val start = System.nanoTime()
        return ZippedModel.open(file).use { model ->
            val loadMillis = (System.nanoTime() - start) / 1e6
            val afterLoad = MemorySnapshot.now()
            val manifest = model.manifest
            val timings = ArrayList<SignatureTiming>()
            for (task in manifest.tasks) {
                val raw = samples?.forTask(task)?.firstOrNull()?.raw ?: FloatArray(task.input.elementCount)
                timings += time(task.signatureKey, runs, warmup) { model.run(task, raw) }
            }
            val joint = manifest.joint
            if (joint != null && model.jointPreprocessing != null) {
                val first = manifest.tasks.first()
                val raw = samples?.forTask(first)?.firstOrNull()?.raw ?: FloatArray(joint.input.elementCount)
                timings += time(joint.signatureKey, runs, warmup) { model.runJoint(raw) }
            }
            val afterRuns = MemorySnapshot.now()
            BenchmarkResult(
                model = file.description,
                fileBytes = file.sizeBytes,
                sharedWeightBytes = manifest.sharing.file.sharedWeightBytes,
                weightBytes = manifest.sharing.file.weightBytes,
                loadMillis = loadMillis,
                weightCacheFound = model.weightCacheFound,
                timings = timings,
                beforeLoad = beforeLoad,
                afterLoad = afterLoad,
                afterRuns = afterRuns,
            )
        }
    }

    private fun time(key: String, runs: Int, warmup: Int, call: () -> Unit): SignatureTiming {
        var t = System.nanoTime()
        call()
        val first = (System.nanoTime() - t) / 1e3
        repeat(warmup) { call() }
        val micros = DoubleArray(runs)
        for (i in 0 until runs) {
            t = System.nanoTime()
            call()
            micros[i] = (System.nanoTime() - t) / 1e3
        }
        return BenchmarkStats.summarize(key, warmup, first, micros)
    }
}
