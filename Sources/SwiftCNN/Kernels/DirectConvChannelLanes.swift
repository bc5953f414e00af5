/// The channel-lane forward of a direct convolution (see Kernels/DirectConvShape.swift): lanes
/// over 16 output channels, 12 output positions per micro-kernel call, one input value broadcast
/// per multiply-add (x86 folds the broadcast into the FMA's memory operand).

/// Output positions per forward micro-kernel call (12 accumulators of 16 channels each).
@usableFromInline let channelLanePixels = 12

extension DirectConvShape {
    /// Groups of 16 output channels.
    @usableFromInline var groups: Int { (outChannels + 15) / 16 }
    /// Elements of the pixel-major forward scratch (span rounded up to whole calls, × 16 lanes).
    @usableFromInline var scratchCount: Int { (span + channelLanePixels - 1) / channelLanePixels * channelLanePixels * 16 }
    /// Elements of the packed weights: per group, taps × 16 lanes.
    @usableFromInline var packedWeightCount: Int { groups * taps * 16 }
}

/// The fraction of SIMD lanes doing useful work when `channels` are spread over groups of 16.
@inlinable
func channelLaneUse(_ channels: Int) -> Double {
    channels <= 0 ? 0 : Double(channels) / Double((channels + 15) / 16 * 16)
}

/// Packs weights w[k, t] (row k at `w + k * kStride + t * tStride`) into [group][t][16 lanes],
/// lanes past K zero. Forward: kStride = taps, tStride = 1.
@usableFromInline
func channelLanePackWeights(_ s: DirectConvShape, w: (Int, Int) -> Float, into packed: UnsafeMutablePointer<Float>) {
    let taps = s.taps
    for group in 0..<s.groups {
        for t in 0..<taps {
            let dst = packed + (group * taps + t) * 16
            for lane in 0..<16 {
                let k = group * 16 + lane
                dst[lane] = k < s.outChannels ? w(k, t) : 0
            }
        }
    }
}

/// out[p][lanes] = initial + sum_t xpad[q0 + p + off(t)] * packed[t][lanes] for p in 0..<12.
@inline(__always) @usableFromInline
func channelLaneForwardBlock(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                             packed: UnsafePointer<Float>, initial: Lanes, out: UnsafeMutablePointer<Float>) {
    var a0 = initial, a1 = initial, a2 = initial, a3 = initial, a4 = initial, a5 = initial
    var a6 = initial, a7 = initial, a8 = initial, a9 = initial, a10 = initial, a11 = initial
    var wp = UnsafeRawPointer(packed)
    for t in 0..<taps {
        let xp = x + Int(offsets[t])
        let w = wp.load(as: Lanes.self)
        a0 = multiplyAdd(Lanes(repeating: xp[0]), w, a0)
        a1 = multiplyAdd(Lanes(repeating: xp[1]), w, a1)
        a2 = multiplyAdd(Lanes(repeating: xp[2]), w, a2)
        a3 = multiplyAdd(Lanes(repeating: xp[3]), w, a3)
        a4 = multiplyAdd(Lanes(repeating: xp[4]), w, a4)
        a5 = multiplyAdd(Lanes(repeating: xp[5]), w, a5)
        a6 = multiplyAdd(Lanes(repeating: xp[6]), w, a6)
        a7 = multiplyAdd(Lanes(repeating: xp[7]), w, a7)
        a8 = multiplyAdd(Lanes(repeating: xp[8]), w, a8)
        a9 = multiplyAdd(Lanes(repeating: xp[9]), w, a9)
        a10 = multiplyAdd(Lanes(repeating: xp[10]), w, a10)
        a11 = multiplyAdd(Lanes(repeating: xp[11]), w, a11)
        wp += 64
    }
    let o = UnsafeMutableRawPointer(out)
    o.storeBytes(of: a0, toByteOffset: 0, as: Lanes.self)
    o.storeBytes(of: a1, toByteOffset: 64, as: Lanes.self)
    o.storeBytes(of: a2, toByteOffset: 128, as: Lanes.self)
    o.storeBytes(of: a3, toByteOffset: 192, as: Lanes.self)
    o.storeBytes(of: a4, toByteOffset: 256, as: Lanes.self)
    o.storeBytes(of: a5, toByteOffset: 320, as: Lanes.self)
    o.storeBytes(of: a6, toByteOffset: 384, as: Lanes.self)
    o.storeBytes(of: a7, toByteOffset: 448, as: Lanes.self)
    o.storeBytes(of: a8, toByteOffset: 512, as: Lanes.self)
    o.storeBytes(of: a9, toByteOffset: 576, as: Lanes.self)
    o.storeBytes(of: a10, toByteOffset: 640, as: Lanes.self)
    o.storeBytes(of: a11, toByteOffset: 704, as: Lanes.self)
}

/// One image: y (outChannels planes of outH × outW, overwritten) from xpad (padded planes, with
/// slack), packed weights and optional bias. `scratch` holds `s.scratchCount` floats, `offsets`
/// the s.taps tap offsets.
@usableFromInline
func channelLaneForwardImage(_ s: DirectConvShape, xpad: UnsafePointer<Float>, packed: UnsafePointer<Float>,
                             offsets: UnsafePointer<Int32>, bias: UnsafePointer<Float>?,
                             y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
    let taps = s.taps, span = s.span, outPlane = s.outH * s.outW
    let narrow = directConvRegisterFile == .narrow   // AVX2: two 6-position sub-blocks, the same bits
    for group in 0..<s.groups {
        let k0 = group * 16, lanes = min(16, s.outChannels - k0)
        var initial = Lanes(repeating: 0)
        if let bias { for lane in 0..<lanes { initial[lane] = bias[k0 + lane] } }
        let wg = packed + group * taps * 16
        var q0 = 0
        while q0 < span {
            if narrow {
                channelLaneForwardBlockNarrow(taps: taps, offsets: offsets, x: xpad + q0, packed: wg, initial: initial,
                                              out: scratch + q0 * 16)
            } else {
                channelLaneForwardBlock(taps: taps, offsets: offsets, x: xpad + q0, packed: wg, initial: initial,
                                        out: scratch + q0 * 16)
            }
            q0 += channelLanePixels
        }
        // Pixel-major scratch -> channel planes, skipping the wasted positions j >= outW: one
        // vector load per position, its lanes stored to the channels' planes.
        let yk = y + k0 * outPlane
        for i in 0..<s.outH {
            for j in 0..<s.outW {
                let v = UnsafeRawPointer(scratch + (i * s.paddedW + j) * 16).load(as: Lanes.self)
                let dst = yk + i * s.outW + j
                for lane in 0..<lanes { dst[lane * outPlane] = v[lane] }
            }
        }
    }
}
