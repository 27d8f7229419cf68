import Foundation
import XCTest
@testable import HistoCore

final class EngineTests: XCTestCase {
    func testShapeMismatchIsThrownAtEvalNamingOpAndShapes() {
        let a = Tensor.zeros([2, 3]), b = Tensor.zeros([3, 2])
        let c = (a + b).exp()
        XCTAssertThrowsError(try c.eval()) { error in
            let text = "\(error)"
            XCTAssert(text.contains("binary.add") && text.contains("[2, 3]") && text.contains("[3, 2]"), text)
        }
    }

    func testRankChangingBroadcastIsAnError() {
        XCTAssertThrowsError(try (Tensor.zeros([4]) + Tensor.zeros([4, 1])).eval()) { error in
            XCTAssert("\(error)".contains("different ranks"), "\(error)")
        }
    }

    func testInvalidAxisIsAnError() {
        XCTAssertThrowsError(try Tensor.zeros([2, 3]).softmax(axis: 2).eval())
        XCTAssertThrowsError(try Tensor.zeros([2, 3]).sum(axes: [5]).eval())
        XCTAssertThrowsError(try Tensor.zeros([2, 3]).squeeze(0).eval())
        XCTAssertThrowsError(try Tensor([1, 2, 3], shape: [2]).eval())
    }

    func testReshapeAndLeadingSliceAreViews() throws {
        let x = Tensor((0..<24).map(Float.init), shape: [4, 6])
        let r = x.reshape([2, 12])
        let s = x.slice(axis: 0, start: 1, end: 3)
        try eval([r, s])
        XCTAssert(r.node.buffer === x.node.buffer)
        XCTAssert(s.node.buffer === x.node.buffer)
        XCTAssertEqual(s.node.offset, 6)
        XCTAssertEqual(try s.toArray(), (6..<18).map(Float.init))
    }

    func testSharedSubexpressionGradientsAccumulate() throws {
        let x = Tensor([1, 2, 3], shape: [3])
        let y = x * x + x.exp() * x // d/dx = 2x + e^x + x e^x
        let g = Autodiff.gradients(of: y.sum(), wrt: [x])[0]
        let expected = [1, 2, 3].map { v -> Float in 2 * v + Foundation.exp(v) * (1 + v) }
        for (a, e) in zip(try g.toArray(), expected) { XCTAssertEqual(a, e, accuracy: 1e-4) }
    }

    func testDetachStopsGradientAndUnrelatedInputsGetZeros() throws {
        let x = Tensor([1, 2], shape: [2]), z = Tensor([5, 6], shape: [2])
        let y = (x * x.detach()).sum()
        let grads = Autodiff.gradients(of: y, wrt: [x, z])
        XCTAssertEqual(try grads[0].toArray(), [1, 2])
        XCTAssertEqual(try grads[1].toArray(), [0, 0])
    }

    func testIntermediatesAreReleasedAndReusedAcrossSteps() throws {
        // A small MLP training step: after the first step, later steps take every buffer from the pool.
        let pool = CPUBackend.shared.pool
        let g = RandomGenerator(seed: 1)
        var w1 = try g.normal([16, 32]).materialized(), w2 = try g.normal([32, 4]).materialized()
        let x = try g.normal([8, 16]).materialized()
        var fresh: [Int] = []
        for _ in 0..<4 {
            let h = x.matmul(w1).relu()
            let loss = h.matmul(w2).square().mean()
            let grads = Autodiff.gradients(of: loss, wrt: [w1, w2])
            try eval([loss] + grads)
            let newW1 = try (w1 - grads[0] * 0.01).materialized()
            let newW2 = try (w2 - grads[1] * 0.01).materialized()
            w1 = newW1; w2 = newW2
            fresh.append(pool.freshAllocations)
        }
        XCTAssertEqual(fresh[2], fresh[1], "step 3 allocated \(fresh[2] - fresh[1]) fresh buffers")
        XCTAssertEqual(fresh[3], fresh[2], "step 4 allocated \(fresh[3] - fresh[2]) fresh buffers")
    }

    func testPoolFullOfStaleSizesStillServesTheCurrentStepFromReuse() {
        // Blocks left by an earlier job fill the pool to its limit; a steady loop of other sizes must push them out
        // instead of allocating afresh every step.
        let pool = HostBufferPool()
        pool.retainLimit = 1000
        for size in 100..<109 { _ = pool.take(size) } // one at a time: 108 live at most, 1108 retained
        var fresh: [Int] = []
        for _ in 0..<4 {
            let step = [pool.take(300), pool.take(200), pool.take(200)]
            _ = step
            fresh.append(pool.freshAllocations)
        }
        XCTAssertEqual(fresh[3], fresh[1], "steps 3 and 4 allocated \(fresh[3] - fresh[1]) fresh blocks")
        let oversized = pool.take(5000)
        _ = oversized
        XCTAssertEqual(pool.take(300).elementCount, 300)
    }

    func testStepLargerThanTheRetainLimitIsServedFromReuse() {
        // A step's blocks outgrow the limit (1500 elements live against 1000): the pool keeps what was live at once,
        // so steps after the first allocate nothing.
        let pool = HostBufferPool()
        pool.retainLimit = 1000
        var fresh: [Int] = []
        for _ in 0..<3 {
            let step = [pool.take(600), pool.take(500), pool.take(400)]
            _ = step
            fresh.append(pool.freshAllocations)
        }
        XCTAssertEqual(fresh, [3, 3, 3])
    }

    func testPhiloxKnownAnswer() {
        // Random123 kat_vectors: philox4x32_10, counter 0, key 0.
        let w = Philox.block(counter: 0, seed: 0)
        XCTAssertEqual([w.0, w.1, w.2, w.3], [0x6627_E8D5, 0xE169_C58D, 0xBC57_AC4C, 0x9B00_DBD8])
    }

    func testBlockLanesAreConsecutiveCounters() {
        // From 2³² − 3 the low counter word wraps inside the eight blocks and the high word steps.
        let first: UInt64 = 0xFFFF_FFFD, seed: UInt64 = 0x1234_5678_9ABC
        let w = Philox.blocks(from: first, seed: seed)
        for lane in 0..<8 {
            let b = Philox.block(counter: first + UInt64(lane), seed: seed)
            XCTAssertEqual([w.0[lane], w.1[lane], w.2[lane], w.3[lane]], [b.0, b.1, b.2, b.3], "lane \(lane)")
        }
    }

    func testFillTakesEachPositionFromItsBlockAcrossChunks() {
        // Over the 16384-element chunk size and from an unaligned offset: every position p is word p % 4 of
        // block p / 4, whichever chunk and eight-block group wrote it.
        let count = 40_000, offset: UInt64 = 6, seed: UInt64 = 77
        var out = [Float](repeating: -1, count: count)
        out.withUnsafeMutableBufferPointer { Philox.fill($0, distribution: .uniform(0, 1), seed: seed, offset: offset) }
        let wrong = (0..<count).first { i in
            let p = offset + UInt64(i), b = Philox.block(counter: p / 4, seed: seed)
            return out[i] != Philox.uniform([b.0, b.1, b.2, b.3][Int(p % 4)])
        }
        XCTAssertNil(wrong, "position \(wrong.map { offset + UInt64($0) } ?? 0)")
    }

    func testNormalSamplesHaveUnitMoments() throws {
        let v = try RandomGenerator(seed: 3).normal([200_000]).toArray()
        let mean = v.reduce(0, +) / Float(v.count)
        let variance = v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(v.count)
        XCTAssertEqual(mean, 0, accuracy: 0.01)
        XCTAssertEqual(variance, 1, accuracy: 0.01)
        let u = try RandomGenerator(seed: 4).uniform([100_000]).toArray()
        XCTAssert(u.allSatisfy { $0 > 0 && $0 <= 1 })
    }

    func testGeneratorDrawsDoNotOverlap() throws {
        let g = RandomGenerator(seed: 9)
        let a = try g.uniform([5]).toArray(), b = try g.uniform([5]).toArray()
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(try RandomGenerator(seed: 9).uniform([5]).toArray(), a)
    }
}

final class ValueCheckTests: XCTestCase {
    func testNonFiniteLossIsAnErrorNamingTheLoss() {
        let logits = Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3])
        let labels = Tensor([0, 7], shape: [2])
        XCTAssertThrowsError(try Loss.crossEntropy(logits: logits, labels: labels).eval()) { error in
            XCTAssert("\(error)".contains("cross_entropy"), "\(error)")
        }
        XCTAssertThrowsError(try (Tensor([1, -1], shape: [2]).log().sum()).checkedFinite("my_loss").eval()) { error in
            XCTAssert("\(error)".contains("my_loss") && "\(error)".contains("nan"), "\(error)")
        }
    }
}

final class IndexCheckTests: XCTestCase {
    func testOutOfRangeIndicesAreErrorsEvenWhenComputed() {
        let table = Tensor((0..<12).map(Float.init), shape: [4, 3])
        let computed = Tensor([1, 2], shape: [2]) * 2 // [2, 4]: 4 is out of range for 4 rows
        XCTAssertThrowsError(try table.indexSelect(axis: 0, indices: computed).eval()) { error in
            XCTAssert("\(error)".contains("index_select") && "\(error)".contains("4.0"), "\(error)")
        }
        XCTAssertThrowsError(try Tensor([0, 1, 3], shape: [1, 3]).oneHot(classes: 3).eval()) { error in
            XCTAssert("\(error)".contains("one_hot"), "\(error)")
        }
        XCTAssertNoThrow(try table.indexSelect(axis: 0, indices: Tensor([3, 0], shape: [2])).eval())
    }
}
