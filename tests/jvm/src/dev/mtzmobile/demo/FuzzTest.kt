package dev.mtzmobile.demo

import org.json.JSONObject
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized
import java.io.File
import java.nio.ByteBuffer
import kotlin.random.Random

/**
 * A converted file with a few bytes overwritten at random (seeded), many times: the reader gives a
 * manifest, MalformedModelException or ManifestException, and never anything else.
 */
@RunWith(Parameterized::class)
class FuzzTest(private val name: String, private val case: JSONObject) {
    companion object {
        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): List<Array<Any>> = Plan.cases("fuzz")
    }

    @Test
    fun damaged_bytes_give_the_readers_own_exceptions() {
        val original = File(case.getString("file")).readBytes()
        val random = Random(case.getInt("seed"))
        val counts = HashMap<String, Int>()
        repeat(case.getInt("mutations")) { i ->
            val data = original.copyOf()
            val changed = List(1 + random.nextInt(4)) { random.nextInt(data.size) }
            for (at in changed) data[at] = random.nextInt(256).toByte()
            val outcome = try {
                ManifestParser.readEmbedded(ByteBuffer.wrap(data), "$name#$i")
                "manifest"
            } catch (e: MalformedModelException) {
                "MalformedModelException"
            } catch (e: ManifestException) {
                val message = e.message ?: ""
                if (message.length > 300 || message.any { it.isISOControl() }) {
                    throw AssertionError("$name mutation $i: not one short line: ${message.take(300)}")
                }
                "ManifestException"
            } catch (e: Throwable) {
                throw AssertionError("$name mutation $i (bytes at $changed): ${e.javaClass.name}: ${e.message}", e)
            }
            counts[outcome] = (counts[outcome] ?: 0) + 1
        }
        println("FuzzTest $name: $counts")
        assertTrue("$name: no mutation was detected as malformed: $counts", (counts["MalformedModelException"] ?: 0) > 0)
        assertTrue("$name: no mutation left the manifest readable: $counts", (counts["manifest"] ?: 0) > 0)
    }
}
