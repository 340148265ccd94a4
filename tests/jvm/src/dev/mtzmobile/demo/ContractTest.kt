package dev.mtzmobile.demo

import org.junit.Assert.assertEquals
import org.junit.Test
import java.lang.reflect.Modifier

/** Every constant of Contract.kt equals the Python side's (mtz_mobile/contract.py and the rest). */
class ContractTest {
    @Test
    fun names_equal_pythons() {
        val expected = Plan.root.getJSONObject("contract")
        val kotlin = Contract::class.java.declaredFields
            .filter { Modifier.isStatic(it.modifiers) && it.name != "INSTANCE" }
            .associate { it.name to it.get(null) }
        assertEquals("Contract.kt's names", expected.keys().asSequence().toSortedSet(), kotlin.keys.toSortedSet())
        for ((name, value) in kotlin) {
            assertEquals("Contract.$name", expected.get(name), value)
        }
    }
}
