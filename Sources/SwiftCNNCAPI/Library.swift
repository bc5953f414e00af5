// Library-wide entry points: version and worker-thread count.

@_spi(Engine) import SwiftCNN

/// The library's version: the one place it is written down in Swift.
public let swiftCNNVersion: StaticString = "0.2.0"

/// `const char *scnn_version(void)`: the version as a static NUL-terminated string.
@_cdecl("scnn_version")
public func scnn_version() -> UnsafePointer<CChar> {
    // A StaticString made from a literal is stored NUL-terminated in the binary's constant data.
    UnsafeRawPointer(swiftCNNVersion.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// `int32_t scnn_set_num_threads(int64_t n, char *msg, int64_t msg_cap)`: n < 1 is a value error.
@_cdecl("scnn_set_num_threads")
public func scnn_set_num_threads(_ n: Int64, _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        guard n >= 1 else {
            throw SwiftCNNError.value("set_num_threads: n must be >= 1, got \(n)")
        }
        Threading.numThreads = int(n)
    }
}

/// `int64_t scnn_get_num_threads(void)`.
@_cdecl("scnn_get_num_threads")
public func scnn_get_num_threads() -> Int64 {
    Int64(Threading.numThreads)
}
