@_spi(Engine) import SwiftCNN

/// `.npz` archives (what `np.savez` writes and `np.load` reads): a zip of `<name>.npy` members.
public enum NPZ {
    /// The arrays of the `.npz` file at `path`, in archive order, keyed by member name without
    /// ".npy". Reads stored members and deflated ones (`np.savez_compressed`), checking every
    /// CRC-32. Throws `.value` naming the file and the member for a missing, truncated, damaged or
    /// foreign file, a member that is not a `.npy`, or an unsupported dtype.
    public static func read(from path: String) throws -> [(name: String, array: NpyArray)] {
        let bytes = try FileIO.read(path, op: "NPZ.read")
        do {
            return try decode(bytes)
        } catch let error as SwiftCNNError {
            throw SwiftCNNError(error.kind, "NPZ.read: \"\(path)\": \(error.message)")
        }
    }

    /// The arrays of an `.npz` archive held in memory (see `read(from:)`); errors carry no file name.
    public static func decode(_ bytes: [UInt8]) throws -> [(name: String, array: NpyArray)] {
        var arrays: [(name: String, array: NpyArray)] = []
        for member in try Zip.read(bytes) {
            guard member.name.hasSuffix(".npy") else {
                throw SwiftCNNError.value("its entry \"\(member.name)\" is not a .npy array")
            }
            let key = String(member.name.dropLast(4))
            do {
                arrays.append((key, try NpyArray.decode(member.bytes)))
            } catch let error as SwiftCNNError {
                throw SwiftCNNError(error.kind, "its entry \"\(key)\": \(error.message)")
            }
        }
        return arrays
    }

    /// An `.npz` archive of `arrays` (stored members, CRC-32 written), as `np.savez(path, **arrays)`.
    public static func encode(_ arrays: [(name: String, array: NpyArray)]) throws -> [UInt8] {
        var seen = Set<String>()
        var members: [Zip.Member] = []
        for (name, array) in arrays {
            guard seen.insert(name).inserted else { throw SwiftCNNError.value("NPZ: the name \"\(name)\" appears more than once") }
            members.append(Zip.Member(name: name + ".npy", bytes: try array.encoded()))
        }
        return try Zip.write(members)
    }

    /// Writes `arrays` to exactly `path` as an `.npz`, atomically (a temporary file, then renamed).
    public static func write(_ arrays: [(name: String, array: NpyArray)], to path: String) throws {
        try FileIO.writeAtomically(try encode(arrays), to: path, op: "NPZ.write")
    }
}

/// The model file format of Python's `swiftcnn.save` / `swiftcnn.load` (version 1): an `.npz` with
/// `__format__` = "swiftcnn", `__format_version__` = 1 (int64), `__architecture__` (the JSON of
/// `Architecture`) as 0-d unicode arrays, then one array per parameter and buffer under its
/// state-dict name, in the model's dtype (`num_batches_tracked` as int64).
public enum ModelFile {
    public static let formatName = "swiftcnn"
    public static let formatVersion: Int64 = 1
    static let metaKeys = ["__format__", "__format_version__", "__architecture__"]

    /// The file's arrays for `model`.
    static func arrays<T: CNNScalar>(_ model: Sequential<T>) throws -> [(name: String, array: NpyArray)] {
        let spec = try Architecture.spec(model, at: "")
        var arrays: [(name: String, array: NpyArray)] = [
            ("__format__", NpyArray(string: formatName)),
            ("__format_version__", try NpyArray(shape: [], int64: [formatVersion])),
            ("__architecture__", NpyArray(string: spec.text)),
        ]
        for (name, value) in try model.stateDict() {
            switch value {
            case .floating(let t):
                arrays.append((name, try NpyArray(shape: t.shape, floating: t.scalars.map { Double($0) }, single: T.self == Float.self)))
            case .int64(let shape, let values):
                arrays.append((name, try NpyArray(shape: shape, int64: values)))
            }
        }
        return arrays
    }

    /// The model the file's arrays describe, with its weights, as `Sequential<T>` (weights of the
    /// file's other float dtype are converted, as Python's `load_state_dict` casts).
    static func model<T: CNNScalar>(_ arrays: [(name: String, array: NpyArray)], as _: T.Type) throws -> Sequential<T> {
        var byName: [String: NpyArray] = [:]
        for (name, array) in arrays { byName[name] = array }
        for key in metaKeys where byName[key] == nil {
            throw SwiftCNNError.value("it has no '\(key)' entry (not written by swiftcnn.save)")
        }
        guard byName["__format__"]?.scalarString == formatName else {
            throw SwiftCNNError.value("its '__format__' entry is not 'swiftcnn'")
        }
        guard let version = byName["__format_version__"]?.scalarInteger else {
            throw SwiftCNNError.value("its '__format_version__' entry is not an integer")
        }
        guard version == formatVersion else {
            throw SwiftCNNError.value(
                "it has format version \(version)\(version > formatVersion ? " (written by a newer swiftcnn)" : ""); this SwiftCNN reads version \(formatVersion)")
        }
        guard let text = byName["__architecture__"]?.scalarString else {
            throw SwiftCNNError.value("its '__architecture__' entry is not a string")
        }
        let spec = try JSON.parse(text)
        try Architecture.check(spec, "architecture", depth: 0)
        guard case .string("Sequential")? = spec["type"] else {
            let kind: String
            if case .string(let k)? = spec["type"] { kind = k } else { kind = "?" }
            throw SwiftCNNError.value("it holds a single \(kind), not a Sequential (load it with Python's swiftcnn.load)")
        }
        // Every array the architecture implies, with its shape and kind; nothing else.
        let expected = try Architecture.expectedParameters(spec, prefix: "")
        let expectedNames = Set(expected.map(\.0))
        let unexpected = arrays.map(\.name).filter { !metaKeys.contains($0) && !expectedNames.contains($0) }
        guard unexpected.isEmpty else {
            throw SwiftCNNError.value("it holds arrays the architecture has no place for: \(unexpected)")
        }
        var state = StateDict<T>()
        for (name, shape, integer) in expected {
            guard let array = byName[name] else { throw SwiftCNNError.value("the weights '\(name)' are missing") }
            switch (array.values, integer) {
            case (.floating(let v), false):
                guard array.shape == shape else {
                    throw SwiftCNNError.value(
                        "the weights '\(name)' have shape \(describeShape(array.shape)) but the architecture needs \(describeShape(shape))")
                }
                try state.append(name, .floating(try Tensor<T>(shape: shape, scalars: v.map { T($0) })))
            case (.integer(let v), true):
                guard array.shape == shape else {
                    throw SwiftCNNError.value(
                        "the weights '\(name)' have shape \(describeShape(array.shape)) but the architecture needs \(describeShape(shape))")
                }
                try state.append(name, .int64(shape: shape, values: v))
            default:
                throw SwiftCNNError.value("the weights '\(name)' have dtype \(array.dtype), not \(integer ? "an integer" : "a float") dtype")
            }
        }
        let model = try Architecture.build(spec, as: T.self, path: "")
        guard let sequential = model as? Sequential<T> else { throw SwiftCNNError.value("it does not describe a Sequential") }
        try sequential.loadStateDict(state)
        return sequential
    }
}

extension Sequential {
    /// Writes the architecture and the weights to one `.npz` file at exactly `path`, in the format
    /// of Python's `swiftcnn.save` (`swiftcnn.load(path)` in Python rebuilds the model with this
    /// dtype and these weights). The file is written atomically.
    ///
    /// Throws `.type` if the model holds a layer the format cannot describe (a user-defined
    /// `Layer`), `.value` if the file cannot be written (naming the path and the reason).
    public func save(to path: String) throws {
        let arrays: [(name: String, array: NpyArray)]
        do {
            arrays = try ModelFile.arrays(self)
        } catch let error as SwiftCNNError {
            throw SwiftCNNError(error.kind, "save: cannot save this model: \(error.message)")
        }
        try FileIO.writeAtomically(try NPZ.encode(arrays), to: path, op: "save")
    }

    /// Rebuilds the model saved at `path` by `save(to:)` or by Python's `swiftcnn.save`, with its
    /// weights (and BatchNorm running statistics), in training mode as a new model is.
    ///
    /// Never executes anything from the file. Throws `.value` naming the file and the problem for
    /// a missing file, a damaged or truncated archive, a failed CRC, a bad `.npy` header or dtype,
    /// invalid architecture JSON, or arrays whose names or shapes do not match the architecture.
    public static func load(from path: String) throws -> Sequential<T> {
        let bytes = try FileIO.read(path, op: "load")
        do {
            return try ModelFile.model(try NPZ.decode(bytes), as: T.self)
        } catch let error as SwiftCNNError {
            throw SwiftCNNError(error.kind, "load: \"\(path)\" is not a valid swiftcnn model file: \(error.message)")
        }
    }
}
