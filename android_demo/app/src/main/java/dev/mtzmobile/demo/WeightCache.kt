package dev.mtzmobile.demo

import org.json.JSONException
import org.json.JSONObject
import java.io.File
import java.io.FileInputStream
import java.security.MessageDigest

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
     * stamp", "stamp unreadable", "model changed", "LiteRT changed", "size changed (truncated?)",
     * "contents changed (corrupted?)".
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
