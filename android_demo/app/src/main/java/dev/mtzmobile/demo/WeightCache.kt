package dev.mtzmobile.demo

import org.json.JSONException
import org.json.JSONObject
import java.io.File
import java.io.FileInputStream
import java.io.RandomAccessFile
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.security.MessageDigest
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.locks.ReentrantLock
import kotlin.concurrent.withLock

/**
 * XNNPACK's packed weights in a file beside the model ([cache], MODEL.xnnpack_cache) and the stamp
 * that ties the file to the model ([stamp], MODEL.xnnpack_cache.json: the model's sha256, the
 * runtime, the cache's size and sha256) — the files and fields of the host bench's cache
 * (mtz_mobile/bench/weight_cache.py). With the cache in a file, a warm start maps the packed
 * weights (file-backed pages the system can drop) instead of packing them again into memory.
 *
 * LiteRT keys the packed buffers by their place in the model, not by their bytes: a cache built for
 * other weights at the same places is served as it is, and damaged packed bytes give NaNs. So the
 * cache is checked against its stamp before the model is compiled, deleted when it does not match
 * (the compile then rebuilds it), and stamped after a compile that built it. [runtime] names the
 * LiteRT version and the CPU architecture: packed weights are only valid where they were packed.
 */
class WeightCache(model: File, private val runtime: String) {
    val cache = File(model.path + Contract.XNNPACK_CACHE_SUFFIX)
    val stamp = File(cache.path + Contract.XNNPACK_STAMP_SUFFIX)

    /**
     * "absent", "valid", or why the cache was deleted so that the next compile rebuilds it: "no
     * stamp", "stamp unreadable", "model changed", "LiteRT changed", XNNPACK's own marks in the
     * file's header ([STALE], [UNFINISHED]), "size changed (truncated?)", "contents changed (corrupted?)".
     */
    fun check(modelSha256: String): String {
        if (!cache.exists()) {
            stamp.delete()
            return "absent"
        }
        val reason = staleReason(modelSha256) ?: return "valid"
        cache.delete()
        stamp.delete()
        return reason
    }

    private fun staleReason(modelSha256: String): String? {
        if (!stamp.exists()) return "no stamp"
        val recorded = try {
            JSONObject(stamp.readText())
        } catch (e: JSONException) {
            return "stamp unreadable"
        }
        return when {
            recorded.optString("model_sha256") != modelSha256 -> "model changed"
            recorded.optString("litert") != runtime -> "LiteRT changed"
            // XNNPACK's own marks, not damage: the stale flag it sets when it closes a loaded cache
            // that lacked weights it needed, and the invalid header a build writes until it finishes.
            xnnpackMark(cache) != null -> xnnpackMark(cache)
            recorded.optLong("cache_bytes", -1) != cache.length() -> "size changed (truncated?)"
            recorded.optString("cache_sha256") != fileSha256(cache) -> "contents changed (corrupted?)"
            else -> null
        }
    }

    /** Record the cache a compile just wrote; written to a temporary name and renamed. */
    fun writeStamp(modelSha256: String) {
        val record = JSONObject()
            .put("model_sha256", modelSha256)
            .put("litert", runtime)
            .put("cache_bytes", cache.length())
            .put("cache_sha256", fileSha256(cache))
        val part = File(stamp.path + ".part")
        part.writeText(record.toString(1) + "\n")
        if (!part.renameTo(stamp)) throw java.io.IOException("cannot rename $part to $stamp")
    }

    /** What identifies the cache file's version on disk (null: no file): to see whether LiteRT rewrote it. */
    fun fingerprint(): Fingerprint? {
        if (!cache.isFile) return null
        val header = ByteArray(XNNPACK_HEADER_BYTES)
        val n = RandomAccessFile(cache, "r").use { it.read(header) }
        return Fingerprint(cache.length(), cache.lastModified(), header.copyOf(maxOf(n, 0)).toList())
    }

    data class Fingerprint(val bytes: Long, val modifiedMillis: Long, val header: List<Byte>)

    /**
     * After a compile that saw the cache [found] with [before]'s fingerprint: stamps a cache the
     * compile built, and one XNNPACK rebuilt because it rejected the stamped file (another XNNPACK
     * build, say): unstamped, it would be deleted and rebuilt on every start. Returns what to report.
     */
    fun afterCompile(found: String, before: Fingerprint?, modelSha256: String): String {
        val now = fingerprint() ?: return if (found == "valid") "$found; XNNPACK removed it" else "$found; XNNPACK wrote no cache file"
        xnnpackMark(cache)?.let { return "$found; XNNPACK left it $it" }
        if (found == "valid" && now == before) return found
        writeStamp(modelSha256)
        return if (found == "valid") REWRITTEN else found
    }

    /**
     * When the model is closed: XNNPACK may have written to the file since [stamped]. A file it
     * marked (stale: weights were missing from it; unfinished) is left for the next check, which
     * names the mark instead of "corrupted" and rebuilds it; any other change is stamped again.
     */
    fun afterClose(stamped: Fingerprint?, modelSha256: String) {
        val now = fingerprint() ?: return
        if (now == stamped || xnnpackMark(cache) != null) return
        writeStamp(modelSha256)
    }

    /**
     * Holds this cache file for [block]: one writer of the file at a time, whether the other is a
     * thread of this process (a recreated activity's load) or another process (the instrumented test).
     */
    fun <T> locked(block: () -> T): T {
        val key = cache.absoluteFile.normalize().path
        return LOCKS.computeIfAbsent(key) { ReentrantLock() }.withLock {
            // java.io, not java.nio.file: minSdk 24 has no java.nio.file
            RandomAccessFile(File("$key.lock"), "rw").use { file -> file.channel.lock().use { block() } }
        }
    }

    companion object {
        const val STALE = "stale (XNNPACK marked it: weights missing from it)"
        const val UNFINISHED = "unfinished (XNNPACK's build of it did not complete)"
        const val REWRITTEN = "rewritten by XNNPACK (rejected or extended), stamped again"

        // XNNPACK's XNNPackCacheHeader in LiteRT 2.2.0 (tflite/delegates/xnnpack/weight_cache.h):
        // uint64 version (kInvalidHeader = 0 until a build finishes; kVersion = 4), uint64
        // buffer_list_offset, uint64 buffer_list_size, uint8 stale (set to 1 when a run missed weights).
        const val XNNPACK_INVALID_HEADER = 0L
        const val XNNPACK_HEADER_VERSION = 4L
        const val XNNPACK_STALE_OFFSET = 24
        const val XNNPACK_HEADER_BYTES = 32

        /** [STALE] or [UNFINISHED] when XNNPACK's header says so, else null (the stale flag is read in the layout of version 4 only). */
        fun xnnpackMark(cache: File): String? {
            val header = ByteArray(XNNPACK_STALE_OFFSET + 1)
            val n = RandomAccessFile(cache, "r").use { it.read(header) }
            if (n < 8) return null
            val version = ByteBuffer.wrap(header, 0, 8).order(ByteOrder.LITTLE_ENDIAN).long
            return when {
                version == XNNPACK_INVALID_HEADER -> UNFINISHED
                version == XNNPACK_HEADER_VERSION && n > XNNPACK_STALE_OFFSET && header[XNNPACK_STALE_OFFSET].toInt() != 0 -> STALE
                else -> null
            }
        }

        private val LOCKS = ConcurrentHashMap<String, ReentrantLock>()

        /** The header's version field (little-endian, as written on arm64 and x86), or null when too short. */
        fun headerVersion(cache: File): Long? {
            val bytes = ByteArray(8)
            val n = RandomAccessFile(cache, "r").use { it.read(bytes) }
            return if (n == 8) ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).long else null
        }
    }
}

/** SHA-256 of a file, lower-case hex; read through a stream, so hashing maps no pages. */
fun fileSha256(file: File): String {
    val digest = MessageDigest.getInstance("SHA-256")
    FileInputStream(file).use {
        val chunk = ByteArray(1 shl 16)
        while (true) {
            val n = it.read(chunk)
            if (n < 0) break
            digest.update(chunk, 0, n)
        }
    }
    return digest.digest().joinToString("") { "%02x".format(it) }
}
