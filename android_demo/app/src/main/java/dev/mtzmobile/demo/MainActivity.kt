package dev.mtzmobile.demo

import android.app.Activity
import android.graphics.Bitmap
import android.graphics.Color
import android.os.Bundle
import android.util.Log
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.ImageView
import android.widget.Spinner
import android.widget.TextView
import java.io.File
import java.util.Locale
import kotlin.math.abs

/**
 * One zipped model serving several tasks. The task list, labels and preprocessing come from the
 * manifest embedded in the model; picking a task runs that task's signature of the one
 * CompiledModel on the bundled sample images.
 */
class MainActivity : Activity() {
    /**
     * The compiled model and the worker thread every LiteRT call runs on. Retained across
     * configuration changes (onRetainNonConfigurationInstance): a recreated activity shows the model
     * already loaded instead of compiling it again; released when the activity finishes.
     */
    private lateinit var host: ModelHost

    // State of the UI thread.
    private var manifest: Manifest? = null
    private var samples: SampleSet? = null
    private var samplesMatchModel = false
    private var taskIndex = 0
    private var sampleIndex = 0

    private lateinit var statusView: TextView
    private lateinit var taskSpinner: Spinner
    private lateinit var sampleImage: ImageView
    private lateinit var resultView: TextView
    private lateinit var benchmarkView: TextView
    private lateinit var nextButton: Button
    private lateinit var jointButton: Button
    private lateinit var benchmarkButton: Button
    private lateinit var reloadButton: Button

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        statusView = findViewById(R.id.status)
        taskSpinner = findViewById(R.id.task_spinner)
        sampleImage = findViewById(R.id.sample_image)
        resultView = findViewById(R.id.result)
        benchmarkView = findViewById(R.id.benchmark_result)
        nextButton = findViewById(R.id.next_sample)
        jointButton = findViewById(R.id.run_joint)
        benchmarkButton = findViewById(R.id.benchmark)
        reloadButton = findViewById(R.id.reload)

        taskSpinner.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                if (position != taskIndex) {
                    taskIndex = position
                    sampleIndex = 0
                    classify()
                }
            }

            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }
        nextButton.setOnClickListener {
            sampleIndex++
            classify()
        }
        jointButton.setOnClickListener { runJoint() }
        benchmarkButton.setOnClickListener { benchmark() }
        reloadButton.setOnClickListener { load() }

        @Suppress("DEPRECATION")  // the framework Activity's retain API: no androidx dependency for one object
        val retained = lastNonConfigurationInstance as? ModelHost
        host = retained ?: newHost(this)
        setBusy(true)
        statusView.text = getString(R.string.loading)
        host.attach { outcome -> runOnUiThread { show(outcome) } }
    }

    @Deprecated("the framework Activity's retain API")
    override fun onRetainNonConfigurationInstance(): Any = host

    override fun onDestroy() {
        super.onDestroy()
        if (!isChangingConfigurations) host.release()
    }

    /** (Re)loads the model: files/model.tflite if pushed, else the bundled asset. */
    private fun load() {
        setBusy(true)
        statusView.text = getString(R.string.loading)
        resultView.text = ""
        host.load { outcome -> runOnUiThread { show(outcome) } }
    }

    private fun show(outcome: Loaded) {
        if (isDestroyed) return
        when (outcome) {
            is Loaded.Failed -> {
                manifest = null
                samples = null
                statusView.text = outcome.message
                taskSpinner.adapter = null
                sampleImage.setImageDrawable(null)
                setBusy(false)
                for (b in listOf(nextButton, jointButton, benchmarkButton)) b.isEnabled = false
            }
            is Loaded.Ready -> {
                manifest = outcome.manifest
                samples = outcome.samples
                samplesMatchModel = outcome.samplesMatch
                statusView.text = outcome.summary
                taskIndex = 0
                sampleIndex = 0
                val names = outcome.manifest.tasks.map { "${it.name}  (${it.labels.size} classes)" }
                taskSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_item, names).also {
                    it.setDropDownViewResource(android.R.layout.simple_spinner_dropdown_item)
                }
                setBusy(false)
                jointButton.isEnabled = outcome.manifest.joint != null
                classify()
            }
        }
    }

    private fun setBusy(busy: Boolean) {
        for (b in listOf(nextButton, jointButton, benchmarkButton, reloadButton)) b.isEnabled = !busy
        taskSpinner.isEnabled = !busy
    }

    /** The current task's signature on the current sample (a blank input when there are no samples). */
    private fun classify() {
        val task = manifest?.tasks?.getOrNull(taskIndex) ?: return
        val list = samples?.forTask(task).orEmpty()
        val sample = if (list.isEmpty()) null else list[sampleIndex.mod(list.size)]
        val position = if (list.isEmpty()) "" else "sample ${sampleIndex.mod(list.size) + 1} of ${list.size}: "
        sampleImage.setImageBitmap(sample?.let { preview(it) })
        val checkHost = samplesMatchModel
        val raw = sample?.raw ?: FloatArray(task.input.elementCount)
        host.withModel("task ${task.name}", { result: Result<Pair<FloatArray, Double>> ->
            val text = result.fold(
                { (out, micros) -> describe(task, position, sample, out, micros, checkHost) },
                { "Task ${task.name} failed: ${ModelHost.oneLine(it)}" },
            )
            runOnUiThread { if (!isDestroyed) resultView.text = text }
        }) { m ->
            val start = System.nanoTime()
            val out = m.run(task, raw)
            out to (System.nanoTime() - start) / 1e3
        }
    }

    /** The joint signature: every task's answer in one call that computes the shared layers once. */
    private fun runJoint() {
        val manifest = manifest ?: return
        val joint = manifest.joint ?: return
        val task = manifest.tasks.getOrNull(taskIndex) ?: return
        val list = samples?.forTask(task).orEmpty()
        val sample = if (list.isEmpty()) null else list[sampleIndex.mod(list.size)]
        val raw = sample?.raw ?: FloatArray(joint.input.elementCount)
        host.withModel("the joint signature", { result: Result<Pair<Map<String, FloatArray>, Double>> ->
            val text = result.fold({ (outputs, micros) ->
                buildString {
                    appendLine("Signature \"${joint.signatureKey}\": every task in one call")
                    for (t in manifest.tasks) {
                        val out = outputs[t.name] ?: continue
                        val best = topK(out, 1).firstOrNull() ?: continue
                        val truth = sample?.truth?.get(t.name)?.let { "   (true: $it)" } ?: ""
                        appendLine("  ${t.name}: ${label(t, best)} ${score(t, out[best])}$truth")
                    }
                    append(String.format(Locale.US, "Latency: %.1f µs for all %d tasks", micros, manifest.tasks.size))
                }
            }, { "The joint signature failed: ${ModelHost.oneLine(it)}" })
            runOnUiThread { if (!isDestroyed) resultView.text = text }
        }) { m ->
            val start = System.nanoTime()
            val outputs = m.runJoint(raw)
            outputs to (System.nanoTime() - start) / 1e3
        }
    }

    /** Benchmarks fresh models at 1 and N threads; the demo's model is reopened afterwards, also after a failure. */
    private fun benchmark() {
        setBusy(true)
        benchmarkView.text = getString(R.string.benchmark_running)
        host.benchmark(samples) { text, json, reloaded ->
            // One JSON line per run: `adb logcat -s MtzBench` collects them on the host.
            if (json != null) Log.i(BENCH_TAG, json)
            runOnUiThread {
                if (!isDestroyed) {
                    benchmarkView.text = text
                    if (reloaded != null) {
                        show(reloaded)
                    } else {
                        setBusy(false)
                        jointButton.isEnabled = manifest?.joint != null
                    }
                }
            }
        }
    }

    private fun describe(task: TaskSpec, position: String, sample: Sample?, out: FloatArray, micros: Double, checkHost: Boolean): String =
        buildString {
            appendLine("Task ${task.name}: signature \"${task.signatureKey}\"")
            if (sample == null) {
                appendLine("No sample for this task: ran on a blank input.")
            } else {
                appendLine("${position}${sample.source} #${sample.index}, true label: ${sample.truth[task.name]}")
            }
            for ((rank, i) in topK(out, 3).withIndex()) {
                appendLine(String.format(Locale.US, "  %d. %-14s %s", rank + 1, label(task, i), score(task, out[i])))
            }
            appendLine(String.format(Locale.US, "Latency: %.1f µs (preprocess, run, read)", micros))
            val host = sample?.expected?.get(task.name)
            if (checkHost && host != null && host.size == out.size) {
                val diff = out.indices.maxOfOrNull { abs(out[it] - host[it]) } ?: 0f
                val agree = topK(host, 1) == topK(out, 1)
                append(
                    String.format(
                        Locale.US, "Host LiteRT top-1: %s, %s (max |difference| %.2g)",
                        label(task, topK(host, 1).first()), if (agree) "same here" else "DIFFERENT here", diff,
                    ),
                )
            }
        }

    /** A grey (HW, HWC with one channel) or RGB (HWC with three) picture of [sample], enlarged. */
    private fun preview(sample: Sample): Bitmap? {
        val dims = sample.shape
        val (h, w, c) = when {
            dims.size == 2 -> Triple(dims[0], dims[1], 1)
            dims.size == 3 && (dims[2] == 1 || dims[2] == 3) -> Triple(dims[0], dims[1], dims[2])
            else -> return null
        }
        if (h <= 0 || w <= 0 || h * w * c != sample.raw.size) return null
        val lo = sample.raw.minOrNull() ?: return null
        val hi = sample.raw.maxOrNull() ?: return null
        val span = if (hi > lo) hi - lo else 1f
        fun level(v: Float): Int = ((v - lo) / span * 255f).toInt().coerceIn(0, 255)
        val colors = IntArray(h * w) { p ->
            if (c == 1) {
                val g = level(sample.raw[p])
                Color.rgb(g, g, g)
            } else {
                Color.rgb(level(sample.raw[3 * p]), level(sample.raw[3 * p + 1]), level(sample.raw[3 * p + 2]))
            }
        }
        val bitmap = Bitmap.createBitmap(colors, w, h, Bitmap.Config.ARGB_8888)
        val factor = (224 / maxOf(w, h)).coerceAtLeast(1)
        return Bitmap.createScaledBitmap(bitmap, w * factor, h * factor, false)
    }

    companion object {
        private const val TAG = "MtzDemo"
        private const val BENCH_TAG = "MtzBench"

        /** The demo's host: LiteRT on the big cores, logging each load to `adb logcat -s MtzLoad` for phone-check. */
        fun newHost(activity: Activity): ModelHost {
            val threads = CpuCores.big(File("/sys/devices/system/cpu"), Runtime.getRuntime().availableProcessors())
            return ModelHost(AppLocator(activity), LiteRtEngine.FACTORY, threads, ::androidMemory, { what, t -> Log.e(TAG, what, t) },
                onLoad = { line -> Log.i(LOAD_TAG, line) })
        }

        private const val LOAD_TAG = "MtzLoad"

        fun topK(values: FloatArray, k: Int): List<Int> = values.indices.sortedByDescending { values[it] }.take(k)

        fun label(task: TaskSpec, index: Int): String = task.labels.getOrElse(index) { "class $it" }

        /** A probability as a percentage for softmax outputs, else the raw score. */
        fun score(task: TaskSpec, value: Float): String =
            if (task.output.activation == "softmax") {
                String.format(Locale.US, "%5.1f %%", 100 * value)
            } else {
                String.format(Locale.US, "score %.3f", value)
            }
    }
}
