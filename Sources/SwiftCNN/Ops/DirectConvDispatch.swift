/// The direct-convolution dispatch: conv2d's forward, weight gradient and input gradient through the
/// direct kernels (Kernels/DirectConv*.swift: channel lanes, position lanes, weight gradient, scatter),
/// Float, stride 1, no dilation, chosen by how full their register blocks are. Images run in parallel chunks,
/// each chunk with its own padded copy, scratch and partial weight gradient.

/// Whether the channel-lane kernels handle conv2d on this geometry at all.
@inlinable
func conv2dChannelLanesApply(_ g: Conv2DGeometry) -> Bool {
    g.strideH == 1 && g.strideW == 1 && g.dilationH == 1 && g.dilationW == 1 && g.batch > 0
        && conv2dDirectConvShape(g).fitsInt32Offsets
}

/// Which direct kernel computes the forward, if any.
@usableFromInline
enum Conv2DForwardKernel {
    case other
    /// Lanes over the K output channels, 12 positions per block.
    case channelLanes
    /// Lanes over positions, 6 output channels × 64 positions per block.
    case positionLanes
    /// Winograd F(2x2, 3x3), Float and Double (Kernels/Winograd.swift, chosen by `conv2dUsesWinograd`).
    case winograd
}

/// The forward kernel for this geometry, from measured throughput (bench/run.py figures 2-3, one
/// core): the position-lane block (10 loads per 24 multiply-adds, like the GEMM's micro-kernel) runs
/// at about twice the channel-lane block's rate (14 loads per 12), so it is preferred whenever its
/// 6-channel rows and 64-position blocks are mostly filled; the channel-lane block wins when the
/// span is short (LeNet's 10 x 10 output: 136 positions fill three 64-blocks to 71%, twelve
/// 12-blocks to 94%) and K fills its 16 lanes.
@inlinable
func conv2dForwardKernel(_ g: Conv2DGeometry) -> Conv2DForwardKernel {
    if conv2dUsesWinograd(g) { return .winograd }
    guard conv2dChannelLanesApply(g) else { return .other }
    return directConvKernel(conv2dDirectConvShape(g))
}

/// The better-filled of the two direct kernels for a convolution of this shape, or .other when
/// both would waste more than a quarter of their work (see `conv2dForwardKernel`).
@usableFromInline
func directConvKernel(_ s: DirectConvShape) -> Conv2DForwardKernel {
    let positionFill = s.positionFill
    let channelFill = channelLaneUse(s.outChannels) * Double(s.span)
        / Double((s.span + channelLanePixels - 1) / channelLanePixels * channelLanePixels)
    if positionFill >= 0.75 && positionFill >= 0.8 * channelFill { return .positionLanes }
    if channelFill >= 0.75 { return .channelLanes }
    return .other
}

/// How the input gradient is computed as a convolution of the padded output gradient (which needs
/// padding below the kernel size, so that g's padding is non-negative).
@usableFromInline
enum Conv2DGradInputKernel {
    /// Not by these kernels (row-direct or GEMM + col2im instead).
    case other
    /// Lanes over the C input channels.
    case channelLanes
    /// Lanes over positions, 6 channels per block, or one channel per block when C < 3 (LeNet's
    /// first layer). Chosen as for the forward, by `directConvKernel` on the dx convolution's shape.
    case positionLanes
    /// Scattering the forward's positions (Kernels/DirectConvScatterGradInput.swift, 6 channels x 48
    /// positions): when it does fewer multiply-adds than the padded correlation (LeNet's second
    /// layer, C = 6: about 40% fewer; the GEMM + col2im route it replaced was a fifth of the
    /// network's training step).
    case scatter
    /// Winograd F(2x2, 3x3) over g with the rotated filter, Float and Double (`winogradConv2dGradInput`).
    case winograd
}

@inlinable
func conv2dGradInputKernel(_ g: Conv2DGeometry) -> Conv2DGradInputKernel {
    if conv2dUsesWinograd(g) && g.padH <= 2 && g.padW <= 2 { return .winograd }
    guard conv2dChannelLanesApply(g), g.padH <= g.kernelH - 1, g.padW <= g.kernelW - 1,
          conv2dGradInputLaneShape(g).fitsInt32Offsets else { return .other }
    let sx = conv2dGradInputLaneShape(g), s = conv2dDirectConvShape(g)
    let correlation: Conv2DGradInputKernel
    switch directConvKernel(sx) {
    case .positionLanes: correlation = .positionLanes
    case .channelLanes: correlation = .channelLanes
    case .other, .winograd: correlation = .other   // (directConvKernel never returns .winograd)
    }
    // Vector multiply-adds per image: the scatter's (+1/K for its additions into dx), the position
    // correlation's, and the channel correlation's weighted by 1.6 (its block runs at about 1/1.6
    // of the position blocks' rate: bench/run.py figures 2-3 and a kernel micro-benchmark).
    guard g.inChannels >= 3, s.fitsInt32Offsets else { return correlation }
    let channelRows = Double((g.inChannels + 5) / 6 * 6)
    let taps = Double(g.outChannels * g.kernelH * g.kernelW)
    let scatterCost = channelRows * taps * Double(s.scatterBlocks * 3) * (1 + 1 / Double(g.outChannels))
    let correlationCost: Double
    switch correlation {
    case .positionLanes:
        correlationCost = Double(sx.positionChannelBlocks * sx.positionRows) * taps * Double(sx.positionBlocks * sx.positionWidth / 16)
    case .channelLanes:
        correlationCost = 1.6 * Double(sx.groups) * taps * Double((sx.span + channelLanePixels - 1) / channelLanePixels * channelLanePixels)
    default: correlationCost = .infinity
    }
    if positionLaneUse(g.inChannels) >= 0.75 && scatterCost < correlationCost { return .scatter }
    return correlation
}

@usableFromInline
func conv2dDirectConvShape(_ g: Conv2DGeometry) -> DirectConvShape {
    DirectConvShape(inChannels: g.inChannels, paddedH: g.height + 2 * g.padH, paddedW: g.width + 2 * g.padW,
                     outChannels: g.outChannels, kernelH: g.kernelH, kernelW: g.kernelW)
}

/// dx as a convolution: input g padded by (kH-1-ph, kW-1-pw), K input channels, C output channels.
@usableFromInline
func conv2dGradInputLaneShape(_ g: Conv2DGeometry) -> DirectConvShape {
    DirectConvShape(inChannels: g.outChannels, paddedH: g.outH + 2 * (g.kernelH - 1 - g.padH),
                     paddedW: g.outW + 2 * (g.kernelW - 1 - g.padW),
                     outChannels: g.inChannels, kernelH: g.kernelH, kernelW: g.kernelW)
}

/// y = conv2d(x, weight, bias) for geometries with a `conv2dForwardKernel`. Throws `.memory`.
///
///     x (N, C, H, W), weight (K, C, kH, kW), bias (K) or nil  ->  y (N, K, Ho, Wo), overwritten
@usableFromInline
func conv2dForwardChannelLanes(_ g: Conv2DGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                               epilogue: ConvEpilogue = .none, workspace: ScratchSlots<Float>) throws {
    let s = conv2dDirectConvShape(g)
    let taps = s.taps
    let positions = conv2dForwardKernel(g) == .positionLanes
    let offsets = try IndexBuffer(count: taps, what: "conv2d: tap offsets")
    directConvOffsets(s, into: offsets.pointer)
    let packed = try workspace.buffer(0, count: positions ? s.positionPackedCount : s.packedWeightCount)
    if positions {
        positionLanePackWeights(s, w: { k, t in weight[k * taps + t] }, into: packed)
    } else {
        channelLanePackWeights(s, w: { k, t in weight[k * taps + t] }, into: packed)
    }
    let padCount = s.paddedCount
    let scratchCount = positions ? s.positionScratchCount : s.scratchCount
    // Finer chunks than threads (each output is computed by one chunk, so the count does not change
    // results), taken dynamically; padded copies and scratch per thread, not per chunk.
    let flopsPerImage = 2 * Double(g.outChannels) * Double(g.colCount)
    let chunks = parallelFineChunks(work: Int(min(flopsPerImage * Double(g.batch), 1e15)), units: g.batch,
                                    minPerChunk: 1_000_000)
    let workers = parallelWorkers(chunks)
    var pads: [UnsafeMutablePointer<Float>] = [], scratches: [UnsafeMutablePointer<Float>] = []
    for worker in 0..<workers {
        pads.append(try workspace.buffer(1 + 2 * worker, count: padCount))
        scratches.append(try workspace.buffer(2 + 2 * worker, count: scratchCount))
    }
    let xStride = g.inChannels * g.height * g.width, yStride = g.outChannels * g.outH * g.outW
    let unpadded = g.padH == 0 && g.padW == 0
    let zeroed = UnsafeMutablePointer<Bool>.allocate(capacity: workers)
    zeroed.initialize(repeating: false, count: workers)
    defer { zeroed.deallocate() }
    parallelForWorkers(chunks, workers: workers) { chunk, worker in
        let xpad = pads[worker]
        for n in chunkRange(chunk, of: chunks, total: g.batch) {
            // Unpadded images are read in place while the reads past the image (the slack, whose
            // results are dropped) stay inside x: all but the last image or so.
            var image = UnsafePointer(xpad)
            if unpadded && (n + 1) * xStride + directConvSlack <= g.batch * xStride {
                image = x + n * xStride
            } else {
                if !zeroed[worker] {   // borders and slack stay zero
                    xpad.update(repeating: 0, count: padCount)
                    zeroed[worker] = true
                }
                directConvCopyPadded(s, src: x + n * xStride, height: g.height, width: g.width,
                                      top: g.padH, left: g.padW, dst: xpad)
            }
            if positions {
                positionLaneForwardImage(s, xpad: image, packed: packed, offsets: offsets.pointer, bias: bias,
                                         y: y + n * yStride, scratch: scratches[worker])
            } else {
                channelLaneForwardImage(s, xpad: image, packed: packed, offsets: offsets.pointer, bias: bias,
                                        y: y + n * yStride, scratch: scratches[worker])
            }
            applyEpilogue(epilogue, y + n * yStride, count: yStride)
        }
    }
}


/// dw and dx of conv2d for `conv2dChannelLanesApply` geometries (a non-nil gradX also needs
/// `conv2dGradInputKernel(g) != .other`). Throws `.memory`.
///
///     gradOut (N, K, Ho, Wo), x (N, C, H, W), weight (K, C, kH, kW)
///     -> gradWeight (K, C, kH, kW) and gradBias (K) overwritten or added to (`accumulate`);
///        gradX (N, C, H, W) overwritten
///
/// db[k] = sum over images of each image's plane sum (`contiguousSum`), per image chunk, chunks in
/// order, taken while the image's g is in cache for the other two gradients.
///
/// Images run in parallel chunks; within a chunk, in groups (`weightGradImagesPerGroup`) whose
/// output gradients are spread to the padded width once for both dw and a scattered dx.
@usableFromInline
func conv2dBackwardChannelLanes(_ g: Conv2DGeometry, gradOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                weight: UnsafePointer<Float>, gradX: UnsafeMutablePointer<Float>?,
                                gradWeight: UnsafeMutablePointer<Float>?, gradBias: UnsafeMutablePointer<Float>?,
                                accumulate: Bool, workspace: ScratchSlots<Float>) throws {
    if gradX == nil && gradWeight == nil && gradBias == nil { return }
    let s = conv2dDirectConvShape(g)            // x padded: the forward's positions
    let sx = conv2dGradInputLaneShape(g)         // g padded: dx as a "full" correlation
    let (K, C, kH, kW) = (g.outChannels, g.inChannels, g.kernelH, g.kernelW)
    let taps = s.taps, accCount = K * taps * 16
    let xKernel = gradX == nil ? .other : conv2dGradInputKernel(g)
    // The caller checks (Winograd geometries go to conv2dBackwardWinograd); an error rather than a
    // trap, or a dx left unwritten, if it did not.
    if gradX != nil && (xKernel == .other || xKernel == .winograd) {
        throw SwiftCNNError.runtime("conv2d_backward: internal error: no direct kernel for this input gradient")
    }
    let scatter = xKernel == .scatter, correlate = xKernel == .positionLanes || xKernel == .channelLanes
    var offsets: IndexBuffer? = nil, offsetsX: IndexBuffer? = nil
    if gradWeight != nil {
        offsets = try IndexBuffer(count: taps, what: "conv2d: tap offsets")
        directConvOffsets(s, into: offsets!.pointer)
    }
    // dx's packed weights: the scatter's [c block][r][s][k][6], or the flipped filter w'[c][k, r, s]
    // = w[k, c, kH-1-r, kW-1-s] of the full correlation (tap t = (k, r, s)).
    var packedX: UnsafeMutablePointer<Float>? = nil
    if scatter {
        let p = try workspace.buffer(0, count: s.scatterPackedCount)
        scatterPackWeights(s, weight: weight, into: p)
        packedX = p
    } else if correlate {
        offsetsX = try IndexBuffer(count: sx.taps, what: "conv2d: tap offsets")
        directConvOffsets(sx, into: offsetsX!.pointer)
        let flipped = { (c: Int, t: Int) -> Float in
            let (k, rs) = (t / (kH * kW), t % (kH * kW))
            let (r, col) = (rs / kW, rs % kW)
            return weight[((k * C + c) * kH + (kH - 1 - r)) * kW + (kW - 1 - col)]
        }
        let positions = xKernel == .positionLanes
        let p = try workspace.buffer(0, count: positions ? sx.positionPackedCount : sx.packedWeightCount)
        if positions { positionLanePackWeights(sx, w: flipped, into: p) } else { channelLanePackWeights(sx, w: flipped, into: p) }
        packedX = p
    }
    let gpadCount = scatter ? s.scatterPaddedCount : sx.paddedCount
    let scratchXCount = xKernel == .positionLanes ? sx.positionScratchCount : sx.scratchCount
    // The split counts dx and dw whether or not both are asked for: dw's summation order (per
    // chunk) must not depend on whether dx is computed alongside.
    // Up to 2 chunks per thread, claimed dynamically (a chunk's partial dw is 16 * K * taps floats,
    // zeroed and summed once per chunk: more would cost more than the finer split gains).
    let flopsPerImage = 4 * Double(K) * Double(g.colCount)
    let chunks = parallelFineChunks(work: Int(min(flopsPerImage * Double(g.batch), 1e15)), units: g.batch,
                                    minPerChunk: 1_000_000, perThread: 2)
    let workers = parallelWorkers(chunks)
    let group = min(weightGradImagesPerGroup(s), (g.batch + chunks - 1) / chunks)
    let spread = gradWeight != nil || scatter
    // Per thread: spread gradients of a group (dw, scatter), padded inputs of a group (dw), a padded
    // gradient or input-gradient buffer and a scratch (dx). Per chunk: 16-lane partial sums (dw)
    // and bias sums, added in chunk order at the end.
    var gqs: [UnsafeMutablePointer<Float>] = [], xpads: [UnsafeMutablePointer<Float>] = []
    var partials: [UnsafeMutablePointer<Float>] = []
    var gpads: [UnsafeMutablePointer<Float>] = [], scratches: [UnsafeMutablePointer<Float>] = []
    var biasPartials: [UnsafeMutablePointer<Float>] = []
    for worker in 0..<workers {
        let base = 1 + 4 * worker
        if spread { gqs.append(try workspace.buffer(base, count: group * s.gradRowsCount)) }
        if gradWeight != nil { xpads.append(try workspace.buffer(base + 1, count: group * s.paddedCount)) }
        if gradX != nil { gpads.append(try workspace.buffer(base + 2, count: gpadCount)) }
        if correlate { scratches.append(try workspace.buffer(base + 3, count: scratchXCount)) }
    }
    for chunk in 0..<chunks {
        let base = 1 + 4 * workers + 2 * chunk
        if gradWeight != nil {
            partials.append(try workspace.buffer(base, count: accCount + 2 * 16 * taps))   // + the dropped rows
        }
        if gradBias != nil { biasPartials.append(try workspace.buffer(base + 1, count: K)) }
    }
    let xStride = C * g.height * g.width, gStride = K * g.outH * g.outW
    let unpadded = g.padH == 0 && g.padW == 0
    let zeroed = UnsafeMutablePointer<Bool>.allocate(capacity: workers)
    zeroed.initialize(repeating: false, count: workers)
    defer { zeroed.deallocate() }
    parallelForWorkers(chunks, workers: workers) { chunk, worker in
        let images = chunkRange(chunk, of: chunks, total: g.batch)
        if !zeroed[worker] {   // the padded buffers' borders stay zero
            if spread { gqs[worker].update(repeating: 0, count: group * s.gradRowsCount) }
            if gradWeight != nil { xpads[worker].update(repeating: 0, count: group * s.paddedCount) }
            if correlate { gpads[worker].update(repeating: 0, count: gpadCount) }
            zeroed[worker] = true
        }
        if gradWeight != nil { partials[chunk].update(repeating: 0, count: accCount) }
        if gradBias != nil { biasPartials[chunk].update(repeating: 0, count: K) }
        var n0 = images.lowerBound
        while n0 < images.upperBound {
            let count = min(group, images.upperBound - n0)
            for m in 0..<count {
                let gn = gradOut + (n0 + m) * gStride
                if spread { weightGradSpreadRows(s, g: gn, gq: gqs[worker] + m * s.gradRowsCount) }
                if gradBias != nil {
                    let sums = biasPartials[chunk], plane = g.outH * g.outW
                    for k in 0..<K { sums[k] += contiguousSum(gn + k * plane, count: plane) }
                }
            }
            if let offsets {
                // Unpadded images are read in place, as in the forward, while the slack stays in x.
                let inPlace = unpadded && (n0 + count) * xStride + directConvSlack <= g.batch * xStride
                let xpad = xpads[worker]
                if !inPlace {
                    for m in 0..<count {
                        directConvCopyPadded(s, src: x + (n0 + m) * xStride, height: g.height, width: g.width,
                                              top: g.padH, left: g.padW, dst: xpad + m * s.paddedCount)
                    }
                }
                weightGradImages(s, images: count, xpad: inPlace ? x + n0 * xStride : UnsafePointer(xpad),
                                 xImageStride: inPlace ? xStride : s.paddedCount, gq: gqs[worker],
                                 offsets: offsets.pointer, acc: partials[chunk], dropped: partials[chunk] + accCount)
            }
            if let gradX, let packedX {
                for m in 0..<count {
                    let n = n0 + m
                    if scatter {
                        scatterGradInputImage(s, gq: gqs[worker] + m * s.gradRowsCount, packed: packedX,
                                              dxpad: gpads[worker], dx: gradX + n * xStride, height: g.height,
                                              width: g.width, top: g.padH, left: g.padW)
                        continue
                    }
                    let gpad = gpads[worker]
                    directConvCopyPadded(sx, src: gradOut + n * gStride, height: g.outH, width: g.outW,
                                          top: kH - 1 - g.padH, left: kW - 1 - g.padW, dst: gpad)
                    if xKernel == .positionLanes {
                        positionLaneForwardImage(sx, xpad: gpad, packed: packedX, offsets: offsetsX!.pointer, bias: nil,
                                                 y: gradX + n * xStride, scratch: scratches[worker])
                    } else {
                        channelLaneForwardImage(sx, xpad: gpad, packed: packedX, offsets: offsetsX!.pointer, bias: nil,
                                                y: gradX + n * xStride, scratch: scratches[worker])
                    }
                }
            }
            n0 += count
        }
    }
    if let gradBias {
        for k in 0..<K {
            var sum: Float = accumulate ? gradBias[k] : 0
            for chunk in 0..<chunks { sum += biasPartials[chunk][k] }
            gradBias[k] = sum
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
