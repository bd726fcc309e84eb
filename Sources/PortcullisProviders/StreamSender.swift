import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import PortcullisTLS
import Synchronization

/// Writes bytes to one TCP (or TLS 1.3) peer over a kept connection, reconnecting when it is
/// gone: what syslog over TCP (RFC 6587) and TLS (RFC 5425) need. A write returns once the
/// bytes were handed to the socket; the peer sends no acknowledgement.
public final class StreamSender: Sendable {
    public let host: String
    public let port: Int
    let tls: NIOSSLContext?
    private let channel = Mutex<(any Channel)?>(nil)

    /// - Parameter caFile: with `tls`, the PEM certificates to trust instead of the system's roots (TLS 1.3, as every outgoing connection).
    public init(host: String, port: Int, tls: Bool, caFile: String? = nil) throws {
        self.host = host
        self.port = port
        if tls {
            self.tls = try NIOSSLContext(configuration: ClientTLSSettings(trustedCAFile: caFile).configuration())
        } else {
            self.tls = nil
        }
    }

    /// Parses `tcp://host:port` or `tls://host:port`.
    public static func make(url: String, caFile: String?) throws -> StreamSender {
        let isTLS = url.hasPrefix("tls://")
        guard isTLS || url.hasPrefix("tcp://") else { throw StreamSenderError(message: "\(url) is not tcp://host:port or tls://host:port") }
        let authority = url.dropFirst(6).split(separator: "/").first.map(String.init) ?? ""
        guard let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...]), (1...65535).contains(port) else {
            throw StreamSenderError(message: "\(url) has no port")
        }
        var host = String(authority[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return try StreamSender(host: host, port: port, tls: isTLS, caFile: caFile)
    }

    /// Writes `bytes`; a failed write closes the connection (the next one opens a new one) and throws.
    public func send(_ bytes: [UInt8]) async throws {
        let open = try await connection()
        do {
            try await open.writeAndFlush(ByteBuffer(bytes: bytes)).get()
        } catch {
            close(open)
            throw error
        }
    }

    private func connection() async throws -> any Channel {
        if let open = channel.withLock({ $0 }), open.isActive { return open }
        let tls = self.tls, host = self.host
        let opened = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                guard let tls else { return channel.eventLoop.makeSucceededVoidFuture() }
                return channel.eventLoop.makeCompletedFuture {
                    let serverName = host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: serverName))
                }
            }
            .connect(host: host, port: port).get()
        channel.withLock { $0 = opened }
        return opened
    }

    private func close(_ open: any Channel) {
        channel.withLock { if $0 === open { $0 = nil } }
        open.close(promise: nil)
    }
}

public struct StreamSenderError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
