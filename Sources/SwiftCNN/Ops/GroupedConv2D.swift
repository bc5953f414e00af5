/// Grouped and "same"-padded convolution (API.md version 2: `Conv2d(groups=..., padding="same")`).
///
/// A convolution with `groups = G` splits the C input channels and the K output channels into G
/// groups; output group g sees only input group g:
///
///     y[n, g*Kg + k, i, j] = b[g*Kg + k] + sum_{c < Cg, r, s} x[n, g*Cg + c, i*sh - ph + r*dh, j*sw - pw + s*dw]
///                                                           * w[g*Kg + k, c, r, s]
///     Cg = C / G, Kg = K / G, weight (K, Cg, kH, kW)
///
/// so it is G independent convolutions, each the lecture's (and each one's gradients too: the input
/// gradient of group g is the full correlation of its output gradients with its rotated filters,
/// its weight gradient the correlation of its input channels with its output gradients). They run
/// through the ordinary kernels (`conv2dForward` / `conv2dBackward`) on each group's channels,
/// gathered into a contiguous buffer when G > 1. G = C = K (one filter per channel, stride 1, no
/// dilation) is a depthwise convolution and has its own kernels (Kernels/DepthwiseConv.swift).
///
/// "same" padding (stride 1) keeps the output size equal to the input size: the total padding of
/// an axis is d*(k-1); PyTorch puts floor(total/2) before and the rest after, so for an even
/// kernel span one extra row (column) of zeros goes at the bottom (right). That extra row is
/// materialized by gathering the input into a buffer one row longer; the rest is ordinary
/// symmetric padding.

/// How a convolution pads its input.
public enum ConvPadding: Equatable, Sendable {
    /// (h, w) zeros on each side.
    case explicit(Int, Int)
    /// Output size = input size (stride 1 only), the odd zero row/column at the bottom/right.
    case same
}

/// The validated geometry of a grouped / "same" convolution, and the plain geometry of one group.
public struct GroupedConv2DGeometry: Equatable, Sendable {
    public let batch, inChannels, height, width, outChannels, groups: Int
    /// Zeros added at the bottom / right beyond the symmetric padding ("same" with an even span).
    public let extraBottom, extraRight: Int
    /// One group's convolution: Cg input channels of a (H + extraBottom, W + extraRight) image.
    public let group: Conv2DGeometry

    public var inputShape: [Int] { [batch, inChannels, height, width] }
    public var outputShape: [Int] { [batch, outChannels, group.outH, group.outW] }
    public var weightShape: [Int] { [outChannels, inChannels / groups, group.kernelH, group.kernelW] }
    /// True when the plain kernels can run on the caller's tensors directly (no gathering).
    public var isPlain: Bool { groups == 1 && extraBottom == 0 && extraRight == 0 }

    /// Validates the convolution: everything `Conv2DGeometry` checks for one group, and groups >= 1
    /// dividing both channel counts, weight (K, C/G, kH, kW), "same" only with stride 1.
    public init(op: String, xShape: [Int], weightShape: [Int], biasLength: Int?, stride: (Int, Int),
                padding: ConvPadding, dilation: (Int, Int), groups: Int) throws {
        try requireRank(op, "x", xShape, 4, layout: "(N, C, H, W)")
        try requireRank(op, "weight", weightShape, 4, layout: "(out_channels, in_channels / groups, kH, kW)")
        guard groups >= 1 else { throw SwiftCNNError.value("\(op): groups must be >= 1, got \(groups)") }
        let (n, c, h, w) = (xShape[0], xShape[1], xShape[2], xShape[3])
        let (k, kh, kw) = (weightShape[0], weightShape[2], weightShape[3])
        guard c % groups == 0 else {
            throw SwiftCNNError.value("\(op): in_channels (\(c), from x \(describeShape(xShape))) must be divisible by groups (\(groups))")
        }
        guard k % groups == 0 else {
            throw SwiftCNNError.value("\(op): out_channels (\(k), from weight \(describeShape(weightShape))) must be divisible by groups (\(groups))")
        }
        guard weightShape[1] == c / groups else {
            throw SwiftCNNError.value(
                "\(op): weight must have \(c / groups) input channels per group (in_channels \(c) / groups \(groups)), got shape \(describeShape(weightShape))")
        }
        var pad = (0, 0), extra = (0, 0)
        switch padding {
        case .explicit(let ph, let pw):
            pad = (ph, pw)
        case .same:
            guard stride == (1, 1) else {
                throw SwiftCNNError.value("\(op): padding='same' needs stride 1, got stride (\(stride.0), \(stride.1))")
            }
            guard dilation.0 >= 1, dilation.1 >= 1, kh >= 1, kw >= 1 else {
                throw SwiftCNNError.value("\(op): dilation and kernel size must be >= 1, got dilation (\(dilation.0), \(dilation.1)), weight \(describeShape(weightShape))")
            }
            let total = (try checkedMultiply(dilation.0, kh - 1, what: "\(op): padding"),
                         try checkedMultiply(dilation.1, kw - 1, what: "\(op): padding"))
            pad = (total.0 / 2, total.1 / 2)
            extra = (total.0 - 2 * pad.0, total.1 - 2 * pad.1)
        }
        let biasLength = biasLength.map { $0 == k ? k / groups : -1 }
        if let biasLength, biasLength < 0 {
            throw SwiftCNNError.value("\(op): bias must have shape (\(k),) to match weight \(describeShape(weightShape))")
        }
        let hh = try checkedAdd(h, extra.0, what: "\(op): x height"), ww = try checkedAdd(w, extra.1, what: "\(op): x width")
        self.group = try Conv2DGeometry(op: op, x: (n, c / groups, h == 0 ? 0 : hh, w == 0 ? 0 : ww),
                                        weight: (k / groups, c / groups, kh, kw), biasLength: biasLength,
                                        stride: stride, padding: pad, dilation: dilation)
        var paddingText: String {
            if case .explicit(let ph, let pw) = padding { return "(\(ph), \(pw))" }
            return "'same'"
        }
        _ = try checkedElementCount([n, k, group.outH, group.outW, 8],
                                    what: "\(op): padding \(paddingText) with stride (\(stride.0), \(stride.1)) gives an output whose bytes")
        (batch, inChannels, height, width, outChannels, self.groups) = (n, c, h, w, k, groups)
        (extraBottom, extraRight) = extra
    }
}

/// Copies channels [c0, c0 + cg) of every image of x (N, C, H, W) into xg (N, cg, H + eb, W + er),
/// zero-filling the extra bottom rows and right columns.
@usableFromInline
func gatherGroup<T: CNNScalar>(_ g: GroupedConv2DGeometry, _ x: UnsafePointer<T>, firstChannel c0: Int,
                               into xg: UnsafeMutablePointer<T>) {
    let (cg, h, w) = (g.group.inChannels, g.height, g.width)
    let (hh, ww) = (g.group.height, g.group.width)
    if g.extraBottom != 0 || g.extraRight != 0 { xg.update(repeating: 0, count: g.batch * cg * hh * ww) }
    for n in 0..<g.batch {
        for c in 0..<cg {
            let src = x + ((n * g.inChannels + c0 + c) * h) * w
            let dst = xg + ((n * cg + c) * hh) * ww
            if ww == w {
                dst.update(from: src, count: h * w)
            } else {
                for i in 0..<h { (dst + i * ww).update(from: src + i * w, count: w) }
            }
        }
    }
}

/// The inverse of `gatherGroup` for a gradient: crops the extra rows/columns and writes channels
/// [c0, c0 + cg) of gradX.
@usableFromInline
func scatterGroupGradient<T: CNNScalar>(_ g: GroupedConv2DGeometry, _ gxg: UnsafePointer<T>, firstChannel c0: Int,
                                        into gradX: UnsafeMutablePointer<T>) {
    let (cg, h, w) = (g.group.inChannels, g.height, g.width)
    let ww = g.group.width, hh = g.group.height
    for n in 0..<g.batch {
        for c in 0..<cg {
            let src = gxg + ((n * cg + c) * hh) * ww
            let dst = gradX + ((n * g.inChannels + c0 + c) * h) * w
            for i in 0..<h { (dst + i * w).update(from: src + i * ww, count: w) }
        }
    }
}

/// Copies output channels [k0, k0 + kg) between a full (N, K, Ho, Wo) tensor and a group's
/// (N, kg, Ho, Wo) buffer, in the direction `toGroup`.
@usableFromInline
func copyOutputGroup<T: CNNScalar>(_ g: GroupedConv2DGeometry, full: UnsafeMutablePointer<T>, group: UnsafeMutablePointer<T>,
                                   firstChannel k0: Int, toGroup: Bool) {
    let kg = g.group.outChannels, plane = g.group.outH * g.group.outW
    for n in 0..<g.batch {
        let f = full + (n * g.outChannels + k0) * plane, p = group + n * kg * plane
        if toGroup { p.update(from: f, count: kg * plane) } else { f.update(from: p, count: kg * plane) }
    }
}

/// Forward of a grouped / "same" convolution into y (N, K, Ho, Wo).
///
///     x (N, C, H, W), weight (K, C/G, kH, kW), bias (K)? -> y (N, K, Ho, Wo)
@_spi(Engine) public func groupedConv2dForward<T: CNNScalar>(_ g: GroupedConv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                               bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>,
                                               workspace: Workspace<T>) throws {
    if g.isPlain {
        return try conv2dForward(g.group, x: x, weight: weight, bias: bias, y: y, workspace: workspace)
    }
    if depthwiseConvApplies(g) {   // one filter per channel: Kernels/DepthwiseConv.swift
        // Called with a concrete type so the SIMD8 kernel is specialized (generic SIMD is ~100x slower).
        if T.self == Float.self {
            return try depthwiseConv2dForward(g, x: cast(x, Float.self), weight: cast(weight, Float.self),
                                              bias: bias.map { cast($0, Float.self) }, y: castMutable(y, Float.self),
                                              workspace: unsafeDowncast(workspace.slots, to: ScratchSlots<Float>.self))
        }
        if T.self == Double.self {
            return try depthwiseConv2dForward(g, x: cast(x, Double.self), weight: cast(weight, Double.self),
                                              bias: bias.map { cast($0, Double.self) }, y: castMutable(y, Double.self),
                                              workspace: unsafeDowncast(workspace.slots, to: ScratchSlots<Double>.self))
        }
        return try depthwiseConv2dForward(g, x: x, weight: weight, bias: bias, y: y, workspace: workspace.slots)
    }
    let gi = g.group
    let xg = try Tensor<T>(zeros: [gi.batch, gi.inChannels, gi.height, gi.width])
    let yg = try Tensor<T>(zeros: [gi.batch, gi.outChannels, gi.outH, gi.outW])
    for group in 0..<g.groups {
        gatherGroup(g, x, firstChannel: group * gi.inChannels, into: xg.pointer)
        try conv2dForward(gi, x: xg.pointer, weight: weight + group * gi.outChannels * gi.colRows,
                          bias: bias.map { $0 + group * gi.outChannels }, y: yg.pointer, workspace: workspace)
        copyOutputGroup(g, full: y, group: yg.pointer, firstChannel: group * gi.outChannels, toGroup: false)
    }
}

/// Backward of a grouped / "same" convolution: each group's gradients by the ordinary backward.
///
///     gradOut (N, K, Ho, Wo) -> gradX (N, C, H, W)?, gradWeight (K, C/G, kH, kW)?, gradBias (K)?
/// With `accumulate`, gradWeight and gradBias are added into (layers); gradX is always written.
@_spi(Engine) public func groupedConv2dBackward<T: CNNScalar>(_ g: GroupedConv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                                weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                                gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                                accumulate: Bool, workspace: Workspace<T>) throws {
    if g.isPlain {
        return try conv2dBackward(g.group, gradOut: gradOut, x: x, weight: weight, gradX: gradX, gradWeight: gradWeight,
                                  gradBias: gradBias, accumulate: accumulate, workspace: workspace)
    }
    if depthwiseConvApplies(g) {
        if T.self == Float.self {
            return try depthwiseConv2dBackward(g, gradOut: cast(gradOut, Float.self), x: cast(x, Float.self),
                                               weight: cast(weight, Float.self), gradX: gradX.map { castMutable($0, Float.self) },
                                               gradWeight: gradWeight.map { castMutable($0, Float.self) },
                                               gradBias: gradBias.map { castMutable($0, Float.self) }, accumulate: accumulate,
                                               workspace: unsafeDowncast(workspace.slots, to: ScratchSlots<Float>.self))
        }
        if T.self == Double.self {
            return try depthwiseConv2dBackward(g, gradOut: cast(gradOut, Double.self), x: cast(x, Double.self),
                                               weight: cast(weight, Double.self), gradX: gradX.map { castMutable($0, Double.self) },
                                               gradWeight: gradWeight.map { castMutable($0, Double.self) },
                                               gradBias: gradBias.map { castMutable($0, Double.self) }, accumulate: accumulate,
                                               workspace: unsafeDowncast(workspace.slots, to: ScratchSlots<Double>.self))
        }
        return try depthwiseConv2dBackward(g, gradOut: gradOut, x: x, weight: weight, gradX: gradX, gradWeight: gradWeight,
                                           gradBias: gradBias, accumulate: accumulate, workspace: workspace.slots)
    }
    let gi = g.group
    let xg = try Tensor<T>(zeros: [gi.batch, gi.inChannels, gi.height, gi.width])
    let gyg = try Tensor<T>(zeros: [gi.batch, gi.outChannels, gi.outH, gi.outW])
    let gxg = gradX == nil ? nil : try Tensor<T>(zeros: [gi.batch, gi.inChannels, gi.height, gi.width])
    for group in 0..<g.groups {
        gatherGroup(g, x, firstChannel: group * gi.inChannels, into: xg.pointer)
        copyOutputGroup(g, full: UnsafeMutablePointer(mutating: gradOut), group: gyg.pointer,
                        firstChannel: group * gi.outChannels, toGroup: true)
        try conv2dBackward(gi, gradOut: gyg.pointer, x: xg.pointer, weight: weight + group * gi.outChannels * gi.colRows,
                           gradX: gxg?.pointer, gradWeight: gradWeight.map { $0 + group * gi.outChannels * gi.colRows },
                           gradBias: gradBias.map { $0 + group * gi.outChannels }, accumulate: accumulate,
                           workspace: workspace)
        if let gxg, let gradX {
            scatterGroupGradient(g, gxg.pointer, firstChannel: group * gi.inChannels, into: gradX)
        }
    }
}

/// p reinterpreted as pointing to U (the caller has checked that T is U).
@inline(__always) private func cast<T, U>(_ p: UnsafePointer<T>, _: U.Type) -> UnsafePointer<U> {
    UnsafeRawPointer(p).assumingMemoryBound(to: U.self)
}

@inline(__always) private func castMutable<T, U>(_ p: UnsafeMutablePointer<T>, _: U.Type) -> UnsafeMutablePointer<U> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: U.self)
}
