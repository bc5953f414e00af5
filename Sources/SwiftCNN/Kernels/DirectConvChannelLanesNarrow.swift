/// The channel-lane forward block for the narrow register file (AVX2).
///
/// The wide block (Kernels/DirectConvChannelLanes.swift) keeps 12 positions × 16 channels in 12
/// `SIMD16<Float>` accumulators: 24 AVX2 registers, so it spills. The narrow block computes the same
/// 12 × 16 outputs as two sub-blocks of 6 positions × 16 channels, each 12 `SIMD8<Float>`
/// accumulators (6 positions × 2 channel halves): per tap 2 weight loads and 6 broadcasts feed 12
/// multiply-adds (the wide block: 1 weight load and 12 broadcasts per 12 double-width ones).
///
/// Every output is the same chain as in the wide block (the initial value, then taps t = 0, 1, ...
/// in order, one multiply-add each), so the two give the same bits (pinned by
/// NarrowChannelLaneTests).

/// out[p][lanes] = initial + sum_t xpad[p + off(t)] * packed[t][lanes] for p in 0..<12: the result
/// of `channelLaneForwardBlock`, as two 6-position sub-blocks.
@inline(__always) @usableFromInline
func channelLaneForwardBlockNarrow(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                                   packed: UnsafePointer<Float>, initial: Lanes, out: UnsafeMutablePointer<Float>) {
    channelLaneNarrowBlock6(taps: taps, offsets: offsets, x: x, packed: packed, initial: initial, out: out)
    channelLaneNarrowBlock6(taps: taps, offsets: offsets, x: x + 6, packed: packed, initial: initial, out: out + 6 * 16)
}

/// out[p][lanes] = initial + sum_t x[p + off(t)] * packed[t][lanes] for p in 0..<6, lanes 0..<16 as
/// two halves of 8.
@inline(__always) @usableFromInline
func channelLaneNarrowBlock6(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                             packed: UnsafePointer<Float>, initial: Lanes, out: UnsafeMutablePointer<Float>) {
    let lo = initial.lowHalf, hi = initial.highHalf
    var a0 = lo, a1 = lo, a2 = lo, a3 = lo, a4 = lo, a5 = lo
    var b0 = hi, b1 = hi, b2 = hi, b3 = hi, b4 = hi, b5 = hi
    var wp = UnsafeRawPointer(packed)
    for t in 0..<taps {
        let xp = x + Int(offsets[t])
        let wl = wp.load(as: Lanes8.self), wh = wp.load(fromByteOffset: 32, as: Lanes8.self)
        var v = Lanes8(repeating: xp[0])
        a0 = multiplyAdd(v, wl, a0); b0 = multiplyAdd(v, wh, b0)
        v = Lanes8(repeating: xp[1])
        a1 = multiplyAdd(v, wl, a1); b1 = multiplyAdd(v, wh, b1)
        v = Lanes8(repeating: xp[2])
        a2 = multiplyAdd(v, wl, a2); b2 = multiplyAdd(v, wh, b2)
        v = Lanes8(repeating: xp[3])
        a3 = multiplyAdd(v, wl, a3); b3 = multiplyAdd(v, wh, b3)
        v = Lanes8(repeating: xp[4])
        a4 = multiplyAdd(v, wl, a4); b4 = multiplyAdd(v, wh, b4)
        v = Lanes8(repeating: xp[5])
        a5 = multiplyAdd(v, wl, a5); b5 = multiplyAdd(v, wh, b5)
        wp += 64
    }
    let o = UnsafeMutableRawPointer(out)
    o.storeBytes(of: a0, toByteOffset: 0, as: Lanes8.self); o.storeBytes(of: b0, toByteOffset: 32, as: Lanes8.self)
    o.storeBytes(of: a1, toByteOffset: 64, as: Lanes8.self); o.storeBytes(of: b1, toByteOffset: 96, as: Lanes8.self)
    o.storeBytes(of: a2, toByteOffset: 128, as: Lanes8.self); o.storeBytes(of: b2, toByteOffset: 160, as: Lanes8.self)
    o.storeBytes(of: a3, toByteOffset: 192, as: Lanes8.self); o.storeBytes(of: b3, toByteOffset: 224, as: Lanes8.self)
    o.storeBytes(of: a4, toByteOffset: 256, as: Lanes8.self); o.storeBytes(of: b4, toByteOffset: 288, as: Lanes8.self)
    o.storeBytes(of: a5, toByteOffset: 320, as: Lanes8.self); o.storeBytes(of: b5, toByteOffset: 352, as: Lanes8.self)
}
