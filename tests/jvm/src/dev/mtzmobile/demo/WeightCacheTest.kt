package dev.mtzmobile.demo

import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized
import java.io.File

/**
 * The app's weight-cache check (WeightCache.kt) on a real XNNPACK cache file that LiteRT wrote
 * beside a converted model and the host bench stamped, and on damaged copies: it says what the
 * Python side's check says, deletes the cache and its stamp unless they are valid, and a stamp
 * it writes is one the Python side accepts (tests/test_kotlin_jvm.py checks that afterwards).
 */
@RunWith(Parameterized::class)
class WeightCacheTest(private val name: String, private val case: JSONObject) {
    companion object {
        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): List<Array<Any>> = Plan.cases("weight_caches")
    }

    @Test
    fun check_cache() {
        val model = File(case.getString("model"))
        val cache = WeightCache(model, case.getString("runtime"))
        val sha256 = fileSha256(model)
        val expect = case.getString("expect")
        if (expect == "stamp") {  // the cache LiteRT wrote, without a stamp: the app stamps it
            cache.writeStamp(sha256)
            assertEquals("$name: after stamping", "valid", WeightCache(model, case.getString("runtime")).check(sha256))
            return
        }
        val found = cache.check(sha256)
        assertEquals("$name: what the check found", expect, found)
        if (case.has("python_found")) assertEquals("$name: the Python side's check", case.getString("python_found"), found)
        if (found == "valid") {
            assertTrue("$name: a valid cache is kept", cache.cache.isFile && cache.stamp.isFile)
        } else {
            assertFalse("$name: the cache is deleted", cache.cache.exists())
            assertFalse("$name: the stamp is deleted", cache.stamp.exists())
        }
    }
}
