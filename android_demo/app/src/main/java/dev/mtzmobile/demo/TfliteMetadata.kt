package dev.mtzmobile.demo

import java.nio.ByteBuffer
import java.nio.ByteOrder

/** The file is not a .tflite flatbuffer, or one that is damaged or truncated. */
class MalformedModelException(message: String) : Exception(message)

/**
 * Reads one named metadata entry of a .tflite file with no TFLite library: a minimal walk over
 * the flatbuffer, following LiteRT's schema.fbs.
 *
 * Field numbers (the vtable slot of field f is 4 + 2 f), checked against the generated
 * ai_edge_litert.schema_py_generated (Model.Buffers: Offset(12), Model.Metadata: Offset(16),
 * Metadata.Name: Offset(4), Metadata.Buffer: Offset(6), Buffer.Data: Offset(4),
 * Buffer.Offset: Offset(6), Buffer.Size: Offset(8)):
 *
 *     table Model    { ... buffers: [Buffer] (field 4) ... metadata: [Metadata] (field 6) ... }
 *     table Metadata { name: string (field 0); buffer: uint (field 1) }
 *     table Buffer   { data: [ubyte] (field 0); offset: ulong (field 1); size: ulong (field 2) }
 *
 * A buffer whose data vector is empty may instead keep its bytes after the flatbuffer, at
 * `offset` bytes from the start of the file (valid when offset > 1), `size` bytes long.
 *
 * tests/test_kotlin_jvm.py runs this walk on the JVM over real converted files (with the
 * manifest inside the flatbuffer and after it) and damaged copies of them (truncated, another
 * identifier, offsets and buffer indices out of range, randomly flipped bytes): the manifest the
 * converter embedded, or MalformedModelException, never another exception.
 */
object TfliteMetadata {
    private const val FILE_IDENTIFIER = "TFL3"
    private const val MODEL_BUFFERS = 4
    private const val MODEL_METADATA = 6
    private const val METADATA_NAME = 0
    private const val METADATA_BUFFER = 1
    private const val BUFFER_DATA = 0
    private const val BUFFER_OFFSET = 1
    private const val BUFFER_SIZE = 2

    /**
     * The bytes of the metadata entry named [name], or null when the model has no such entry.
     * [model] holds the whole file from index 0 (its position and byte order are not used).
     */
    fun find(model: ByteBuffer, name: String): ByteArray? {
        val r = Reader(model.duplicate().order(ByteOrder.LITTLE_ENDIAN))
        if (r.size < 8) throw MalformedModelException("the file has ${r.size} bytes: too short for a .tflite")
        if (String(r.bytes(4, 4), Charsets.US_ASCII) != FILE_IDENTIFIER) {
            throw MalformedModelException("no $FILE_IDENTIFIER identifier: not a .tflite file")
        }
        val root = r.deref(0)
        val metadataField = r.field(root, MODEL_METADATA)
        if (metadataField < 0) return null
        val metadata = r.deref(metadataField)
        for (i in 0 until r.vectorLength(metadata)) {
            val entry = r.tableInVector(metadata, i)
            val nameField = r.field(entry, METADATA_NAME)
            if (nameField < 0 || r.string(r.deref(nameField)) != name) continue
            val bufferField = r.field(entry, METADATA_BUFFER)
            val bufferIndex = if (bufferField < 0) 0L else r.u32(bufferField)
            val buffersField = r.field(root, MODEL_BUFFERS)
            if (buffersField < 0) throw MalformedModelException("metadata '$name' names buffer $bufferIndex of none")
            val buffers = r.deref(buffersField)
            val count = r.vectorLength(buffers)
            if (bufferIndex >= count) {
                throw MalformedModelException("metadata '$name' names buffer $bufferIndex of $count")
            }
            return bufferBytes(r, r.tableInVector(buffers, bufferIndex.toInt()))
        }
        return null
    }

    private fun bufferBytes(r: Reader, buffer: Int): ByteArray {
        val dataField = r.field(buffer, BUFFER_DATA)
        if (dataField >= 0) {
            val data = r.deref(dataField)
            val n = r.vectorLength(data)
            if (n > 0) return r.bytes(data + 4, n)
        }
        val offsetField = r.field(buffer, BUFFER_OFFSET)
        val sizeField = r.field(buffer, BUFFER_SIZE)
        val offset = if (offsetField < 0) 0L else r.u64(offsetField)
        val size = if (sizeField < 0) 0L else r.u64(sizeField)
        if (offset > 1 && size > 0) {
            if (size > r.size || offset > r.size - size) {
                throw MalformedModelException("a buffer of $size bytes at offset $offset lies outside the ${r.size}-byte file")
            }
            return r.bytes(offset.toInt(), size.toInt())
        }
        return ByteArray(0)
    }

    /** Little-endian reads at absolute positions, each checked against the end of the file. */
    private class Reader(private val buf: ByteBuffer) {
        val size: Int = buf.limit()

        private fun check(at: Int, n: Int) {
            if (at < 0 || n < 0 || at > size - n) {
                throw MalformedModelException("a read of $n bytes at $at lies outside the $size-byte file")
            }
        }

        private fun index(position: Long): Int {
            if (position < 0 || position >= size) {
                throw MalformedModelException("offset $position lies outside the $size-byte file")
            }
            return position.toInt()
        }

        fun u16(at: Int): Int {
            check(at, 2)
            return buf.getShort(at).toInt() and 0xFFFF
        }

        fun i32(at: Int): Int {
            check(at, 4)
            return buf.getInt(at)
        }

        fun u32(at: Int): Long {
            check(at, 4)
            return buf.getInt(at).toLong() and 0xFFFFFFFFL
        }

        fun u64(at: Int): Long {
            check(at, 8)
            return buf.getLong(at)
        }

        fun bytes(at: Int, n: Int): ByteArray {
            check(at, n)
            val out = ByteArray(n)
            val view = buf.duplicate()
            view.position(at)
            view.get(out)
            return out
        }

        /** The table, vector or string that the unsigned offset stored at [at] points to. */
        fun deref(at: Int): Int = index(at.toLong() + u32(at))

        /** Absolute position of field [field] of the table at [table], or -1 when the field is absent. */
        fun field(table: Int, field: Int): Int {
            val vtable = index(table.toLong() - i32(table))
            val vtableSize = u16(vtable)
            val slot = 4 + 2 * field
            if (slot + 2 > vtableSize) return -1
            val offset = u16(vtable + slot)
            return if (offset == 0) -1 else index(table.toLong() + offset)
        }

        fun vectorLength(vector: Int): Int {
            val n = u32(vector)
            if (n > size) throw MalformedModelException("a vector of $n elements in a $size-byte file")
            return n.toInt()
        }

        /** Element [i] of the vector of tables at [vector]. */
        fun tableInVector(vector: Int, i: Int): Int = deref(index(vector.toLong() + 4 + 4L * i))

        fun string(at: Int): String = String(bytes(at + 4, vectorLength(at)), Charsets.UTF_8)
    }
}
