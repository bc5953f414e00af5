import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// The 8-lane Float path of `sigmoidBackward` (Ops/Activations.swift) gives, element by element, the
/// bits of the scalar formula gradOut * (y * (1 - y)), for lengths with and without a ragged tail,
/// out of place and in place (gradX == gradOut), on one and two threads.
final class SigmoidVectorTests: XCTestCase {
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
