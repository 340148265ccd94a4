package dev.mtzmobile.demo

import org.json.JSONObject
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/** Where the demo finds its model and samples (AndroidPlatform.kt's AppLocator on the phone). */
interface ModelLocator {
    fun locate(): ModelFile?

    fun samples(): SampleSet?

    fun noModelMessage(): String
}

/** What loading the model gave, handed from the worker to the UI. */
sealed class Loaded {
    class Ready(val manifest: Manifest, val samples: SampleSet?, val samplesMatch: Boolean, val summary: String) : Loaded()

    class Failed(val message: String) : Loaded()
}

/**
 * The demo's compiled model and the one thread every LiteRT call runs on. It outlives the activity
 * (MainActivity hands it to the next instance through onRetainNonConfigurationInstance), so a
 * fold, a resize, a density or dark-mode change neither compiles the model again nor starts a second
 * writer of its cache file; [release] closes it when the activity finishes for good.
 *
 * Every callback runs on the worker thread. Whatever a load, a run or a benchmark throws — an
 * Exception, UnsatisfiedLinkError when LiteRT's native library is missing for this ABI,
 * OutOfMemoryError — becomes a one-line message, never a dead worker.
 */
class ModelHost(
    private val locator: ModelLocator,
    private val factory: EngineFactory,
    /** LiteRT threads for the demo's own model (the big cores: CpuCores.big). */
    val threads: Int,
    private val memory: () -> MemorySnapshot,
    private val log: (String, Throwable) -> Unit = { _, _ -> },
    /** One JSON line per load (MainActivity logs it as MtzLoad: `mtz-mobile phone-check` reads it). */
    private val onLoad: (String) -> Unit = {},
    /** Timed runs per signature in [benchmark]. */
    private val benchmarkRuns: Int = 100,
) {
    private val worker: ExecutorService = Executors.newSingleThreadExecutor { r -> Thread(r, "mtz-litert").apply { isDaemon = true } }

    /** Worker thread only. */
    private var model: ZippedModel? = null

    /** The outcome of the last load (worker thread only): what a recreated activity shows without loading again. */
    private var loaded: Loaded? = null

    /** How many times this host compiled the demo's model (worker thread only; the benchmark's own models aside). */
    var compiles = 0
        private set

    /** (Re)loads the model: files/model.tflite if pushed, else the bundled asset. */
    fun load(done: (Loaded) -> Unit) = worker.execute { done(reload()) }

    /** The model already loaded (an activity recreated after a configuration change), else a load. */
    fun attach(done: (Loaded) -> Unit) = worker.execute { done(loaded ?: reload()) }

    private fun reload(): Loaded {
        val outcome = try {
            closeModel()
            val file = locator.locate()
            if (file == null) {
                Loaded.Failed(locator.noModelMessage())
            } else {
                compiles++
                val opened = ZippedModel.open(file, factory, threads)
                model = opened
                onLoad(loadLine(opened).toString())
                val sampleSet = try {
                    locator.samples()
                } catch (e: Exception) {
                    log("cannot read ${Contract.SAMPLES_ASSET}", e)
                    null
                }
                val match = sampleSet != null && sampleSet.modelSha256 == opened.modelSha256
                Loaded.Ready(opened.manifest, sampleSet, match, summary(opened, sampleSet, match))
            }
        } catch (t: Throwable) {
            fatal(t)
            log("loading the model failed", t)
            Loaded.Failed("The model could not be loaded: ${oneLine(t)}").also {
                onLoad(JSONObject().put("ok", false).put("compiles", compiles).put("error", it.message).toString())
            }
        }
        loaded = outcome
        return outcome
    }

    /** [call] on the loaded model, its result or the failure as one line; "no model" when none is loaded. */
    fun <T> withModel(what: String, done: (Result<T>) -> Unit, call: (ZippedModel) -> T) = worker.execute {
        val m = model
        done(
            if (m == null) {
                Result.failure(IllegalStateException("no model is loaded: tap Reload model"))
            } else {
                try {
                    Result.success(call(m))
                } catch (t: Throwable) {
                    fatal(t)
                    log("$what failed", t)
                    Result.failure(t)
                }
            },
        )
    }

    /**
     * Closes the demo's model, benchmarks fresh ones at 1 and [threads] threads, then opens the demo's
     * again — also when the benchmark failed, so that the tasks keep running. Gives the result's text
     * (or "Benchmark failed: …") and, when the reopen failed, the new load state.
     */
    fun benchmark(samples: SampleSet?, done: (text: String, json: String?, reloaded: Loaded?) -> Unit) = worker.execute {
        var text: String
        var json: String? = null
        try {
            closeModel()
            val file = locator.locate() ?: throw IllegalStateException(locator.noModelMessage())
            val result = Benchmark.run(file, samples, factory, listOf(1, threads), memory, runs = benchmarkRuns)
            json = result.toJson().toString()
            text = result.toText()
        } catch (t: Throwable) {
            fatal(t)
            log("benchmark failed", t)
            text = "Benchmark failed: ${oneLine(t)}"
        }
        val reloaded = if (model == null) reload() else null
        done(text, json, reloaded.takeIf { it is Loaded.Failed })
    }

    /** Closes the model and stops the worker: the activity finished for good. */
    fun release() {
        worker.execute { closeModel() }
        worker.shutdown()
    }

    private fun loadLine(m: ZippedModel): JSONObject = JSONObject()
        .put("ok", true).put("compiles", compiles).put("model_sha256", m.modelSha256)
        .put("xnnpack_weight_cache_found", m.weightCacheFound).put("threads", m.threads)
        .put("hash_ms", m.timings.hashMillis).put("compile_ms", m.timings.compileMillis)

    private fun closeModel() {
        val m = model ?: return
        model = null
        loaded = null
        try {
            m.close()
        } catch (e: Exception) {
            log("closing the model failed", e)
        }
    }

    companion object {
        /** Errors no app can go on after (a JVM/ART failure other than memory): rethrown. */
        fun fatal(t: Throwable) {
            if (t is VirtualMachineError && t !is OutOfMemoryError) throw t
        }

        /** A throwable as one printable line: its message's first line, else its class. */
        fun oneLine(t: Throwable): String {
            val message = t.message?.lineSequence()?.firstOrNull { it.isNotBlank() }?.trim()
            return if (message.isNullOrEmpty()) t.javaClass.simpleName else "$message (${t.javaClass.simpleName})"
        }

        fun summary(m: ZippedModel, sampleSet: SampleSet?, samplesMatch: Boolean): String {
            val mf = m.manifest
            val sharing = mf.sharing
            return buildString {
                appendLine("Model: ${m.file.description}, ${"%,d".format(Locale.US, m.file.sizeBytes)} bytes")
                appendLine("Made by mtz-mobile ${mf.toolVersion}, quantization ${mf.quantization}")
                appendLine("${mf.tasks.size} tasks in one file and one compiled model: ${mf.tasks.joinToString { it.name }}")
                appendLine(
                    "Weights: ${"%,d".format(Locale.US, sharing.file.weightBytes)} bytes, " +
                        "${"%,d".format(Locale.US, sharing.file.sharedWeightBytes)} of them shared by two or more tasks",
                )
                appendLine(
                    String.format(
                        Locale.US, "Parameters: %,d zipped vs %,d in the separate models (%.1f %% stored once for several tasks)",
                        sharing.zippedParams, sharing.separateParams, 100 * sharing.sharedFraction,
                    ),
                )
                appendLine(if (mf.joint != null) "Joint signature \"${mf.joint.signatureKey}\": yes" else "Joint signature: none")
                appendLine("XNNPACK weight cache: ${m.weightCacheFound}; ${m.threads} LiteRT thread(s)")
                append(
                    when {
                        sampleSet == null -> "No sample images: run mtz-mobile export-android and rebuild."
                        samplesMatch -> "${sampleSet.samples.size} sample images, exported with this model."
                        else -> "${sampleSet.samples.size} sample images, exported with another model (no host comparison)."
                    },
                )
            }
        }
    }
}
