import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A TCP connection that writes bytes exactly as given and reads whatever comes back: for
/// requests an HTTP client would refuse to send (broken framing, a head sent in pieces) and
/// for clients that vanish mid-answer (FIN or RST).
final class RawConnection: Sendable {
    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = Mutex<[UInt8]>([])
        let closed = Atomic<Bool>(false)

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            received.withLock { $0 += buffer.readableBytesView }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            // With half-closure allowed, the server's FIN arrives as an event, not as inactivity.
            if let event = event as? ChannelEvent, event == .inputClosed { closed.store(true, ordering: .relaxed) }
            context.fireUserInboundEventTriggered(event)
        }

        func channelInactive(context: ChannelHandlerContext) {
            closed.store(true, ordering: .relaxed)
            context.fireChannelInactive()
        }
    }

    private let channel: any Channel
    private let collector: Collector

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    static func connect(port: Int) async throws -> RawConnection {
        let collector = Collector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, collector: collector)
    }

    func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text))
    }

    /// Everything received so far, as text.
    var received: String { String(decoding: collector.received.withLock { $0 }, as: UTF8.self) }

    /// Whether the server closed the connection.
    var isClosedByPeer: Bool { collector.closed.load(ordering: .relaxed) }

    /// Waits until the received text contains `marker` (or the server closed), at most `seconds`.
    @discardableResult
    func waitFor(_ marker: String, seconds: Double = 5) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if received.contains(marker) { return true }
            if isClosedByPeer { return received.contains(marker) }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        return received.contains(marker)
    }

    /// Waits until the server closed the connection, at most `seconds`; true if it did.
    func waitForClose(seconds: Double) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if isClosedByPeer { return true }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        return isClosedByPeer
    }

    /// Half-closes: no more bytes from this side (FIN), still reading.
    func finishWriting() async throws {
        try await channel.close(mode: .output)
    }

    /// Closes with a FIN, or with an RST when `reset`.
    func close(reset: Bool = false) async {
        if reset {
            // SO_LINGER with a zero timeout: close sends an RST instead of a FIN.
            if let socket = channel as? any SocketOptionProvider {
                try? await socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
            }
        }
        try? await channel.close()
    }

    /// The status code of the first response received, if a head arrived.
    var status: Int? {
        let text = received
        guard text.hasPrefix("HTTP/1.1 ") else { return nil }
        return Int(text.dropFirst(9).prefix(3))
    }
}
