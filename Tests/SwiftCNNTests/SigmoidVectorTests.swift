import XCTest
import Foundation
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// The 8-lane Float paths of the sigmoid (Ops/Activations.swift): the forward's AVX2 form against the
/// 16-lane form, and the backward against its scalar formula, bit for bit.
final class SigmoidVectorTests: XCTestCase {
    /// `sigmoidForwardFloat8` == `sigmoidForwardFloat16` bit for bit (ragged tails, |x| > 80 lanes
    /// through the scalar fallback, NaN, signed zeros), and within 4e-7 of the Double sigmoid.
    func testEightLaneForwardMatchesSixteenLane() {
        var x: [Float] = (randomArray(1001, seed: 3) as [Float]).map { $0 * 30 }
        x += [0, -0, 80, -80, 80.5, -81, 100, -100, -1e4, 1e4, .nan, .infinity, -.infinity, 1e-30, -1e-30]
        for count in [1, 5, 8, 17, x.count] {
            var y8 = [Float](repeating: 7, count: count), y16 = [Float](repeating: 9, count: count)
            x.withUnsafeBufferPointer { xp in
                y8.withUnsafeMutableBufferPointer { sigmoidForwardFloat8(0..<count, x: xp.baseAddress!, y: $0.baseAddress!) }
                y16.withUnsafeMutableBufferPointer { sigmoidForwardFloat16(0..<count, x: xp.baseAddress!, y: $0.baseAddress!) }
            }
            for i in 0..<count {
                XCTAssertEqual(y8[i].bitPattern, y16[i].bitPattern, "x \(x[i])")
                if !x[i].isNaN {
                    let ref = 1 / (1 + Foundation.exp(-Double(x[i])))
                    XCTAssertEqual(Double(y8[i]), ref, accuracy: 4e-7 * max(ref, 1e-30) + 1e-38, "x \(x[i])")
                } else {
                    XCTAssertTrue(y8[i].isNaN)
                }
            }
        }
    }

    func testVectorPathMatchesScalarFormulaBitForBit() {
        for count in [1, 7, 8, 9, 37, 1003, 300_001] {
            let y: [Float] = (randomArray(count, seed: UInt64(count)) as [Float]).map { 1 / (1 + $0.magnitude) }
            let g: [Float] = randomArray(count, seed: UInt64(count) + 1)
            var expected = [Float](repeating: 0, count: count)
            for i in 0..<count { expected[i] = g[i] * (y[i] * (1 - y[i])) }
            for threads in [1, 2] {
                let saved = Threading.numThreads
                Threading.numThreads = threads
                defer { Threading.numThreads = saved }
                var out = [Float](repeating: .nan, count: count)
                var inPlace = g
                y.withUnsafeBufferPointer { yp in
                    g.withUnsafeBufferPointer { gp in
                        out.withUnsafeMutableBufferPointer { op in
                            sigmoidBackward(count: count, gradOut: gp.baseAddress!, y: yp.baseAddress!, gradX: op.baseAddress!)
                        }
                    }
                    inPlace.withUnsafeMutableBufferPointer { ip in
                        sigmoidBackward(count: count, gradOut: UnsafePointer(ip.baseAddress!), y: yp.baseAddress!,
                                        gradX: ip.baseAddress!)
                    }
                }
                var mismatches = 0
                for i in 0..<count where out[i].bitPattern != expected[i].bitPattern
                    || inPlace[i].bitPattern != expected[i].bitPattern { mismatches += 1 }
                XCTAssertEqual(mismatches, 0, "count \(count) threads \(threads)")
            }
        }
    }
}
