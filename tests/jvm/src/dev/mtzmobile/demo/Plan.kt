package dev.mtzmobile.demo

import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import java.nio.file.Paths
import java.nio.file.StandardOpenOption

/**
 * What tests/test_kotlin_jvm.py wrote for these tests: the files it converted and damaged, what
 * each must give, and the Python side's numbers. Its path comes in the system property mtz.plan.
 */
object Plan {
    val root: JSONObject by lazy {
        val path = System.getProperty("mtz.plan") ?: throw IllegalStateException("no -Dmtz.plan=PATH: run tests/test_kotlin_jvm.py")
        JSONObject(File(path).readText())
    }

    /** JUnit Parameterized rows (case name, case object) of the plan's list [key]. */
    fun cases(key: String): List<Array<Any>> {
        val list = root.getJSONArray(key)
        return List(list.length()) { i ->
            val case = list.getJSONObject(i)
            arrayOf<Any>(case.getString("name"), case)
        }
    }

    /** The file memory-mapped read-only, as the app maps files/model.tflite (ModelFile.locate). */
    fun map(path: String): ByteBuffer =
        FileChannel.open(Paths.get(path), StandardOpenOption.READ).use { it.map(FileChannel.MapMode.READ_ONLY, 0, it.size()) }

    /** Little-endian float32 values, as numpy's tofile writes '<f4'. */
    fun floats(path: String): FloatArray {
        val buf = ByteBuffer.wrap(File(path).readBytes()).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        return FloatArray(buf.remaining()).also { buf.get(it) }
    }

    fun doubles(a: JSONArray): DoubleArray = DoubleArray(a.length()) { a.getDouble(it) }
}
