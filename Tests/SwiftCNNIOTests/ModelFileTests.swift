import XCTest
@_spi(Engine) @testable import SwiftCNN
@testable import SwiftCNNIO
import SwiftCNNTestSupport

/// The .npy/.npz/zip reader and writer and `Sequential.save(to:)` / `load(from:)`, in Swift alone
/// (CrossLanguageTests checks the same files against Python's swiftcnn and NumPy).
final class ModelFileTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        let template = NSTemporaryDirectory() + "swiftcnn-io-XXXXXX"
        var chars = Array(template.utf8CString)
        guard let made = mkdtemp(&chars) else { throw XCTSkip("cannot create a temporary directory") }
        directory = String(cString: made)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func path(_ name: String) -> String { directory + "/" + name }

    /// A model with every kind of state: conv, BatchNorm (running stats), a Residual, a nested
    /// Sequential, grouped and "same" convolutions, dropout, and the parameterless layers.
    static func richModel<T: CNNScalar>(_: T.Type) throws -> Sequential<T> {
        try Sequential<T>(
            Conv2d<T>(inChannels: 1, outChannels: 4, kernelSize: (3, 3), padding: (1, 1), seed: 1),
            BatchNorm<T>(.batchNorm2d, numFeatures: 4), LeakyReLU<T>(negativeSlope: 0.02),
            Residual<T>(GroupedConv2d<T>(inChannels: 4, outChannels: 4, kernelSize: (3, 3), padding: .same, groups: 2, seed: 2),
                        Tanh<T>()),
            Sequential<T>(AvgPool2d<T>(kernelSize: (2, 2)), ReLU<T>()),
            AdaptiveAvgPool2d<T>(outputSize: (2, 2)),
            MaxPool2d<T>(kernelSize: (2, 2), stride: (1, 1)),
            Flatten<T>(), Dropout<T>(p: 0.25, seed: 3),
            Linear<T>(inFeatures: 4, outFeatures: 6, seed: 4), Sigmoid<T>(),
            BatchNorm<T>(.batchNorm1d, numFeatures: 6, eps: 1e-3, momentum: nil, affine: false),
            Linear<T>(inFeatures: 6, outFeatures: 3, bias: false, seed: 5))
    }

    func testCRC32() {
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)[...]), 0xCBF4_3926)
        XCTAssertEqual(CRC32.checksum([][...]), 0)
    }

    func testNpyRoundTripAndNumPyHeader() throws {
        let a = try NpyArray(shape: [2, 3], floating: [1, -2.5, 3, 0, 1e-7, 6], single: true)
        let bytes = try a.encoded()
        // np.save(f, np.array([[1, -2.5, 3], [0, 1e-7, 6]], np.float32)): a 128-byte header, then the data.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
        XCTAssertEqual(bytes.count, 128 + 24)
        XCTAssertEqual(Array(bytes[0..<10]), NpyArray.magic + [1, 0, 118, 0])
        XCTAssertEqual(String(decoding: bytes[10..<128], as: UTF8.self), header + String(repeating: " ", count: 117 - header.utf8.count) + "\n")
        let back = try NpyArray.decode(bytes)
        XCTAssertEqual(back.shape, [2, 3])
        XCTAssertEqual(back.dtype, "float32")
        XCTAssertEqual(back.values, .floating([1, -2.5, 3, 0, Double(Float(1e-7)), 6]))
        for array in [try NpyArray(shape: [], int64: [-7]), try NpyArray(shape: [4], floating: [0.1, 0.2, .infinity, -0.0], single: false),
                      NpyArray(string: "swiftcnn"), NpyArray(string: "{\"type\": \"Sequential\", \"é\": []}"), NpyArray(string: ""),
                      try NpyArray(shape: [0, 3], floating: [], single: true)] {
            XCTAssertEqual(try NpyArray.decode(try array.encoded()), array)
        }
        XCTAssertEqual(NpyArray(string: "swiftcnn").dtype, "<U8")
    }

    func testNpyReadsOtherLayoutsAndRefusesWhatItCannot() throws {
        func npy(_ header: String, _ data: [UInt8]) -> [UInt8] {
            let h = Array(header.utf8)
            return NpyArray.magic + [1, 0, UInt8(h.count & 0xFF), UInt8(h.count >> 8)] + h + data
        }
        // Fortran order, big-endian int16, uint8, bool.
        let f = npy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }\n",
                    [1.0, 4, 2, 5, 3, 6].flatMap { d in (0..<8).map { UInt8((d.bitPattern >> (8 * UInt64($0))) & 0xFF) } })
        XCTAssertEqual(try NpyArray.decode(f).values, .floating([1, 2, 3, 4, 5, 6]))
        XCTAssertEqual(try NpyArray.decode(npy("{'descr': '>i2', 'fortran_order': False, 'shape': (2,), }\n", [0xFF, 0xFE, 0x01, 0x00])).values,
                       .integer([-2, 256]))
        XCTAssertEqual(try NpyArray.decode(npy("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }\n", [0, 7, 255])).values,
                       .integer([0, 7, 255]))
        XCTAssertEqual(try NpyArray.decode(npy("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }\n", [1, 0])).values,
                       .integer([1, 0]))
        assertThrowsKind(.value, contains: "pickled") {
            try NpyArray.decode(npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }\n", [0, 0, 0, 0, 0, 0, 0, 0]))
        }
        assertThrowsKind(.value, contains: "not supported") {
            try NpyArray.decode(npy("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }\n", [UInt8](repeating: 0, count: 16)))
        }
        assertThrowsKind(.value, contains: "structured") {
            try NpyArray.decode(npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n", [0, 0, 0, 0]))
        }
        assertThrowsKind(.value, contains: "holds 7 bytes") {
            try NpyArray.decode(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", [UInt8](repeating: 0, count: 7)))
        }
        assertThrowsKind(.overflow) {
            try NpyArray.decode(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n", []))
        }
        assertThrowsKind(.value, contains: "not valid") {
            try NpyArray.decode(npy("{'descr': '<f4', 'shape': (1,), }\n", [0, 0, 0, 0]))
        }
        assertThrowsKind(.value, contains: "magic") { try NpyArray.decode(Array("not an array".utf8)) }
        assertThrowsKind(.value, contains: "version") { try NpyArray.decode(NpyArray.magic + [9, 0, 0, 0]) }
        assertThrowsKind(.value, contains: "runs past") { try NpyArray.decode(NpyArray.magic + [1, 0, 0xFF, 0x7F, 0x7B]) }
    }

    func testInflate() throws {
        // zlib's raw deflate (wbits=-15, level 9) of known texts: a fixed-Huffman and a dynamic-Huffman block.
        let fixed: [UInt8] = [203, 72, 205, 201, 201, 87, 200, 64, 39, 117, 20, 138, 203, 51, 211, 74, 146, 243, 242, 20, 1]
        XCTAssertEqual(try Inflate.decompress(fixed[...], expectedSize: 34), Array("hello hello hello hello, swiftcnn!".utf8))
        let dynamic: [UInt8] = [237, 141, 193, 17, 4, 65, 8, 2, 99, 5, 65, 201, 63, 130, 117, 46, 136, 123, 233, 207, 46, 160, 97, 101, 10,
                                76, 1, 2, 202, 106, 203, 152, 180, 52, 28, 61, 82, 138, 88, 16, 247, 22, 112, 223, 146, 23, 188, 128, 58,
                                131, 173, 244, 35, 191, 137, 16, 53, 217, 17, 209, 142, 189, 157, 147, 156, 228, 36, 39, 57, 201, 63, 37, 31]
        let letters = Array("abcdefgh".utf8)
        var text: [UInt8] = []
        for i in 0..<1500 {
            let k: Int = (i * i * 31 + i * 7) % 101 % 13 % 8
            text.append(letters[k])
        }
        XCTAssertEqual(try Inflate.decompress(dynamic[...], expectedSize: 1500), text)
        // A stored block: BFINAL=1, BTYPE=00, LEN, ~LEN, the bytes.
        XCTAssertEqual(try Inflate.decompress([1, 3, 0, 0xFC, 0xFF, 7, 8, 9][...], expectedSize: 3), [7, 8, 9])
        assertThrowsKind(.value, contains: "length check") { try Inflate.decompress([1, 3, 0, 0xFC, 0xFE, 7, 8, 9][...], expectedSize: 3) }
        assertThrowsKind(.value, contains: "invalid block type") { try Inflate.decompress([0x07][...], expectedSize: 1) }
        for cut in 0..<dynamic.count {
            assertThrowsKind(.value) { try Inflate.decompress(dynamic[..<cut], expectedSize: 1500) }
        }
        assertThrowsKind(.value, contains: "more than the 1499") { try Inflate.decompress(dynamic[...], expectedSize: 1499) }
        assertThrowsKind(.value, contains: "not the 1501") { try Inflate.decompress(dynamic[...], expectedSize: 1501) }
    }

    func testNPZRoundTrip() throws {
        let arrays: [(name: String, array: NpyArray)] = [
            ("a", try NpyArray(shape: [3], floating: [1, 2, 3], single: false)),
            ("dir/b", try NpyArray(shape: [], int64: [5])), ("ü", NpyArray(string: "text"))]
        try NPZ.write(arrays, to: path("x.npz"))
        let back = try NPZ.read(from: path("x.npz"))
        XCTAssertEqual(back.map(\.name), ["a", "dir/b", "ü"])
        XCTAssertEqual(back.map(\.array), arrays.map(\.array))
        // The same contents give the same bytes (fixed timestamps).
        XCTAssertEqual(try NPZ.encode(arrays), try NPZ.encode(arrays))
        assertThrowsKind(.value, contains: "more than once") { try NPZ.encode(arrays + [arrays[0]]) }
    }

    func checkSaveLoadRoundTrip<T: CNNScalar>(_: T.Type) throws {
        let model = try Self.richModel(T.self)
        let x = try Tensor<T>.random(shape: [6, 1, 6, 6], seed: 1, distribution: .normal(mean: 0, standardDeviation: 1))
        try model.fit(x, [0, 1, 2, 0, 1, 2], epochs: 2, batchSize: 3, seed: 1)  // moves the running statistics
        try model.save(to: path("m.npz"))
        let loaded = try Sequential<T>.load(from: path("m.npz"))
        XCTAssertEqual(loaded.description, model.description)
        let (s, t) = (try model.stateDict(), try loaded.stateDict())
        XCTAssertEqual(s.names, t.names)
        for (e, f) in zip(s, t) {
            XCTAssertEqual(e.value.tensor?.scalars, f.value.tensor?.scalars, e.name)
            XCTAssertEqual(e.value.integers, f.value.integers, e.name)
        }
        XCTAssertEqual(s["1.num_batches_tracked"]?.integers, [4])
        XCTAssertEqual(try model.predict(x).scalars, try loaded.predict(x).scalars)
        // Saving again gives the same file, byte for byte.
        try loaded.save(to: path("m2.npz"))
        XCTAssertEqual(try FileIO.read(path("m.npz"), op: "t"), try FileIO.read(path("m2.npz"), op: "t"))
        // A file of the other precision loads, its values converted.
        let other = try Sequential<Double>.load(from: path("m.npz"))
        assertRelativeError(try other.predict(converted(x, to: Double.self)).scalars, try model.predict(x).scalars,
                            T.self == Float.self ? 1e-5 : 1e-14)
    }

    func testSaveLoadRoundTripFloat() throws { try checkSaveLoadRoundTrip(Float.self) }
    func testSaveLoadRoundTripDouble() throws { try checkSaveLoadRoundTrip(Double.self) }

    func testSavedFileHoldsThePythonFormat() throws {
        let model = try Sequential<Float>(Conv2d<Float>(inChannels: 1, outChannels: 6, kernelSize: (5, 5), padding: (2, 2), seed: 1),
                                          Sigmoid<Float>(), BatchNorm<Float>(.batchNorm2d, numFeatures: 6, momentum: nil))
        try model.save(to: path("f.npz"))
        let arrays = try NPZ.read(from: path("f.npz"))
        XCTAssertEqual(arrays.map(\.name), ["__format__", "__format_version__", "__architecture__", "0.weight", "0.bias",
                                            "2.weight", "2.bias", "2.running_mean", "2.running_var", "2.num_batches_tracked"])
        XCTAssertEqual(arrays[0].array.scalarString, "swiftcnn")
        XCTAssertEqual(arrays[1].array.dtype, "int64")
        XCTAssertEqual(arrays[1].array.scalarInteger, 1)
        XCTAssertEqual(arrays[2].array.scalarString, """
            {"type": "Sequential", "layers": [{"type": "Conv2d", "in_channels": 1, "out_channels": 6, "kernel_size": [5, 5], \
            "stride": [1, 1], "padding": [2, 2], "dilation": [1, 1], "groups": 1, "bias": true, "dtype": "float32"}, \
            {"type": "Sigmoid"}, {"type": "BatchNorm2d", "num_features": 6, "eps": 1e-05, "momentum": null, "affine": true, \
            "track_running_stats": true, "dtype": "float32"}]}
            """)
        XCTAssertEqual(arrays[3].array.dtype, "float32")
        XCTAssertEqual(arrays[3].array.shape, [6, 1, 5, 5])
        XCTAssertEqual(arrays[9].array.dtype, "int64")
        XCTAssertEqual(arrays[9].array.shape, [])
    }

    // MARK: damaged files: every one throws .value naming the file, none traps

    func modelFile() throws -> [UInt8] {
        let model = try Sequential<Float>(Linear<Float>(inFeatures: 3, outFeatures: 2, seed: 1), BatchNorm<Float>(.batchNorm1d, numFeatures: 2))
        try model.save(to: path("good.npz"))
        return try FileIO.read(path("good.npz"), op: "t")
    }

    func assertLoadFails(_ bytes: [UInt8], contains: String? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let p = path("bad.npz")
        XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: Data(bytes)))
        assertThrowsKind(.value, contains: contains, file: file, line: line) { try Sequential<Float>.load(from: p) }
        assertThrowsKind(.value, contains: "is not a valid swiftcnn model file", file: file, line: line) { try Sequential<Float>.load(from: p) }
    }

    func testTruncatedAndCorruptedFilesThrow() throws {
        let good = try modelFile()
        for cut in stride(from: 0, to: good.count, by: 7) {
            try assertLoadFails(Array(good[..<cut]))
        }
        try assertLoadFails(Array(good.dropLast()), contains: "end-of-central-directory")
        // Every single-byte corruption inside a member's data is caught by its CRC-32 (or its header checks).
        let arrays = try NPZ.decode(good)
        XCTAssertEqual(arrays.count, 3 + 7)
        var flipped = 0
        for at in stride(from: 30, to: good.count - 200, by: 13) {
            var bad = good
            bad[at] ^= 0x5A
            let p = path("flip.npz")
            XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: Data(bad)))
            do {
                _ = try Sequential<Float>.load(from: p)
                // A flip in a zip field nobody reads (a timestamp) is harmless; the loaded model
                // must then be the saved one.
                let m = try Sequential<Float>.load(from: path("good.npz"))
                let l = try Sequential<Float>.load(from: p)
                XCTAssertEqual(try m.stateDict().map { $0.value.tensor?.scalars ?? [] }, try l.stateDict().map { $0.value.tensor?.scalars ?? [] })
            } catch let error as SwiftCNNError {
                XCTAssertEqual(error.kind, .value, error.message)
                flipped += 1
            }
        }
        XCTAssertGreaterThan(flipped, 20)
        var crc = good
        let weightData = try XCTUnwrap(findMember(good, "0.weight.npy"))
        crc[weightData + 130] ^= 1
        try assertLoadFails(crc, contains: "fails its CRC-32 check")
        try assertLoadFails(Array("PK\u{5}\u{6}".utf8) + [UInt8](repeating: 0, count: 30))
        try assertLoadFails(Array("hello, this is not a zip file at all........".utf8), contains: "not an .npz")
        try assertLoadFails(try NpyArray(shape: [1], floating: [1], single: true).encoded(), contains: "single .npy")
    }

    /// The offset of the data of member `name` in a stored zip.
    func findMember(_ bytes: [UInt8], _ name: String) -> Int? {
        let n = Array(name.utf8)
        for i in 0..<(bytes.count - 30 - n.count) where bytes[i] == 0x50 && bytes[i + 1] == 0x4B && bytes[i + 2] == 3 && bytes[i + 3] == 4 {
            if Array(bytes[(i + 30)..<(i + 30 + n.count)]) == n { return i + 30 + n.count }
        }
        return nil
    }

    func testWrongContentsThrow() throws {
        let good = try NPZ.decode(try modelFile())
        func with(_ change: (inout [(name: String, array: NpyArray)]) throws -> Void) throws -> [UInt8] {
            var a = good
            try change(&a)
            return try NPZ.encode(a)
        }
        try assertLoadFails(try with { $0[3].array = try NpyArray(shape: [2, 3], int64: [1, 2, 3, 4, 5, 6]) },
                            contains: "'0.weight' have dtype int64, not a float dtype")
        try assertLoadFails(try with { $0[3].array = try NpyArray(shape: [3, 2], floating: [1, 2, 3, 4, 5, 6], single: true) },
                            contains: "'0.weight' have shape (3, 2) but the architecture needs (2, 3)")
        try assertLoadFails(try with { $0[9].array = try NpyArray(shape: [], floating: [1], single: true) },
                            contains: "'1.num_batches_tracked' have dtype float32, not an integer dtype")
        try assertLoadFails(try with { $0.remove(at: 4) }, contains: "the weights '0.bias' are missing")
        try assertLoadFails(try with { $0.append(("extra", try NpyArray(shape: [], int64: [1]))) }, contains: "no place for")
        try assertLoadFails(try with { $0.remove(at: 0) }, contains: "no '__format__' entry")
        try assertLoadFails(try with { $0[0].array = NpyArray(string: "other") }, contains: "not 'swiftcnn'")
        try assertLoadFails(try with { $0[1].array = try NpyArray(shape: [], int64: [2]) }, contains: "newer swiftcnn")
        try assertLoadFails(try with { $0[2].array = NpyArray(string: "{\"type\": \"Sequential\", \"layers\": [") }, contains: "not valid JSON")
        try assertLoadFails(try with { $0[2].array = NpyArray(string: "{\"type\": \"Sequential\", \"layers\": [{\"type\": \"Magic\"}]}") },
                            contains: "unknown layer type 'Magic'")
        try assertLoadFails(try with {
            $0[2].array = NpyArray(string: "{\"type\": \"Sequential\", \"layers\": [{\"type\": \"Linear\", \"in_features\": 3.0, "
                                   + "\"out_features\": 2, \"bias\": true, \"dtype\": \"float32\"}]}")
        }, contains: "in_features must be an integer")
        try assertLoadFails(try with {
            $0[2].array = NpyArray(string: "{\"type\": \"Sequential\", \"layers\": [{\"type\": \"MaxPool2d\", \"kernel_size\": [2, 2], "
                                   + "\"stride\": [0, 0], \"padding\": [0, 0]}]}")
            $0.removeSubrange(3...)
        }, contains: "layer 0 (MaxPool2d): MaxPool2d")
        let deep = String(repeating: "{\"type\": \"Sequential\", \"layers\": [", count: 70) + String(repeating: "]}", count: 70)
        try assertLoadFails(try with { $0[2].array = NpyArray(string: deep); $0.removeSubrange(3...) }, contains: "more than 64 deep")
        try assertLoadFails(try with { $0[2].array = NpyArray(string: "{\"type\": \"Linear\", \"in_features\": 3, \"out_features\": 2, "
                                                              + "\"bias\": false, \"dtype\": \"float32\"}") },
                            contains: "not a Sequential")
        assertThrowsKind(.value, contains: "cannot read \"\(path("missing.npz"))\"") { try Sequential<Float>.load(from: path("missing.npz")) }
        assertThrowsKind(.value, contains: "is a directory") { try Sequential<Float>.load(from: directory) }
        assertThrowsKind(.value, contains: "cannot create") {
            try Sequential<Float>(ReLU<Float>()).save(to: path("no/such/dir/m.npz"))
        }
    }

    func testCustomLayersCannotBeSaved() throws {
        final class Custom: Layer, @unchecked Sendable {
            typealias Scalar = Float
            func outputShape(forInput shape: [Int]) throws -> [Int] { shape }
            func forward(_ x: Tensor<Float>, returning result: ForwardResult) throws -> Tensor<Float> { try result.deliver(x) }
            var lastInputShape: [Int]? { nil }
            func backward(_ gradOut: Tensor<Float>) throws -> Tensor<Float> { gradOut }
            var parameters: [Parameter<Float>] { [] }
            func zeroGrad() throws {}
        }
        let model = try Sequential<Float>(ReLU<Float>(), Sequential<Float>(Custom()))
        assertThrowsKind(.type, contains: "layer 1.0 (Custom)") { try model.save(to: path("c.npz")) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("c.npz")))
    }

    func testIDXFiles() throws {
        try IDXFile.write(shape: [2, 2, 3], bytes: Array(0..<12), to: path("img"))
        let f = try IDXFile(path: path("img"))
        XCTAssertEqual(f.shape, [2, 2, 3])
        XCTAssertEqual(f.bytes, Array(0..<12))
        let raw = try FileIO.read(path("img"), op: "t")
        XCTAssertEqual(Array(raw[0..<8]), [0, 0, 8, 3, 0, 0, 0, 2])
        assertThrowsKind(.value, contains: "holds 11 data bytes") { try IDXFile(Array(raw.dropLast())) }
        assertThrowsKind(.value, contains: "bad magic") { try IDXFile([1, 2, 3, 4]) }
        assertThrowsKind(.value, contains: "gzipped") { try IDXFile([0x1F, 0x8B, 8, 0]) }
        assertThrowsKind(.value, contains: "not unsigned bytes") { try IDXFile([0, 0, 0x0D, 1, 0, 0, 0, 0]) }
    }
}
