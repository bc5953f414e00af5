/// conv2d's forward, weight gradient and input gradient through the channel-lane direct kernels
/// (Kernels/ChannelLaneConv.swift), Float, stride 1, no dilation. Images run in parallel chunks,
/// each chunk with its own padded copy, scratch and partial weight gradient.

/// Whether the channel-lane kernels handle conv2d on this geometry at all.
@inlinable
func conv2dChannelLanesApply(_ g: Conv2DGeometry) -> Bool {
    g.strideH == 1 && g.strideW == 1 && g.dilationH == 1 && g.dilationW == 1 && g.batch > 0
        && conv2dChannelLaneShape(g).fitsInt32Offsets
}

/// Whether the forward (lanes over the K output channels) should take the channel-lane path:
/// when at least 3/4 of the lanes do useful work (LeNet's 16-channel layer, 64-channel layers).
@inlinable
func conv2dForwardUsesChannelLanes(_ g: Conv2DGeometry) -> Bool {
    conv2dChannelLanesApply(g) && channelLaneUse(g.outChannels) >= 0.75
}

/// Whether the input gradient (lanes over the C input channels, as a convolution of the padded
/// output gradient) should: C lanes well used, and padding below the kernel size (so the "full"
/// correlation needs a non-negative padding of g).
@inlinable
func conv2dGradInputUsesChannelLanes(_ g: Conv2DGeometry) -> Bool {
    conv2dChannelLanesApply(g) && channelLaneUse(g.inChannels) >= 0.75
        && g.padH <= g.kernelH - 1 && g.padW <= g.kernelW - 1
        && conv2dGradInputLaneShape(g).fitsInt32Offsets
}

@usableFromInline
func conv2dChannelLaneShape(_ g: Conv2DGeometry) -> ChannelLaneShape {
    ChannelLaneShape(inChannels: g.inChannels, paddedH: g.height + 2 * g.padH, paddedW: g.width + 2 * g.padW,
                     outChannels: g.outChannels, kernelH: g.kernelH, kernelW: g.kernelW)
}

/// dx as a convolution: input g padded by (kH-1-ph, kW-1-pw), K input channels, C output channels.
@usableFromInline
func conv2dGradInputLaneShape(_ g: Conv2DGeometry) -> ChannelLaneShape {
    ChannelLaneShape(inChannels: g.outChannels, paddedH: g.outH + 2 * (g.kernelH - 1 - g.padH),
                     paddedW: g.outW + 2 * (g.kernelW - 1 - g.padW),
                     outChannels: g.inChannels, kernelH: g.kernelH, kernelW: g.kernelW)
}

/// Image chunks for `work` flops over the batch.
@usableFromInline
func conv2dChannelLaneChunks(_ g: Conv2DGeometry, flopsPerImage: Double) -> Int {
    let work = Int(min(flopsPerImage * Double(g.batch), 1e15))
    return min(g.batch, parallelChunks(work: work, minPerThread: 1_000_000))
}

/// y = conv2d(x, weight, bias) for `conv2dForwardUsesChannelLanes` geometries. Throws `.memory`.
///
///     x (N, C, H, W), weight (K, C, kH, kW), bias (K) or nil  ->  y (N, K, Ho, Wo), overwritten
@usableFromInline
func conv2dForwardChannelLanes(_ g: Conv2DGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                               workspace: Workspace<Float>) throws {
    let s = conv2dChannelLaneShape(g)
    let taps = s.taps
    let offsets = try IndexBuffer(count: taps)
    channelLaneOffsets(s, into: offsets.pointer)
    let packed = try workspace.buffer(0, count: s.packedWeightCount)
    channelLanePackWeights(s, w: { k, t in weight[k * taps + t] }, into: packed)
    let chunks = conv2dChannelLaneChunks(g, flopsPerImage: 2 * Double(g.outChannels) * Double(g.colCount))
    var pads: [UnsafeMutablePointer<Float>] = [], scratches: [UnsafeMutablePointer<Float>] = []
    for chunk in 0..<chunks {
        pads.append(try workspace.buffer(1 + 2 * chunk, count: s.paddedCount))
        scratches.append(try workspace.buffer(2 + 2 * chunk, count: s.scratchCount))
    }
    let xStride = g.inChannels * g.height * g.width, yStride = g.outChannels * g.outH * g.outW
    parallelFor(chunks) { chunk in
        let xpad = pads[chunk]
        xpad.update(repeating: 0, count: s.paddedCount)   // borders and slack stay zero
        for n in chunkRange(chunk, of: chunks, total: g.batch) {
            channelLaneCopyPadded(s, src: x + n * xStride, height: g.height, width: g.width,
                                  top: g.padH, left: g.padW, dst: xpad)
            channelLaneForwardImage(s, xpad: xpad, packed: packed, offsets: offsets.pointer, bias: bias,
                                    y: y + n * yStride, scratch: scratches[chunk])
        }
    }
}

/// dw (and dx when `withGradX`) of conv2d for `conv2dChannelLanesApply` geometries (dx also needs
/// `conv2dGradInputUsesChannelLanes`). The bias gradient is the caller's. Throws `.memory`.
///
///     gradOut (N, K, Ho, Wo), x (N, C, H, W), weight (K, C, kH, kW)
///     -> gradWeight (K, C, kH, kW) overwritten or added to (`accumulate`); gradX (N, C, H, W) overwritten
@usableFromInline
func conv2dBackwardChannelLanes(_ g: Conv2DGeometry, gradOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                weight: UnsafePointer<Float>, gradX: UnsafeMutablePointer<Float>?,
                                gradWeight: UnsafeMutablePointer<Float>?, accumulate: Bool,
                                workspace: Workspace<Float>) throws {
    if gradX == nil && gradWeight == nil { return }
    let s = conv2dChannelLaneShape(g)            // x padded; lanes over K (dw)
    let sx = conv2dGradInputLaneShape(g)         // g padded; lanes over C (dx)
    let (K, C, kH, kW) = (g.outChannels, g.inChannels, g.kernelH, g.kernelW)
    let taps = s.taps, accCount = K * taps * 16
    var offsets: IndexBuffer? = nil, offsetsX: IndexBuffer? = nil
    var packedX: UnsafeMutablePointer<Float>? = nil
    if gradWeight != nil {
        offsets = try IndexBuffer(count: taps)
        channelLaneOffsets(s, into: offsets!.pointer)
    }
    if gradX != nil {
        offsetsX = try IndexBuffer(count: sx.taps)
        channelLaneOffsets(sx, into: offsetsX!.pointer)
        // w'[c][k, r, s] = w[k, c, kH-1-r, kW-1-s]: tap t = (k, r, s) of the dx convolution.
        let p = try workspace.buffer(0, count: sx.packedWeightCount)
        channelLanePackWeights(sx, w: { c, t in
            let (k, rs) = (t / (kH * kW), t % (kH * kW))
            let (r, col) = (rs / kW, rs % kW)
            return weight[((k * C + c) * kH + (kH - 1 - r)) * kW + (kW - 1 - col)]
        }, into: p)
        packedX = p
    }
    let flops = 2 * Double(K) * Double(g.colCount) * Double((gradX != nil ? 1 : 0) + (gradWeight != nil ? 1 : 0))
    let chunks = conv2dChannelLaneChunks(g, flopsPerImage: flops)
    // Per chunk: xpad + gT + dwᵀ partial (dw), gpad + scratch (dx).
    var xpads: [UnsafeMutablePointer<Float>] = [], gTs: [UnsafeMutablePointer<Float>] = []
    var partials: [UnsafeMutablePointer<Float>] = []
    var gpads: [UnsafeMutablePointer<Float>] = [], scratches: [UnsafeMutablePointer<Float>] = []
    for chunk in 0..<chunks {
        let base = 1 + 5 * chunk
        if gradWeight != nil {
            xpads.append(try workspace.buffer(base, count: s.paddedCountForWeight))
            gTs.append(try workspace.buffer(base + 1, count: s.gradRowsCount))
            partials.append(try workspace.buffer(base + 2, count: accCount + 16 * taps))   // + the dropped rows
        }
        if gradX != nil {
            gpads.append(try workspace.buffer(base + 3, count: sx.paddedCount))
            scratches.append(try workspace.buffer(base + 4, count: sx.scratchCount))
        }
    }
    let xStride = C * g.height * g.width, gStride = K * g.outH * g.outW
    parallelFor(chunks) { chunk in
        let images = chunkRange(chunk, of: chunks, total: g.batch)
        if let offsets {
            let xpad = xpads[chunk], gT = gTs[chunk], partial = partials[chunk]
            xpad.update(repeating: 0, count: s.paddedCountForWeight)
            gT.update(repeating: 0, count: s.gradRowsCount)
            partial.update(repeating: 0, count: accCount)
            for n in images {
                channelLaneCopyPadded(s, src: x + n * xStride, height: g.height, width: g.width,
                                      top: g.padH, left: g.padW, dst: xpad)
                weightGradSpreadRows(s, g: gradOut + n * gStride, gq: gT)
                weightGradImage(s, xpad: xpad, gq: gT, offsets: offsets.pointer, acc: partial,
                                dropped: partial + accCount)
            }
        }
        if let offsetsX, let packedX, let gradX {
            let gpad = gpads[chunk]
            gpad.update(repeating: 0, count: sx.paddedCount)
            for n in images {
                channelLaneCopyPadded(sx, src: gradOut + n * gStride, height: g.outH, width: g.outW,
                                      top: kH - 1 - g.padH, left: kW - 1 - g.padW, dst: gpad)
                channelLaneForwardImage(sx, xpad: gpad, packed: packedX, offsets: offsetsX.pointer, bias: nil,
                                        y: gradX + n * xStride, scratch: scratches[chunk])
            }
        }
    }
    if let gradWeight {
        // dw[k, t] (+)= the 16 lane sums of each chunk's acc[k][t], chunks in order.
        for i in 0..<(K * taps) {
            var sum: Float = accumulate ? gradWeight[i] : 0
            for chunk in 0..<chunks {
                sum += UnsafeRawPointer(partials[chunk] + i * 16).load(as: Lanes.self).sum()
            }
            gradWeight[i] = sum
        }
    }
}
