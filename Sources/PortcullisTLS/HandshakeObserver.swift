import NIOCore
import Synchronization

/// Full and resumed TLS handshakes the listener completed (its first flight sent).
public final class TLSHandshakeCounts: Sendable {
    private let full = Atomic<Int>(0)
    private let resumed = Atomic<Int>(0)

    public init() {}

    public var fullCount: Int { full.load(ordering: .relaxed) }
    public var resumedCount: Int { resumed.load(ordering: .relaxed) }

    func count(_ kind: ServerHelloReader.Kind) {
        switch kind {
        case .full: full.add(1, ordering: .relaxed)
        case .resumed: resumed.add(1, ordering: .relaxed)
        }
    }
}

/// Reads the server's first TLS record, which TLS 1.3 sends in the clear: a ServerHello that
/// accepted a client's session ticket carries the `pre_shared_key` extension (RFC 8446 §4.2.11),
/// one that did not is a full handshake. A HelloRetryRequest (a ServerHello with the fixed
/// random of §4.1.3) is passed over: the real ServerHello follows it.
public struct ServerHelloReader: Sendable {
    public enum Kind: Sendable, Equatable {
        case full
        case resumed
    }

    public enum Verdict: Sendable, Equatable {
        /// More bytes are needed.
        case needMore
        case decided(Kind)
        /// Not a TLS 1.3 ServerHello flight; nothing to count.
        case unrecognised
    }

    static let preSharedKeyExtension: UInt16 = 41
    static let helloRetryRandom: [UInt8] = [
        0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
        0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
    ]
    /// More than a ServerHello flight ever needs before its first record completes.
    static let limit = 32 * 1024

    private var pending: [UInt8] = []

    public init() {}

    /// Feeds bytes the server sent; the verdict once the ServerHello has been read.
    public mutating func read(_ bytes: some Sequence<UInt8>) -> Verdict {
        pending.append(contentsOf: bytes)
        while true {
            guard pending.count >= 5 else { return .needMore }
            let type = pending[0], length = Int(pending[3]) << 8 | Int(pending[4])
            // 22: handshake. Anything else before a ServerHello (an alert, say) ends the watch.
            guard type == 22 else { return .unrecognised }
            guard pending.count >= 5 + length else { return pending.count > Self.limit ? .unrecognised : .needMore }
            let record = pending[5..<(5 + length)]
            pending.removeFirst(5 + length)
            switch Self.serverHello(Array(record)) {
            case nil: return .unrecognised
            case .some(nil): continue   // a HelloRetryRequest: read on
            case .some(.some(let kind)): return .decided(kind)
            }
        }
    }

    /// nil: not a ServerHello; `.some(nil)`: a HelloRetryRequest; otherwise its kind.
    static func serverHello(_ record: [UInt8]) -> Kind?? {
        var reader = ByteReader(record)
        guard reader.byte() == 2, reader.skip(3), reader.skip(2), let random = reader.bytes(32),
              let sessionLength = reader.byte(), reader.skip(Int(sessionLength)), reader.skip(3),
              let extensionsLength = reader.uint16() else { return nil }
        if random == helloRetryRandom { return .some(nil) }
        var extensions = ByteReader(reader.bytes(Int(extensionsLength)) ?? [])
        while let type = extensions.uint16(), let length = extensions.uint16() {
            if type == preSharedKeyExtension { return .some(.resumed) }
            guard extensions.skip(Int(length)) else { return nil }
        }
        return .some(.full)
    }

    private struct ByteReader {
        let bytes: [UInt8]
        var index = 0

        init(_ bytes: [UInt8]) {
            self.bytes = bytes
        }

        mutating func byte() -> UInt8? {
            guard index < bytes.count else { return nil }
            defer { index += 1 }
            return bytes[index]
        }

        mutating func uint16() -> UInt16? {
            guard index + 2 <= bytes.count else { return nil }
            defer { index += 2 }
            return UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
        }

        mutating func bytes(_ count: Int) -> [UInt8]? {
            guard count >= 0, index + count <= bytes.count else { return nil }
            defer { index += count }
            return Array(bytes[index..<(index + count)])
        }

        mutating func skip(_ count: Int) -> Bool {
            guard count >= 0, index + count <= bytes.count else { return false }
            index += count
            return true
        }
    }
}

/// Sits between the socket and the TLS handler of a listener's connection and counts its
/// handshake as full or resumed from the first flight the server writes; after that it only
/// passes bytes on.
public final class TLSHandshakeObserver: ChannelOutboundHandler {
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let counts: TLSHandshakeCounts
    private var reader: ServerHelloReader? = ServerHelloReader()

    public init(counts: TLSHandshakeCounts) {
        self.counts = counts
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if reader != nil {
            let buffer = unwrapOutboundIn(data)
            switch reader!.read(buffer.readableBytesView) {
            case .needMore: break
            case .decided(let kind):
                counts.count(kind)
                reader = nil
            case .unrecognised:
                reader = nil
            }
        }
        context.write(data, promise: promise)
    }
}
