import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import PortcullisTLS
import Synchronization

/// The status and headers of an upstream response, and its body as it arrives.
public struct UpstreamResponse: Sendable {
    public let status: Int
    public let headers: HTTPHeaders
    public let body: UpstreamBody
}

/// An upstream response body: a single-pass, back-pressured sequence of buffers.
///
/// Reading slowly slows the upstream connection down (the socket is not read while the
/// buffer is above its high watermark); abandoning the sequence before its end closes
/// the connection instead of returning it to the pool.
public struct UpstreamBody: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    typealias Producer = NIOThrowingAsyncSequenceProducer<
        ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, BodyDelegate
    >

    let producer: Producer

    public func makeAsyncIterator() -> Iterator {
        Iterator(base: producer.makeAsyncIterator())
    }

    public struct Iterator: AsyncIteratorProtocol {
        var base: Producer.AsyncIterator

        public mutating func next() async throws -> ByteBuffer? {
            try await base.next()
        }
    }

    /// The whole body, refusing more than `maximumBytes`.
    public func collect(upTo maximumBytes: Int) async throws -> ByteBuffer {
        var collected = ByteBuffer()
        for try await var buffer in self {
            guard collected.readableBytes + buffer.readableBytes <= maximumBytes else { throw NIOTooManyBytesError(maxBytes: maximumBytes) }
            collected.writeBuffer(&buffer)
        }
        return collected
    }
}

/// Tells the connection handler when the body's reader wants more or has gone.
struct BodyDelegate: NIOAsyncSequenceProducerDelegate {
    let loopBoundHandler: NIOLoopBound<UpstreamConnectionHandler>

    func produceMore() {
        let handler = loopBoundHandler
        handler.eventLoop.execute { handler.value.resumeReading() }
    }

    func didTerminate() {
        let handler = loopBoundHandler
        handler.eventLoop.execute { handler.value.bodyReaderWentAway() }
    }
}

/// Where a request's time limits stand, from the caller's point of view.
struct ExchangeLimits: Sendable {
    /// The call must finish by this time.
    var deadline: NIODeadline
    /// Longest silence between two reads once the response head arrived.
    var idle: TimeAmount
    /// Name used in failures.
    var deployment: String
}

/// The life of one pooled HTTP/1.1 connection to an upstream, as a state machine without I/O:
/// idle → awaiting head → streaming → idle (or closed). Each event returns what the handler
/// must do; the handler only performs it.
struct UpstreamConnectionState<Exchange> {
    enum State {
        case idle
        case awaitingHead(Exchange)
        case streaming(Exchange, keepAlive: Bool)
        case closed
    }

    private(set) var state = State.idle

    var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    /// A new exchange: true when it may be sent (the connection is idle and open).
    mutating func start(_ exchange: Exchange, channelActive: Bool) -> Bool {
        guard case .idle = state, channelActive else { return false }
        state = .awaitingHead(exchange)
        return true
    }

    /// The response head: the exchange whose caller gets the response now (nil: nothing awaited
    /// it, or an informational 1xx head, which is skipped).
    mutating func headReceived(status: Int, keepAlive: Bool) -> Exchange? {
        guard case .awaitingHead(let exchange) = state, !(100..<200).contains(status) else { return nil }
        state = .streaming(exchange, keepAlive: keepAlive)
        return exchange
    }

    /// A piece of the body: the exchange it belongs to (nil: none is streaming).
    func bodyReceived() -> Exchange? {
        guard case .streaming(let exchange, _) = state else { return nil }
        return exchange
    }

    /// The end of the response: the exchange that finished, whether the connection goes back to
    /// the pool, and whether it must be closed (the upstream did not keep it alive).
    mutating func endReceived(channelActive: Bool) -> (exchange: Exchange, reusable: Bool, close: Bool)? {
        guard case .streaming(let exchange, let keepAlive) = state else { return nil }
        state = .idle
        return (exchange, keepAlive && channelActive, !keepAlive)
    }

    /// The body's reader left before the end: the exchange to end; the connection is closed.
    mutating func readerWentAway() -> Exchange? {
        guard case .streaming(let exchange, _) = state else { return nil }
        state = .closed
        return exchange
    }

    /// A failure (time limit, cancellation, a broken or closed connection): what was in flight
    /// and whether its caller still waits for the head. The connection is closed either way.
    mutating func fail() -> (exchange: Exchange, awaitingHead: Bool)? {
        defer { state = .closed }
        switch state {
        case .awaitingHead(let exchange): return (exchange, true)
        case .streaming(let exchange, _): return (exchange, false)
        case .idle, .closed: return nil
        }
    }
}

/// Runs one request/response exchange at a time on one HTTP/1.1 connection: performs what
/// `UpstreamConnectionState` decides. The request head, body and end go out in one flush.
final class UpstreamConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// One request in flight (a class, so that state transitions do not copy it).
    private final class Exchange {
        let promise: EventLoopPromise<UpstreamResponse>
        let source: UpstreamBody.Producer.Source
        let body: UpstreamBody
        let limits: ExchangeLimits
        var deadlineTimer: Scheduled<Void>?
        var idleTimer: Scheduled<Void>?
        let onFinish: @Sendable (_ reusable: Bool) -> Void

        init(promise: EventLoopPromise<UpstreamResponse>, source: UpstreamBody.Producer.Source, body: UpstreamBody, limits: ExchangeLimits,
             onFinish: @escaping @Sendable (_ reusable: Bool) -> Void) {
            self.promise = promise
            self.source = source
            self.body = body
            self.limits = limits
            self.onFinish = onFinish
        }

        func cancelTimers() {
            deadlineTimer?.cancel()
            idleTimer?.cancel()
        }
    }

    private var state = UpstreamConnectionState<Exchange>()
    private var context: ChannelHandlerContext?
    private var readingPaused = false
    private var readPending = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Whether a new exchange may start.
    var isIdle: Bool { state.isIdle }

    /// Sends a request and completes `promise` with the response head; the body follows through the response's sequence.
    func start(head: HTTPRequestHead, body: ByteBuffer?, limits: ExchangeLimits, promise: EventLoopPromise<UpstreamResponse>,
               onFinish: @escaping @Sendable (_ reusable: Bool) -> Void) {
        guard let context else {
            promise.fail(UpstreamFailure(reason: .connection, message: "the pooled connection was closed", deployment: limits.deployment))
            return
        }
        let delegate = BodyDelegate(loopBoundHandler: NIOLoopBound(self, eventLoop: context.eventLoop))
        let sequence = UpstreamBody.Producer.makeSequence(
            backPressureStrategy: .init(lowWatermark: 2, highWatermark: 16), finishOnDeinit: true, delegate: delegate)
        let exchange = Exchange(promise: promise, source: sequence.source, body: UpstreamBody(producer: sequence.sequence), limits: limits,
                                onFinish: onFinish)
        guard state.start(exchange, channelActive: context.channel.isActive) else {
            promise.fail(UpstreamFailure(reason: .connection, message: "the pooled connection was closed", deployment: limits.deployment))
            return
        }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        exchange.deadlineTimer = context.eventLoop.scheduleTask(deadline: limits.deadline) {
            loopBound.value.fail(.timeout("total"), message: "request took too long")
        }
        readingPaused = false
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard let exchange = state.headReceived(status: Int(head.status.code), keepAlive: head.isKeepAlive) else { return }
            armIdleTimer(exchange, context: context)
            exchange.promise.succeed(UpstreamResponse(status: Int(head.status.code), headers: head.headers, body: exchange.body))
        case .body(let buffer):
            guard let exchange = state.bodyReceived() else { return }
            armIdleTimer(exchange, context: context)
            switch exchange.source.yield(buffer) {
            case .produceMore: break
            case .stopProducing: readingPaused = true
            case .dropped: break
            }
        case .end:
            guard let (exchange, reusable, close) = state.endReceived(channelActive: context.channel.isActive) else { return }
            exchange.cancelTimers()
            readingPaused = false
            if close { context.close(promise: nil) }
            // Back to the pool before the reader learns the body ended, so that its next
            // request finds this connection idle.
            exchange.onFinish(reusable)
            exchange.source.finish()
        }
    }

    private func armIdleTimer(_ exchange: Exchange, context: ChannelHandlerContext) {
        exchange.idleTimer?.cancel()
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        exchange.idleTimer = context.eventLoop.scheduleTask(in: exchange.limits.idle) {
            loopBound.value.fail(.timeout("stream idle"), message: "upstream went silent")
        }
    }

    /// Outbound `read`: held back while the body's reader is behind (back-pressure).
    func read(context: ChannelHandlerContext) {
        if readingPaused {
            readPending = true
        } else {
            context.read()
        }
    }

    /// The body's reader caught up.
    func resumeReading() {
        readingPaused = false
        if readPending, let context {
            readPending = false
            context.read()
        }
    }

    /// The body's reader stopped before the end: the connection cannot be reused.
    func bodyReaderWentAway() {
        guard let exchange = state.readerWentAway() else { return }
        exchange.cancelTimers()
        context?.close(promise: nil)
        exchange.onFinish(false)
    }

    /// The caller gave up (cancelled): fail the exchange and close the connection.
    func cancel() {
        fail(.connection, message: "request cancelled")
    }

    /// Fails whatever is in flight and closes the connection.
    private func fail(_ reason: UpstreamFailure.Reason, message: String) {
        if let (exchange, awaitingHead) = state.fail() {
            let failure = UpstreamFailure(reason: reason, message: message, deployment: exchange.limits.deployment)
            exchange.cancelTimers()
            if awaitingHead { exchange.promise.fail(failure) }
            exchange.source.finish(failure)
            exchange.onFinish(false)
        }
        context?.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(.connection, message: "upstream closed the connection")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOSSLError || error is BoringSSLError {
            fail(.connection, message: "TLS failure (\(error))")
        } else if error is HTTPParserError {
            fail(.connection, message: "the connection broke mid-response")
        } else {
            fail(.connection, message: "connection error (\(type(of: error)))")
        }
    }
}

/// One pooled connection: its channel and the handler that runs its exchanges.
final class UpstreamConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<UpstreamConnectionHandler>
    /// When it was last returned to the pool, in uptime nanoseconds.
    let lastUsed = Atomic<UInt64>(0)

    init(channel: any Channel, handler: NIOLoopBound<UpstreamConnectionHandler>) {
        self.channel = channel
        self.handler = handler
    }

    /// Runs one exchange and returns once the response head arrived; cancelling the
    /// calling task fails the exchange and closes the connection.
    func execute(head: HTTPRequestHead, body: ByteBuffer?, limits: ExchangeLimits,
                 onFinish: @escaping @Sendable (_ reusable: Bool) -> Void) async throws -> UpstreamResponse {
        let handler = self.handler
        let promise = channel.eventLoop.makePromise(of: UpstreamResponse.self)
        channel.eventLoop.execute {
            handler.value.start(head: head, body: body, limits: limits, promise: promise, onFinish: onFinish)
        }
        return try await withTaskCancellationHandler {
            try await promise.futureResult.get()
        } onCancel: {
            handler.eventLoop.execute { handler.value.cancel() }
        }
    }
}

/// Where an upstream lives: one pool of connections per scheme, host and port.
struct UpstreamEndpoint: Hashable, Sendable {
    var isTLS: Bool
    var host: String
    var port: Int
    /// How TLS is spoken to it (ignored for http): connections with other settings are other pools.
    var tls = ClientTLSSettings()

    /// The `Host` header value.
    var hostHeader: String {
        let defaultPort = isTLS ? 443 : 80
        let name = host.contains(":") ? "[\(host)]" : host
        return port == defaultPort ? name : "\(name):\(port)"
    }
}

/// Keep-alive HTTP/1.1 connections to upstreams, reused across requests.
final class UpstreamConnectionPool: Sendable {
    private struct State {
        var idle: [UpstreamEndpoint: [UpstreamConnection]] = [:]
        var isShutDown = false
    }

    private let state = Mutex(State())
    private let group: any EventLoopGroup
    /// TLS contexts by their settings, built once each.
    private let sslContexts = Mutex<[ClientTLSSettings: NIOSSLContext]>([:])
    /// Most idle connections kept per endpoint.
    let maximumIdlePerEndpoint: Int
    /// Idle connections older than this are closed instead of reused.
    let idleTimeout: TimeAmount

    init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, maximumIdlePerEndpoint: Int = 256,
         idleTimeout: TimeAmount = .seconds(55)) {
        self.group = group
        self.maximumIdlePerEndpoint = maximumIdlePerEndpoint
        self.idleTimeout = idleTimeout
    }

    /// The TLS context of `settings`, created on first use.
    private func sslContext(_ settings: ClientTLSSettings, deployment: String) throws -> NIOSSLContext {
        try sslContexts.withLock { contexts in
            if let existing = contexts[settings] { return existing }
            let context: NIOSSLContext
            do {
                context = try NIOSSLContext(configuration: try settings.configuration(applicationProtocols: ["http/1.1"]))
            } catch let error as TLSSettingsError {
                throw UpstreamFailure(reason: .connection, message: error.description, deployment: deployment)
            }
            contexts[settings] = context
            return context
        }
    }

    /// An idle connection to `endpoint`, if one is usable.
    func takeIdle(_ endpoint: UpstreamEndpoint) -> UpstreamConnection? {
        let now = NIODeadline.now().uptimeNanoseconds
        var stale: [UpstreamConnection] = []
        defer { for connection in stale { connection.channel.close(promise: nil) } }
        return state.withLock { state -> UpstreamConnection? in
            while var list = state.idle[endpoint], let connection = list.popLast() {
                state.idle[endpoint] = list
                if connection.channel.isActive && Self.isFresh(lastUsed: connection.lastUsed.load(ordering: .relaxed), now: now, timeout: idleTimeout) {
                    return connection
                }
                stale.append(connection)
            }
            return nil
        }
    }

    /// Whether a connection last used at `lastUsed` (uptime nanoseconds) may be reused at `now`.
    /// `lastUsed` can be later than `now`: another thread returned the connection after `now`
    /// was read (the chaos drill's 3-replica load found the subtraction overflowing there).
    static func isFresh(lastUsed: UInt64, now: UInt64, timeout: TimeAmount) -> Bool {
        guard now > lastUsed else { return true }
        return now - lastUsed < UInt64(max(0, timeout.nanoseconds))
    }

    /// Returns a connection after a complete exchange.
    func release(_ connection: UpstreamConnection, to endpoint: UpstreamEndpoint) {
        connection.lastUsed.store(NIODeadline.now().uptimeNanoseconds, ordering: .relaxed)
        let kept = state.withLock { state -> Bool in
            guard !state.isShutDown, connection.channel.isActive else { return false }
            var list = state.idle[endpoint] ?? []
            guard list.count < maximumIdlePerEndpoint else { return false }
            list.append(connection)
            state.idle[endpoint] = list
            return true
        }
        if !kept { connection.channel.close(promise: nil) }
    }

    /// Opens a new connection (TCP, then TLS with SNI for https).
    func connect(_ endpoint: UpstreamEndpoint, timeout: TimeAmount, deployment: String) async throws -> UpstreamConnection {
        if state.withLock({ $0.isShutDown }) {
            throw UpstreamFailure(reason: .connection, message: "the gateway is shutting down", deployment: deployment)
        }
        let sslContext = endpoint.isTLS ? try sslContext(endpoint.tls, deployment: deployment) : nil
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let operations = channel.pipeline.syncOperations
                    if endpoint.isTLS {
                        guard let sslContext else { throw NIOSSLError.failedToLoadCertificate }
                        let serverName = endpoint.host.isIPAddress ? nil : endpoint.host
                        try operations.addHandler(try NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                    }
                    try operations.addHTTPClientHandlers()
                    try operations.addHandler(UpstreamConnectionHandler())
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: endpoint.host, port: endpoint.port).get()
        } catch let error as ChannelError where error == .connectTimeout(timeout) {
            throw UpstreamFailure(reason: .timeout("connect"), message: "could not connect in time", deployment: deployment)
        } catch let error as IOError {
            let detail = error.errnoCode == ECONNREFUSED ? "connection refused" : "could not connect (errno \(error.errnoCode))"
            throw UpstreamFailure(reason: .connection, message: detail, deployment: deployment)
        } catch {
            throw UpstreamFailure(reason: .connection, message: "could not connect (\(type(of: error)))", deployment: deployment)
        }
        // A TLS handshake the upstream refuses can close the channel, and empty its pipeline,
        // before this runs: that is a connection failure (502), not an internal error.
        let handler: NIOLoopBound<UpstreamConnectionHandler>
        do {
            handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: UpstreamConnectionHandler.self), eventLoop: channel.eventLoop)
            }.get()
        } catch {
            channel.close(promise: nil)
            throw UpstreamFailure(reason: .connection, message: endpoint.isTLS ? "the TLS handshake failed or the connection closed while opening"
                                      : "the connection closed while opening", deployment: deployment)
        }
        return UpstreamConnection(channel: channel, handler: handler)
    }

    /// Closes every idle connection and refuses new ones.
    func shutdown() async {
        let all = state.withLock { state -> [UpstreamConnection] in
            state.isShutDown = true
            let connections = state.idle.values.flatMap { $0 }
            state.idle.removeAll()
            return connections
        }
        for connection in all { try? await connection.channel.close() }
    }
}

extension String {
    /// Whether this is an IPv4 or IPv6 literal (no SNI for those).
    var isIPAddress: Bool {
        if contains(":") { return true }
        let parts = split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { UInt8($0) != nil }
    }
}
