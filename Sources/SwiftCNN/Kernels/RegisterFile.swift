#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Which register blocks the direct kernels use: the SIMD register file the build runs on.
///
/// The position-lane blocks were shaped for AVX-512 (32 registers of 16 floats: 24 accumulators of
/// `SIMD16<Float>` plus the loads). On AVX2 (16 registers of 8 floats: AMD EPYC hosts, most laptops)
/// a `SIMD16<Float>` takes two registers, so the same block needs 48 for its accumulators alone and
/// spills most of them to the stack on every multiply-add (measured on an AVX2 EPYC: the 5x5 forward
/// of bench figure 3 at 22 GFLOP/s on one core, a fifth of the core's FMA peak). The narrow blocks
/// (Kernels/DirectConvNarrowBlocks.swift) compute the same block as several sub-blocks of at most 12
/// `SIMD8<Float>` accumulators each. The same choice picks the GEMM micro-kernel (6 × 64 floats, or
/// 6 × 16 in Kernels/GEMMNarrow.swift), the channel-lane forward block (12 × 16 in one block, or two
/// 6 × 16 sub-blocks in Kernels/DirectConvChannelLanesNarrow.swift) and the scatter/weight-gradient blocks.
///
/// Both compute every output element as the same chain of multiply-adds (taps in order, from zero),
/// so the choice changes speed only, never a result bit.
@usableFromInline
enum RegisterFile: Sendable {
    /// AVX-512: the original blocks.
    case wide
    /// 16 vector registers of 8 floats or fewer (AVX2, SSE, NEON): the narrow sub-blocks.
    case narrow
}

/// The register file of this process: `SWIFTCNN_REGISTER_FILE=wide|narrow` if set (benchmarks and
/// tests), else `.wide` only for a build compiled for the host CPU (`-DSWIFTCNN_FMA`, set by setup.py
/// with `-target-cpu native`) on an x86-64 CPU whose /proc/cpuinfo lists `avx512f`; `.narrow`
/// otherwise (a portable build is compiled for SSE2, 16 registers of 4 floats).
@usableFromInline
let directConvRegisterFile: RegisterFile = detectRegisterFile()

@usableFromInline
func detectRegisterFile() -> RegisterFile {
    if let env = getenv("SWIFTCNN_REGISTER_FILE") {
        let value = String(cString: env)
        if value == "wide" { return .wide }
        if value == "narrow" { return .narrow }
    }
    #if SWIFTCNN_FMA && arch(x86_64) && os(Linux)
    return cpuInfoHasFlag("avx512f") ? .wide : .narrow
    #else
    return .narrow
    #endif
}

/// Whether the first "flags" line of /proc/cpuinfo contains `flag` as a whole word.
func cpuInfoHasFlag(_ flag: String) -> Bool {
    #if os(Linux)
    guard let file = fopen("/proc/cpuinfo", "r") else { return false }
    defer { fclose(file) }
    var line: UnsafeMutablePointer<CChar>? = nil
    var capacity = 0
    defer { free(line) }
    while getline(&line, &capacity, file) > 0 {
        guard let line else { break }
        let text = String(cString: line)
        guard text.hasPrefix("flags") else { continue }
        return text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == ":" })
            .contains { $0 == flag[...] }
    }
    return false
    #else
    return false
    #endif
}
