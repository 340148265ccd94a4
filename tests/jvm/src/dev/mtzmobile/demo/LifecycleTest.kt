package dev.mtzmobile.demo

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Before
import org.junit.Test
import java.io.File
import java.io.IOException
import java.io.RandomAccessFile
import java.nio.file.Files
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger

/**
 * The app's lifecycle and failure paths (ZippedModel, ModelHost, Benchmark, WeightCache) on a real
 * converted model and a real XNNPACK cache file that LiteRT wrote on this machine. Only LiteRT's
 * compiled model is a double ([FakeLiteRt]), because LiteRT's Android runtime cannot run on the
 * JVM: it behaves as the XNNPACK weight cache does with the file (builds it when absent or
 * unreadable, keeps a valid one, rewrites a rejected one), and can be told to fail. The model file,
 * its manifest, preprocessing, hashing, the cache check, the stamp and its lock all run for real.
 */
class LifecycleTest {
    private val case = Plan.root.getJSONObject("lifecycle")
    private val realCache = File(case.getString("cache")).readBytes()
    private lateinit var dir: File
    private lateinit var liteRt: FakeLiteRt

    @Before
    fun setUp() {
        dir = Files.createTempDirectory(File(case.getString("scratch")).toPath(), "case").toFile()
        liteRt = FakeLiteRt(realCache)
    }

    private fun modelFile(key: String = "model"): ModelFile {
        val copy = File(dir, Contract.DEVICE_MODEL_NAME)
        File(case.getString(key)).copyTo(copy, overwrite = true)
        return ModelFile.open(ModelSource.Pushed(copy.path))
    }

    private fun locator(file: ModelFile?) = object : ModelLocator {
        override fun locate(): ModelFile? = file

        override fun samples(): SampleSet? = null

        override fun noModelMessage() = "no model"
    }

    private fun <T> await(what: String, start: ((T) -> Unit) -> Unit): T {
        val latch = CountDownLatch(1)
        var value: T? = null
        start { value = it; latch.countDown() }
        // A worker killed by an Error never calls back: that is the failure these tests look for.
        if (!latch.await(5, TimeUnit.SECONDS)) fail("$what: no answer in 5 s (the worker thread died?)")
        @Suppress("UNCHECKED_CAST")
        return value as T
    }

    private fun cacheOf(file: ModelFile) = WeightCache(File(file.path), "${ZippedModel.LITERT_VERSION}/${System.getProperty("os.arch")}")

    // --- 1: native and memory errors --------------------------------------------------------------

    @Test
    fun nativeAndMemoryErrorsBecomeCouldNotBeLoaded() {
        val host = ModelHost(locator(modelFile()), liteRt, 2, ::noMemory)
        try {
            for (error in listOf(UnsatisfiedLinkError("dlopen failed: library \"libLiteRt.so\" not found\nat line 2"),
                OutOfMemoryError("Failed to allocate a 268435472 byte allocation"))) {
                liteRt.failures += error
                val outcome = await<Loaded>("load with ${error.javaClass.simpleName}") { host.load(it) }
                assertTrue("${error.javaClass.simpleName}: $outcome", outcome is Loaded.Failed)
                val message = (outcome as Loaded.Failed).message
                assertTrue(message, message.startsWith("The model could not be loaded: ${error.message!!.lines()[0]}"))
                assertFalse("one line: $message", message.contains('\n'))
            }
            val again = await<Loaded>("load after the errors") { host.load(it) }
            assertTrue("the worker survives: $again", again is Loaded.Ready)
        } finally {
            host.release()
        }
    }

    // --- 2: leaks on failure ---------------------------------------------------------------------

    @Test
    fun aStampThatCannotBeWrittenClosesTheCompiledModel() {
        val file = modelFile()
        assertTrue(File(cacheOf(file).stamp.path + ".part").mkdirs())  // the stamp's temporary name is taken
        try {
            ZippedModel.open(file, liteRt, 1)
            fail("open succeeded with an unwritable stamp")
        } catch (e: IOException) {
            // expected: the stamp could not be written
        }
        assertEquals(1, liteRt.engines.size)
        assertTrue("the compiled model is closed", liteRt.engines.single().closed)
    }

    @Test
    fun aBufferThatCannotBeCreatedClosesTheOnesBeforeIt() {
        ZippedModel.open(modelFile(), liteRt, 1).use { model ->
            val task = model.manifest.tasks.first()
            liteRt.failOutput = task.output.name
            try {
                model.run(task, FloatArray(task.input.elementCount))
                fail("run succeeded without its output buffer")
            } catch (e: IllegalStateException) {
                assertEquals("no output buffer", e.message)
            }
            val tensors = liteRt.engines.single().tensors
            assertEquals("the input buffer was created", 1, tensors.size)
            assertTrue("the input buffer is closed", tensors.all { it.closed })
            liteRt.failOutput = null
            assertEquals(task.output.elementCount, model.run(task, FloatArray(task.input.elementCount)).size)
        }
        assertTrue("every buffer is closed with the model", liteRt.engines.single().tensors.all { it.closed })
    }

    // --- 3: a failed benchmark -------------------------------------------------------------------

    @Test
    fun aFailedBenchmarkKeepsTheTasksRunning() {
        val host = ModelHost(locator(modelFile()), liteRt, 2, ::noMemory, benchmarkRuns = 2)
        try {
            val ready = await<Loaded>("load") { host.load(it) } as Loaded.Ready
            liteRt.failures += IllegalStateException("Failed to compile the model")
            val text = await<String>("benchmark") { done -> host.benchmark(null) { t, _, _ -> done(t) } }
            assertEquals("Benchmark failed: Failed to compile the model (IllegalStateException)", text)
            val task = ready.manifest.tasks.last()
            val out = await<Result<FloatArray>>("a task after the failed benchmark") { done ->
                host.withModel("task", done) { it.run(task, FloatArray(task.input.elementCount)) }
            }
            assertTrue("a task runs after a failed benchmark: ${out.exceptionOrNull()}", out.isSuccess)
        } finally {
            host.release()
        }
    }

    // --- 4 and 7: load time apart from hashing, 1 and N threads -----------------------------------

    @Test
    fun theBenchmarkReportsHashingCompileAndFirstInferenceApart() {
        val file = modelFile("large_model")  // a model with 8 MB of padding: hashing it takes measurable time
        liteRt.compileMillis = 30
        val result = Benchmark.run(file, null, liteRt, listOf(1, 4), ::noMemory, runs = 3, warmup = 1)
        assertEquals(listOf(1, 4), liteRt.threads)
        assertEquals(listOf(1, 4), result.runs.map { it.threads })
        for (run in result.runs) {
            val t = run.timings
            // compile: the double's 30 ms sleep, nothing else; hashing: 8 MB, not counted in the compile
            assertTrue("compile ${t.compileMillis} ms for a 30 ms compile", t.compileMillis >= 30 && t.compileMillis < 30 + t.hashMillis)
            assertTrue("hashing ${t.hashMillis} ms", t.hashMillis > 0)
            assertTrue(run.firstInferenceMicros > 0)
            val json = run.toJson()
            for (key in listOf("hash_ms", "compile_ms", "first_inference_us")) assertTrue(key, json.has(key))
        }
        assertEquals("a warm second pass", "valid", result.runs[1].weightCacheFound)
    }

    @Test
    fun bigCoresAreReadFromSysfs() {
        fun cpus(vararg freqs: Long): File {
            val root = Files.createTempDirectory(dir.toPath(), "cpu").toFile()
            freqs.forEachIndexed { i, f ->
                File(root, "cpu$i/cpufreq").mkdirs()
                File(root, "cpu$i/cpufreq/cpuinfo_max_freq").writeText("$f\n")
            }
            File(root, "cpufreq").mkdirs()  // not a core
            return root
        }
        assertEquals(4, CpuCores.big(cpus(1800000, 1800000, 1800000, 1800000, 2400000, 2400000, 2400000, 3000000), 8))
        assertEquals(8, CpuCores.big(cpus(*LongArray(8) { 2000000 }), 3))
        assertEquals(3, CpuCores.big(cpus(), 3))
        val partial = cpus(1800000, 3000000)
        File(partial, "cpu2").mkdirs()  // an offline core: no cpufreq
        assertEquals(6, CpuCores.big(partial, 6))
    }

    // --- 5: cache states --------------------------------------------------------------------------

    @Test
    fun aCacheXnnpackRewritesIsStampedAgain() {
        val file = modelFile()
        val current = liteRt.version
        liteRt.version = current - 1  // the cache is built and stamped under another XNNPACK cache format…
        ZippedModel.open(file, liteRt, 1).use { assertEquals("absent", it.weightCacheFound) }
        liteRt.version = current      // …which this XNNPACK rejects: it rebuilds the file the app stamped
        ZippedModel.open(file, liteRt, 1).use { assertEquals(WeightCache.REWRITTEN, it.weightCacheFound) }
        ZippedModel.open(file, liteRt, 1).use { assertEquals("valid", it.weightCacheFound) }
        assertEquals("builds: the first start and the rejection only", 2, liteRt.builds.get())
    }

    @Test
    fun aCacheXnnpackMarksStaleAtCloseIsNamedSoAndRebuilt() {
        val file = modelFile()
        ZippedModel.open(file, liteRt, 1).close()
        liteRt.staleAtClose = true  // a run missed weights in the loaded cache: XNNPACK flags the file at close
        ZippedModel.open(file, liteRt, 1).use { assertEquals("valid", it.weightCacheFound) }
        liteRt.staleAtClose = false
        ZippedModel.open(file, liteRt, 1).use { assertEquals(WeightCache.STALE, it.weightCacheFound) }
        ZippedModel.open(file, liteRt, 1).use { assertEquals("valid", it.weightCacheFound) }
        assertEquals("builds: the first start and after the stale flag", 2, liteRt.builds.get())
    }

    // --- 6: one compile per activity life, one writer of the cache file ---------------------------

    @Test
    fun oneWriterOfTheCacheFileAtATime() {
        val file = modelFile()
        liteRt.compileMillis = 200
        val errors = ConcurrentHashMap.newKeySet<Throwable>()
        val threads = List(2) { Thread { try { ZippedModel.open(file, liteRt, 1).close() } catch (t: Throwable) { errors += t } } }
        threads.forEach(Thread::start)
        threads.forEach { it.join(10_000) }
        assertTrue("$errors", errors.isEmpty())
        assertEquals("compiles of one cache file at the same time", 1, liteRt.maxConcurrent.get())
        assertEquals("the second open found the first one's cache", 1, liteRt.builds.get())
    }

    @Test
    fun aRecreatedActivityReusesTheCompiledModel() {
        val host = ModelHost(locator(modelFile()), liteRt, 2, ::noMemory)
        try {
            val first = await<Loaded>("first activity") { host.attach(it) }
            val second = await<Loaded>("recreated activity") { host.attach(it) }
            assertTrue(first is Loaded.Ready && second === first)
            for (task in (first as Loaded.Ready).manifest.tasks + first.manifest.tasks) {  // task switches
                val out = await<Result<FloatArray>>("task ${task.name}") { done ->
                    host.withModel("task", done) { it.run(task, FloatArray(task.input.elementCount)) }
                }
                assertEquals(task.output.elementCount, out.getOrThrow().size)
            }
            assertEquals(1, host.compiles)
            assertEquals(1, liteRt.engines.size)
        } finally {
            host.release()
        }
    }

    companion object {
        fun noMemory() = MemorySnapshot(0, null, null, null)
    }
}

/**
 * LiteRT's CompiledModel as the tests need it: compiles, counting and timing; the weight cache
 * file handled as XNNPACK does (absent, or a header version other than its own: built from
 * [realCache], the bytes LiteRT wrote on this machine, with [version] in the header; its own: used
 * as it is); and told to fail.
 */
class FakeLiteRt(private val realCache: ByteArray) : EngineFactory {
    val engines = ArrayList<FakeEngine>()
    val threads = ArrayList<Int>()
    val failures = ArrayDeque<Throwable>()
    val builds = AtomicInteger()
    val maxConcurrent = AtomicInteger()
    private val concurrent = AtomicInteger()

    @Volatile var failOutput: String? = null
    @Volatile var compileMillis = 0L
    /** The cache header version this "XNNPACK" writes and accepts: the real file's by default. */
    @Volatile var version: Long = headerVersion(realCache)
    @Volatile var staleAtClose = false

    override fun compile(modelPath: String, cachePath: String, threads: Int): Engine {
        synchronized(this) { failures.removeFirstOrNull() }?.let { throw it }
        val now = concurrent.incrementAndGet()
        maxConcurrent.accumulateAndGet(now, ::maxOf)
        try {
            Thread.sleep(compileMillis)
            val cache = File(cachePath)
            if (!cache.isFile || WeightCache.headerVersion(cache) != version || WeightCache.xnnpackMark(cache) != null) {
                val bytes = realCache.copyOf()
                for (i in 0 until 8) bytes[i] = (version ushr (8 * i)).toByte()  // little-endian uint64
                cache.writeBytes(bytes)
                builds.incrementAndGet()
            }
            // The output sizes LiteRT reads from the model: here from its manifest, read for real.
            val manifest = ManifestParser.readEmbedded(Plan.map(modelPath), modelPath)
            val sizes = manifest.tasks.associate { "${it.signatureKey}/${it.output.name}" to it.output.elementCount } +
                (manifest.joint?.outputs?.associate { o -> "${manifest.joint!!.signatureKey}/${o.name}" to o.shape.fold(1) { n, d -> n * d } } ?: emptyMap())
            return synchronized(this) {
                this.threads += threads
                FakeEngine(this, cache, sizes).also { engines += it }
            }
        } finally {
            concurrent.decrementAndGet()
        }
    }
}

private fun headerVersion(bytes: ByteArray): Long =
    java.nio.ByteBuffer.wrap(bytes, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).long

class FakeTensor(size: Int) : Tensor {
    var closed = false
    var data = FloatArray(size)

    override fun writeFloat(data: FloatArray) {
        check(!closed) { "closed" }
        this.data = data.copyOf()
    }

    override fun readFloat(): FloatArray = data.copyOf()

    override fun close() {
        closed = true
    }
}

class FakeEngine(private val factory: FakeLiteRt, private val cache: File, private val sizes: Map<String, Int>) : Engine {
    var closed = false
    val tensors = ArrayList<FakeTensor>()

    override fun createInputBuffer(name: String, signature: String): Tensor = FakeTensor(0).also { tensors += it }

    override fun createOutputBuffer(name: String, signature: String): Tensor {
        if (name == factory.failOutput) throw IllegalStateException("no output buffer")
        return FakeTensor(sizes.getValue("$signature/$name")).also { tensors += it }
    }

    /** Each output: the input's mean in every value. */
    override fun run(inputs: Map<String, Tensor>, outputs: Map<String, Tensor>, signature: String) {
        check(!closed) { "closed" }
        val x = (inputs.values.single() as FakeTensor).data
        for (out in outputs.values) (out as FakeTensor).data.fill(x.sum() / maxOf(x.size, 1))
    }

    override fun close() {
        // XNNPACK's MMapWeightCacheProvider destructor after cache misses: stale = 1 at its header offset
        if (factory.staleAtClose) RandomAccessFile(cache, "rw").use { it.seek(24); it.write(1) }
        closed = true
    }
}
