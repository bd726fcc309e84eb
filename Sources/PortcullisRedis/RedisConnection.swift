import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A Redis error reply (`-ERR …`) or a connection failure.
public struct RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The server answered with an error reply.
        case reply
        /// The connection failed or closed.
        case connection
        /// The server answered something that does not fit the command.
        case unexpectedReply
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "Redis \(kind): \(message)" }
}

/// A message received on a subscribed channel.
public struct RedisMessage: Sendable, Equatable {
    public var channel: String
    public var payload: ByteBuffer

    /// The payload as text.
    public var text: String { String(buffer: payload) }
}

/// The command a caller wants sent, with the promise for its reply.
struct RedisOutboundCommand: Sendable {
    var arguments: [[RESPArgument]]
    var promises: [EventLoopPromise<RESPValue>]
}

/// Matches replies to pipelined commands in order; on a subscribed connection, routes pushed messages.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisOutboundCommand
    typealias OutboundOut = ByteBuffer

    private var parser = RESPParser()
    private var pending = CircularBuffer<EventLoopPromise<RESPValue>>()
    /// Receives `message`/`pmessage` pushes on a subscribed connection.
    var onMessage: (@Sendable (RedisMessage) -> Void)?
    /// Called once when the connection ends.
    var onClose: (@Sendable (RedisError) -> Void)?
    private var closed = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command = unwrapOutboundIn(data)
        if closed {
            for reply in command.promises { reply.fail(RedisError(.connection, "connection closed")) }
            promise?.fail(RedisError(.connection, "connection closed"))
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        for arguments in command.arguments { RESPEncoder.encodeCommand(arguments, into: &buffer) }
        for reply in command.promises { pending.append(reply) }
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        parser.append(unwrapInboundIn(data))
        do {
            while let value = try parser.next() {
                if let onMessage, let elements = value.array, elements.count >= 3,
                   let kind = elements[0].string, kind == "message" || kind == "pmessage" {
                    let channel = elements[elements.count - 2].string ?? ""
                    if case .bulkString(let payload?) = elements[elements.count - 1] {
                        onMessage(RedisMessage(channel: channel, payload: payload))
                    }
                    continue
                }
                guard let promise = pending.popFirst() else { continue }
                promise.succeed(value)
            }
        } catch {
            failAll(RedisError(.connection, "\(error)"))
            context.close(promise: nil)
        }
    }

    private func failAll(_ error: RedisError) {
        guard !closed else { return }
        closed = true
        while let promise = pending.popFirst() { promise.fail(error) }
        onClose?(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError(.connection, "connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(RedisError(.connection, "\(type(of: error))"))
        context.close(promise: nil)
    }
}

/// Where and how to reach one Redis server.
public struct RedisEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var useTLS: Bool

    public init(host: String, port: Int = 6379, useTLS: Bool = false) {
        self.host = host
        self.port = port
        self.useTLS = useTLS
    }
}

/// One connection to Redis: commands are pipelined (many may be in flight), replies come back in order.
public final class RedisConnection: Sendable {
    let channel: any Channel

    init(channel: any Channel) {
        self.channel = channel
    }

    /// Whether the connection is still open.
    public var isActive: Bool { channel.isActive }

    /// Opens a connection, authenticates and selects the database.
    public static func connect(to endpoint: RedisEndpoint, username: String? = nil, password: String? = nil, database: Int = 0,
                               tlsConfiguration: TLSConfiguration? = nil, connectTimeout: TimeAmount = .seconds(5),
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                               onMessage: (@Sendable (RedisMessage) -> Void)? = nil,
                               onClose: (@Sendable (RedisError) -> Void)? = nil) async throws -> RedisConnection {
        let sslContext: NIOSSLContext? = endpoint.useTLS ? try NIOSSLContext(configuration: tlsConfiguration ?? .makeClientConfiguration()) : nil
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        let serverName = endpoint.host.first?.isNumber == true || endpoint.host.contains(":") ? nil : endpoint.host
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                    }
                    let handler = RedisChannelHandler()
                    handler.onMessage = onMessage
                    handler.onClose = onClose
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: endpoint.host, port: endpoint.port).get()
        } catch {
            throw RedisError(.connection, "cannot connect to \(endpoint.host):\(endpoint.port) (\(type(of: error)))")
        }
        let connection = RedisConnection(channel: channel)
        do {
            if let password {
                var arguments: [RESPArgument] = ["AUTH"]
                if let username { arguments.append(.string(username)) }
                arguments.append(.string(password))
                _ = try await connection.command(arguments)
            }
            if database != 0 { _ = try await connection.command(["SELECT", .int(Int64(database))]) }
        } catch {
            try? await channel.close()
            throw error
        }
        return connection
    }

    /// Sends one command and returns its reply as it came (error replies included).
    public func send(_ arguments: [RESPArgument]) async throws -> RESPValue {
        try await pipeline([arguments])[0]
    }

    /// Sends one command; an error reply is thrown as `RedisError`.
    @discardableResult
    public func command(_ arguments: [RESPArgument]) async throws -> RESPValue {
        let reply = try await send(arguments)
        if case .error(let message) = reply { throw RedisError(.reply, message) }
        return reply
    }

    /// Sends several commands in one write and returns their replies in order.
    public func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
        var replies: [RESPValue] = []
        replies.reserveCapacity(commands.count)
        for future in enqueue(commands) { replies.append(try await future.get()) }
        return replies
    }

    /// SHA-1s of the scripts loaded on the server through this connection (a new connection,
    /// to a restarted server say, starts empty).
    private let loadedScripts = Mutex<Set<String>>([])

    /// Whether `sha1` still has to be loaded through this connection; marks it loaded.
    func needsLoading(_ sha1: String) -> Bool {
        loadedScripts.withLock { $0.insert(sha1).inserted }
    }

    /// Queues one command for writing and returns the future of its reply without waiting:
    /// the channel writes in the order commands were queued, so a command queued later on this
    /// connection is applied after it.
    public func queue(_ arguments: [RESPArgument]) -> EventLoopFuture<RESPValue> {
        enqueue([arguments])[0]
    }

    private func enqueue(_ commands: [[RESPArgument]]) -> [EventLoopFuture<RESPValue>] {
        let promises = commands.map { _ in channel.eventLoop.makePromise(of: RESPValue.self) }
        // A write that fails before the handler takes the replies (the channel closed a moment
        // ago and its handler is gone) must fail them too, or their callers would wait forever.
        // A promise already failed by the handler ignores the second failure.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { error in
            for promise in promises { promise.fail(RedisError(.connection, "write failed: \(error)")) }
        }
        channel.writeAndFlush(RedisOutboundCommand(arguments: commands, promises: promises), promise: written)
        return promises.map(\.futureResult)
    }

    /// Closes the connection.
    public func close() async {
        try? await channel.close()
    }
}
