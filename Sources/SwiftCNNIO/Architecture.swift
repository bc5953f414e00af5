@_spi(Engine) import SwiftCNN

/// The architecture entry of a model file: the JSON description Python's `Module._spec()` writes
/// (python/swiftcnn/serialization.py, format version 1), built from a Swift layer tree and back.
///
///     {"type": "Sequential", "layers": [{"type": "Conv2d", "in_channels": 1, "out_channels": 6,
///      "kernel_size": [5, 5], "stride": [1, 1], "padding": [2, 2], "dilation": [1, 1],
///      "groups": 1, "bias": true, "dtype": "float32"}, {"type": "Sigmoid"}, ...]}
///
/// Reading checks what Python's `_check_spec` checks (known types, exactly the required fields,
/// field types), then the layer initializers check the values.
enum Architecture {
    static let maxNesting = 64

    /// Layer type -> its settings (all required, no others allowed), as Python's `_LAYER_FIELDS`.
    static let fields: [String: [String]] = [
        "Conv2d": ["in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias", "dtype"],
        "Linear": ["in_features", "out_features", "bias", "dtype"],
        "MaxPool2d": ["kernel_size", "stride", "padding"],
        "AvgPool2d": ["kernel_size", "stride", "padding"],
        "Sigmoid": [], "ReLU": [], "Flatten": [], "Tanh": [],
        "LeakyReLU": ["negative_slope"],
        "AdaptiveAvgPool2d": ["output_size"],
        "Dropout": ["p"],
        "BatchNorm1d": ["num_features", "eps", "momentum", "affine", "track_running_stats", "dtype"],
        "BatchNorm2d": ["num_features", "eps", "momentum", "affine", "track_running_stats", "dtype"],
        "Sequential": ["layers"],
        "Residual": ["layers"],
    ]

    // MARK: Swift layers -> JSON

    static func pair(_ p: (Int, Int)) -> JSON { .array([.integer(Int64(p.0)), .integer(Int64(p.1))]) }

    /// The description of `layer`; throws `.type` for a layer type the format has no entry for
    /// (a user-defined `Layer`), naming its position.
    static func spec<T: CNNScalar>(_ layer: any Layer<T>, at path: String) throws -> JSON {
        let dtype = JSON.string(T.dtype.description)
        func object(_ type: String, _ settings: [(String, JSON)]) -> JSON { .object([("type", .string(type))] + settings) }
        switch layer {
        case let s as Sequential<T>:
            return object("Sequential", [("layers", .array(try children(s.layers, path)))])
        case let r as Residual<T>:
            return object("Residual", [("layers", .array(try children(r.layers, path)))])
        case let c as Conv2d<T>:
            return object("Conv2d", [
                ("in_channels", .integer(Int64(c.inChannels))), ("out_channels", .integer(Int64(c.outChannels))),
                ("kernel_size", pair(c.kernelSize)), ("stride", pair(c.stride)), ("padding", pair(c.padding)),
                ("dilation", pair(c.dilation)), ("groups", .integer(1)), ("bias", .bool(c.bias != nil)), ("dtype", dtype),
            ])
        case let c as GroupedConv2d<T>:
            let padding: JSON
            switch c.padding {
            case .same: padding = .string("same")
            case .explicit(let h, let w): padding = pair((h, w))
            }
            return object("Conv2d", [
                ("in_channels", .integer(Int64(c.inChannels))), ("out_channels", .integer(Int64(c.outChannels))),
                ("kernel_size", pair(c.kernelSize)), ("stride", pair(c.stride)), ("padding", padding),
                ("dilation", pair(c.dilation)), ("groups", .integer(Int64(c.groups))), ("bias", .bool(c.bias != nil)),
                ("dtype", dtype),
            ])
        case let l as Linear<T>:
            return object("Linear", [
                ("in_features", .integer(Int64(l.inFeatures))), ("out_features", .integer(Int64(l.outFeatures))),
                ("bias", .bool(l.bias != nil)), ("dtype", dtype),
            ])
        case let p as MaxPool2d<T>:
            return object("MaxPool2d", [("kernel_size", pair(p.kernelSize)), ("stride", pair(p.stride)), ("padding", pair(p.padding))])
        case let p as AvgPool2d<T>:
            return object("AvgPool2d", [("kernel_size", pair(p.kernelSize)), ("stride", pair(p.stride)), ("padding", pair(p.padding))])
        case is Sigmoid<T>: return object("Sigmoid", [])
        case is ReLU<T>: return object("ReLU", [])
        case is Flatten<T>: return object("Flatten", [])
        case is Tanh<T>: return object("Tanh", [])
        case let l as LeakyReLU<T>: return object("LeakyReLU", [("negative_slope", .number(l.negativeSlope))])
        case let a as AdaptiveAvgPool2d<T>: return object("AdaptiveAvgPool2d", [("output_size", pair(a.outputSize))])
        case let d as Dropout<T>: return object("Dropout", [("p", .number(d.p))])
        case let b as BatchNorm<T>:
            return object(b.kind.description, [
                ("num_features", .integer(Int64(b.numFeatures))), ("eps", .number(b.eps)),
                ("momentum", b.momentum.map { JSON.number($0) } ?? .null), ("affine", .bool(b.weight != nil)),
                ("track_running_stats", .bool(b.runningMean != nil)), ("dtype", dtype),
            ])
        default:
            throw SwiftCNNError.type(
                "layer \(path.isEmpty ? "(the model)" : path) (\(type(of: layer))) is not one of SwiftCNN's layers, which the model file format describes")
        }
    }

    static func children<T: CNNScalar>(_ layers: [any Layer<T>], _ path: String) throws -> [JSON] {
        try layers.enumerated().map { i, l in try spec(l, at: path.isEmpty ? "\(i)" : "\(path).\(i)") }
    }

    // MARK: JSON -> checks

    /// Python's `_check_spec`: structure and field types of one description (values: the initializers).
    static func check(_ spec: JSON, _ where_: String, depth: Int) throws {
        guard depth <= maxNesting else {
            throw SwiftCNNError.value("the architecture nests Sequentials more than \(maxNesting) deep")
        }
        guard case .object(let fieldList) = spec, case .string(let kind)? = spec["type"] else {
            throw SwiftCNNError.value("\(where_) is not a layer description (a JSON object with a 'type')")
        }
        guard let required = fields[kind] else {
            throw SwiftCNNError.value("\(where_) has unknown layer type '\(kind)'")
        }
        let present = fieldList.map(\.0).filter { $0 != "type" }
        var missing = required.filter { !present.contains($0) }
        if kind == "Conv2d" { missing.removeAll { $0 == "groups" } }  // files written before groups existed
        let unknown = present.filter { !required.contains($0) }.sorted()
        guard missing.isEmpty, unknown.isEmpty else {
            throw SwiftCNNError.value("\(where_) (\(kind)) has missing fields \(missing) or unknown fields \(unknown)")
        }
        for (key, value) in fieldList where key != "type" {
            func bad(_ what: String) -> SwiftCNNError {
                SwiftCNNError.value("\(where_) (\(kind)): \(key) must be \(what), got \(value.text)")
            }
            switch key {
            case "in_channels", "out_channels", "in_features", "out_features", "num_features", "groups":
                guard case .integer = value else { throw bad("an integer") }
            case "kernel_size", "stride", "padding", "dilation", "output_size":
                if key == "padding", case .string(let s) = value, s == "same" || s == "valid", kind == "Conv2d" { continue }
                guard case .array(let items) = value, items.count == 2,
                      items.allSatisfy({ if case .integer = $0 { return true } else { return false } }) else {
                    throw bad("a pair of integers")
                }
            case "bias", "affine", "track_running_stats":
                guard case .bool = value else { throw bad("true or false") }
            case "negative_slope", "p", "eps":
                switch value {
                case .integer, .number: break
                default: throw bad("a number")
                }
            case "momentum":
                switch value {
                case .integer, .number, .null: break
                default: throw bad("a number or null")
                }
            case "dtype":
                guard value == .string("float32") || value == .string("float64") else { throw bad("'float32' or 'float64'") }
            case "layers":
                guard case .array(let children) = value else { throw bad("a list") }
                for (i, child) in children.enumerated() { try check(child, "\(where_) layer \(i)", depth: depth + 1) }
            default:
                break
            }
        }
    }

    // MARK: JSON -> Swift layers (after `check`)

    static func int(_ spec: JSON, _ key: String) throws -> Int {
        guard case .integer(let v)? = spec[key], let i = Int(exactly: v) else {
            throw SwiftCNNError.value("field \(key) is not an integer")
        }
        return i
    }

    static func pairValue(_ spec: JSON, _ key: String) throws -> (Int, Int) {
        guard case .array(let items)? = spec[key], items.count == 2,
              case .integer(let a) = items[0], case .integer(let b) = items[1],
              let x = Int(exactly: a), let y = Int(exactly: b) else {
            throw SwiftCNNError.value("field \(key) is not a pair of integers")
        }
        return (x, y)
    }

    static func real(_ spec: JSON, _ key: String) throws -> Double? {
        switch spec[key] {
        case .integer(let v)?: return Double(v)
        case .number(let d)?: return d
        default: return nil
        }
    }

    static func bool(_ spec: JSON, _ key: String) -> Bool {
        if case .bool(let b)? = spec[key] { return b }
        return false
    }

    /// The layer a checked description describes, with its default (seed 0) initialization: the
    /// weights are loaded next. Layer errors are prefixed with the layer's position.
    static func build<T: CNNScalar>(_ spec: JSON, as _: T.Type, path: String) throws -> any Layer<T> {
        guard case .string(let kind)? = spec["type"] else { throw SwiftCNNError.value("a layer description has no type") }
        do {
            switch kind {
            case "Sequential", "Residual":
                guard case .array(let items)? = spec["layers"] else { throw SwiftCNNError.value("layers is not a list") }
                let layers = try items.enumerated().map { i, child in
                    try build(child, as: T.self, path: path.isEmpty ? "\(i)" : "\(path).\(i)")
                }
                return kind == "Sequential" ? try Sequential<T>(layers) : try Residual<T>(layers)
            case "Conv2d":
                let groups = spec["groups"] == nil ? 1 : try int(spec, "groups")
                let (inC, outC) = (try int(spec, "in_channels"), try int(spec, "out_channels"))
                let (k, s, d) = (try pairValue(spec, "kernel_size"), try pairValue(spec, "stride"), try pairValue(spec, "dilation"))
                let bias = bool(spec, "bias")
                var padding = ConvPadding.explicit(0, 0)
                if case .string(let text)? = spec["padding"] {
                    if text == "same" { padding = .same }
                } else {
                    let p = try pairValue(spec, "padding")
                    padding = .explicit(p.0, p.1)
                }
                if groups == 1, case .explicit(let ph, let pw) = padding {
                    return try Conv2d<T>(inChannels: inC, outChannels: outC, kernelSize: k, stride: s, padding: (ph, pw),
                                         dilation: d, bias: bias, seed: 0)
                }
                return try GroupedConv2d<T>(inChannels: inC, outChannels: outC, kernelSize: k, stride: s, padding: padding,
                                            dilation: d, groups: groups, bias: bias, seed: 0)
            case "Linear":
                return try Linear<T>(inFeatures: try int(spec, "in_features"), outFeatures: try int(spec, "out_features"),
                                     bias: bool(spec, "bias"), seed: 0)
            case "MaxPool2d":
                return try MaxPool2d<T>(kernelSize: try pairValue(spec, "kernel_size"), stride: try pairValue(spec, "stride"),
                                        padding: try pairValue(spec, "padding"))
            case "AvgPool2d":
                return try AvgPool2d<T>(kernelSize: try pairValue(spec, "kernel_size"), stride: try pairValue(spec, "stride"),
                                        padding: try pairValue(spec, "padding"))
            case "Sigmoid": return Sigmoid<T>()
            case "ReLU": return ReLU<T>()
            case "Flatten": return Flatten<T>()
            case "Tanh": return Tanh<T>()
            case "LeakyReLU": return LeakyReLU<T>(negativeSlope: try real(spec, "negative_slope") ?? 0.01)
            case "AdaptiveAvgPool2d": return try AdaptiveAvgPool2d<T>(outputSize: try pairValue(spec, "output_size"))
            case "Dropout": return try Dropout<T>(p: try real(spec, "p") ?? 0.5, seed: 0)
            case "BatchNorm1d", "BatchNorm2d":
                return try BatchNorm<T>(kind == "BatchNorm1d" ? .batchNorm1d : .batchNorm2d, numFeatures: try int(spec, "num_features"),
                                        eps: try real(spec, "eps") ?? 1e-5, momentum: try real(spec, "momentum"),
                                        affine: bool(spec, "affine"), trackRunningStats: bool(spec, "track_running_stats"))
            default:
                throw SwiftCNNError.value("unknown layer type '\(kind)'")
            }
        } catch let error as SwiftCNNError where !(kind == "Sequential" || kind == "Residual") {
            throw SwiftCNNError(error.kind, "layer \(path) (\(kind)): \(error.message)")
        }
    }

    /// `{state-dict name: (shape, integer?)}` the architecture implies, in order, without building it
    /// (Python's `_expected_parameters`).
    static func expectedParameters(_ spec: JSON, prefix: String) throws -> [(String, [Int], Bool)] {
        guard case .string(let kind)? = spec["type"] else { return [] }
        let layerName = prefix.isEmpty ? kind : String(prefix.dropLast())
        switch kind {
        case "Sequential", "Residual":
            guard case .array(let items)? = spec["layers"] else { return [] }
            var out: [(String, [Int], Bool)] = []
            for (i, child) in items.enumerated() { out += try expectedParameters(child, prefix: "\(prefix)\(i).") }
            return out
        case "BatchNorm1d", "BatchNorm2d":
            let c = try int(spec, "num_features")
            guard c >= 1 else { throw SwiftCNNError.value("layer \(layerName) has num_features < 1: \(c)") }
            var out: [(String, [Int], Bool)] = []
            if bool(spec, "affine") { out += [(prefix + "weight", [c], false), (prefix + "bias", [c], false)] }
            if bool(spec, "track_running_stats") {
                out += [(prefix + "running_mean", [c], false), (prefix + "running_var", [c], false),
                        (prefix + "num_batches_tracked", [], true)]
            }
            return out
        case "Conv2d":
            let groups = spec["groups"] == nil ? 1 : try int(spec, "groups")
            let (inC, outC) = (try int(spec, "in_channels"), try int(spec, "out_channels"))
            guard groups >= 1, inC % groups == 0 else {
                throw SwiftCNNError.value("layer \(layerName) has groups \(groups) that do not divide in_channels \(inC)")
            }
            let k = try pairValue(spec, "kernel_size")
            let weight = [outC, inC / groups, k.0, k.1]
            guard weight.min()! >= 1 else { throw SwiftCNNError.value("layer \(layerName) has a size < 1: \(describeShape(weight))") }
            return [(prefix + "weight", weight, false)] + (bool(spec, "bias") ? [(prefix + "bias", [outC], false)] : [])
        case "Linear":
            let weight = [try int(spec, "out_features"), try int(spec, "in_features")]
            guard weight.min()! >= 1 else { throw SwiftCNNError.value("layer \(layerName) has a size < 1: \(describeShape(weight))") }
            return [(prefix + "weight", weight, false)] + (bool(spec, "bias") ? [(prefix + "bias", [weight[0]], false)] : [])
        default:
            return []
        }
    }
}
