package dev.mtzmobile.demo

import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.io.IOException
import java.util.Locale

/** A process's memory, in kB: PSS and, from /proc/PID/status, RSS and its parts (AndroidPlatform.kt's androidMemory). */
data class MemorySnapshot(val pssKb: Long, val rssKb: Long?, val rssAnonKb: Long?, val rssFileKb: Long?) {
    fun toJson(): JSONObject = JSONObject()
        .put("pss_kb", pssKb)
        .put("rss_kb", rssKb ?: JSONObject.NULL)
        .put("rss_anon_kb", rssAnonKb ?: JSONObject.NULL)
        .put("rss_file_kb", rssFileKb ?: JSONObject.NULL)

    companion object {
        // RssAnon: what the runtime allocated (arenas; packed weights only where no cache file maps them);
        // RssFile: pages of the model file and of its weight cache file. Linux 4.5 or newer.
        fun fromStatus(pssKb: Long, status: File): MemorySnapshot {
            val values = try {
                status.readLines().mapNotNull { line ->
                    val parts = line.split(Regex("\\s+"))
                    val value = parts.getOrNull(1)?.toLongOrNull()
                    if (parts.size >= 3 && parts[0].endsWith(":") && value != null) parts[0].dropLast(1) to value else null
                }.toMap()
            } catch (e: IOException) {
                emptyMap()
            }
            return MemorySnapshot(pssKb, values["VmRSS"], values["RssAnon"], values["RssFile"])
        }
    }
}

/** One benchmark pass at [threads] LiteRT threads on a freshly opened model. */
data class ThreadRun(
    val threads: Int,
    val timings: LoadTimings,
    val weightCacheFound: String,
    /** The first call of the first signature: what a user waits for after the load. */
    val firstInferenceMicros: Double,
    val signatures: List<SignatureTiming>,
    val beforeLoad: MemorySnapshot,
    val afterLoad: MemorySnapshot,
    val afterRuns: MemorySnapshot,
) {
    fun toJson(): JSONObject = JSONObject()
        .put("threads", threads)
        .put("hash_ms", timings.hashMillis)
        .put("compile_ms", timings.compileMillis)
        .put("first_inference_us", firstInferenceMicros)
        .put("xnnpack_weight_cache_found", weightCacheFound)
        .put("signatures", JSONArray(signatures.map {
            JSONObject().put("key", it.key).put("runs", it.runs).put("warmup", it.warmup)
                .put("first_us", it.firstMicros).put("median_us", it.medianMicros).put("p90_us", it.p90Micros)
        }))
        .put("memory", JSONObject().put("before_load", beforeLoad.toJson()).put("after_load", afterLoad.toJson())
            .put("after_runs", afterRuns.toJson()))
}

data class BenchmarkResult(
    val model: String,
    val fileBytes: Long,
    val sharedWeightBytes: Long,
    val weightBytes: Long,
    val runs: List<ThreadRun>,
) {
    fun toJson(): JSONObject = JSONObject()
        .put("model", model)
        .put("file_bytes", fileBytes)
        .put("weight_bytes", weightBytes)
        .put("shared_weight_bytes", sharedWeightBytes)
        .put("xnnpack_weight_cache", "file")
        .put("runs", JSONArray(runs.map { it.toJson() }))

    fun toText(): String = buildString {
        appendLine("model: $model, ${"%,d".format(Locale.US, fileBytes)} bytes")
        appendLine("weights: ${"%,d".format(Locale.US, weightBytes)} bytes, of which " +
            "${"%,d".format(Locale.US, sharedWeightBytes)} used by two or more tasks (stored once)")
        for (r in runs) {
            appendLine()
            appendLine("${r.threads} thread(s); XNNPACK weight cache file found ${r.weightCacheFound}")
            appendLine(String.format(Locale.US, "hashing %.1f ms, compile %.1f ms, first inference %.1f µs",
                r.timings.hashMillis, r.timings.compileMillis, r.firstInferenceMicros))
            appendLine(String.format(Locale.US, "%-10s %10s %10s %10s %6s", "signature", "first µs", "median µs", "p90 µs", "runs"))
            for (t in r.signatures) {
                appendLine(String.format(Locale.US, "%-10s %10.1f %10.1f %10.1f %6d", t.key, t.firstMicros, t.medianMicros, t.p90Micros, t.runs))
            }
            appendLine(String.format(Locale.US, "%-12s %9s %9s %9s %9s", "memory kB", "PSS", "RSS", "RssAnon", "RssFile"))
            for ((label, m) in listOf("before load" to r.beforeLoad, "after load" to r.afterLoad, "after runs" to r.afterRuns)) {
                appendLine(String.format(Locale.US, "%-12s %9d %9s %9s %9s", label, m.pssKb, m.rssKb ?: "-", m.rssAnonKb ?: "-", m.rssFileKb ?: "-"))
            }
        }
    }
}

/**
 * Every task signature (and the joint one, when present) run [runs] times each on a freshly
 * compiled model, once per thread count in [threadCounts] (1 and the big cores, as the host bench's
 * --threads): hashing, compile and first inference apart, latency per call (preprocessing, input
 * write, run, output read), and this process's memory before loading, after loading and after the
 * runs. In-process numbers: for a clean per-process measurement use `mtz-mobile bench` on the host.
 */
object Benchmark {
    fun run(
        file: ModelFile, samples: SampleSet?, factory: EngineFactory, threadCounts: List<Int>,
        memory: () -> MemorySnapshot, runs: Int = 100, warmup: Int = 10,
    ): BenchmarkResult {
        val passes = threadCounts.distinct().map { pass(file, samples, factory, it, memory, runs, warmup) }
        val sharing = ZippedModel.readManifest(file).sharing.file
        return BenchmarkResult(file.description, file.sizeBytes, sharing.sharedWeightBytes, sharing.weightBytes, passes)
    }

    private fun pass(
        file: ModelFile, samples: SampleSet?, factory: EngineFactory, threads: Int,
        memory: () -> MemorySnapshot, runs: Int, warmup: Int,
    ): ThreadRun {
        System.gc()
        val beforeLoad = memory()
        return ZippedModel.open(file, factory, threads).use { model ->
            val afterLoad = memory()
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
            ThreadRun(threads, model.timings, model.weightCacheFound, timings.firstOrNull()?.firstMicros ?: Double.NaN,
                timings, beforeLoad, afterLoad, memory())
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

/** How many LiteRT threads a real app would use: the big cores. */
object CpuCores {
    /**
     * The cores whose top frequency is above the slowest cluster's (the big and prime cores of a
     * big.LITTLE phone), read from [cpuDir] (/sys/devices/system/cpu); every core when they are all
     * alike, and [fallback] when the frequencies cannot be read.
     */
    fun big(cpuDir: File, fallback: Int): Int {
        val cores = (cpuDir.listFiles() ?: emptyArray()).filter { it.name.matches(Regex("cpu\\d+")) }
        val freqs = cores.mapNotNull { maxFreq(File(it, "cpufreq/cpuinfo_max_freq")) }
        // no core, or one unreadable (offline, or hidden by policy): no basis to tell big from little
        if (freqs.isEmpty() || freqs.size != cores.size) return fallback.coerceAtLeast(1)
        val slowest = freqs.min()
        val big = freqs.count { it > slowest }
        return if (big == 0) freqs.size else big
    }

    // A vendor's SELinux policy may forbid reading it: an IOException, not a crash at start.
    private fun maxFreq(file: File): Long? = try {
        if (file.isFile) file.readText().trim().toLongOrNull() else null
    } catch (e: IOException) {
        null
    }
}
