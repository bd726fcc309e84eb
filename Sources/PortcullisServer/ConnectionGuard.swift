import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import PortcullisTLS
import Synchronization

/// How long a client connection may take at each step, and how many may be open at once.
public struct ConnectionLimits: Sendable, Equatable {
    /// Seconds from a connection's first byte (or its opening) to a complete request head.
    public var headerTimeout: Double = 10
    /// Seconds a request body may go without a byte arriving.
    public var bodyIdleTimeout: Double = 30
    /// Seconds a kept-alive connection may wait for its next request.
    public var keepAliveIdleTimeout: Double = 75
    /// Connections open at once; past it the oldest idle one is closed, or the new one refused.
    public var maximumConnections: Int = 10_000

    public init(headerTimeout: Double = 10, bodyIdleTimeout: Double = 30, keepAliveIdleTimeout: Double = 75, maximumConnections: Int = 10_000) {
        self.headerTimeout = headerTimeout
        self.bodyIdleTimeout = bodyIdleTimeout
        self.keepAliveIdleTimeout = keepAliveIdleTimeout
        self.maximumConnections = maximumConnections
    }
}

/// When a connection's next deadline is, as a state machine without I/O: each event says
/// which timer to arm (replacing the one armed before) or that none runs.
struct ConnectionTimeoutState: Equatable {
    enum Timer: Equatable, Sendable {
        case header, bodyIdle, keepAliveIdle
    }

    enum Action: Equatable {
        case arm(Timer)
        case disarm
        case none
    }

    enum Phase: Equatable {
        /// Waiting for (the rest of) a request head.
        case awaitingHead
        /// A head arrived; its body has not ended.
        case readingBody
        /// The request is complete and its response is being written (a stream may take minutes).
        case responding
        /// The response ended before the request body did (an early refusal): the body is still drained.
        case drainingBody
        /// Between requests on a kept-alive connection.
        case idle
    }

    private(set) var phase: Phase = .awaitingHead

    /// A connection opened: its first head is due.
    static let opening = Action.arm(.header)

    /// Bytes arrived on the connection (before any decoding).
    mutating func bytesArrived() -> Action {
        guard phase == .idle else { return .none }
        phase = .awaitingHead
        return .arm(.header)
    }

    mutating func headReceived() -> Action {
        phase = .readingBody
        return .arm(.bodyIdle)
    }

    mutating func bodyReceived() -> Action {
        switch phase {
        case .readingBody, .drainingBody: return .arm(.bodyIdle)
        case .awaitingHead, .responding, .idle: return .none
        }
    }

    mutating func requestEnded() -> Action {
        switch phase {
        case .drainingBody:
            phase = .idle
            return .arm(.keepAliveIdle)
        case .readingBody, .awaitingHead:
            phase = .responding
            return .disarm
        case .responding, .idle:
            return .none
        }
    }

    mutating func responseEnded() -> Action {
        switch phase {
        case .responding:
            phase = .idle
            return .arm(.keepAliveIdle)
        case .readingBody:
            phase = .drainingBody
            return .none
        case .awaitingHead, .drainingBody, .idle:
            return .none
        }
    }
}

/// Counts and bounds the open client connections, and what the timeouts closed.
public final class ConnectionGovernor: Sendable {
    private struct Entry {
        var channel: any Channel
        /// Since when the connection waits between requests (nil while a request is in progress).
        var idleSince: NIODeadline?
    }

    public let limits: ConnectionLimits
    private let open = Mutex<[ObjectIdentifier: Entry]>([:])
    /// One deadline sweeper per event loop that has connections.
    private let sweepers = Mutex<[ObjectIdentifier: TimeoutSweeper]>([:])
    /// Connections refused because the maximum was reached and none was idle.
    public let refused = Atomic<Int>(0)
    /// Idle connections closed to make room for a new one.
    public let evicted = Atomic<Int>(0)
    /// Connections closed by each timeout.
    public let headerTimeouts = Atomic<Int>(0)
    public let bodyTimeouts = Atomic<Int>(0)
    public let idleTimeouts = Atomic<Int>(0)

    public init(limits: ConnectionLimits) {
        self.limits = limits
    }

    /// Connections open now.
    public var openCount: Int { open.withLock { $0.count } }

    /// Connections that sent bytes and are not waiting between requests (so not evictable).
    var activeCount: Int { open.withLock { $0.values.filter { $0.idleSince == nil }.count } }

    /// Takes a new connection in: true when there is room (made, if need be, by closing the
    /// connection idle the longest); false when it must be refused.
    func admit(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let (admitted, victim) = open.withLock { open -> (Bool, (any Channel)?) in
            var victim: (any Channel)?
            if open.count >= limits.maximumConnections {
                guard let oldest = open.filter({ $0.value.idleSince != nil }).min(by: { $0.value.idleSince! < $1.value.idleSince! }) else {
                    return (false, nil)
                }
                victim = oldest.value.channel
                open[oldest.key] = nil
            }
            // Until its first byte a connection is as good as idle: opening sockets and sending nothing holds no slot.
            open[id] = Entry(channel: channel, idleSince: .now())
            return (true, victim)
        }
        if let victim {
            evicted.add(1, ordering: .relaxed)
            victim.close(promise: nil)
        }
        if !admitted { refused.add(1, ordering: .relaxed) }
        return admitted
    }

    func setIdle(_ channel: any Channel, _ idle: Bool) {
        let id = ObjectIdentifier(channel)
        open.withLock { open in
            guard open[id] != nil else { return }
            open[id]?.idleSince = idle ? .now() : nil
        }
    }

    func remove(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        _ = open.withLock { $0.removeValue(forKey: id) }
    }

    /// The sweeper of `eventLoop`'s connections; it checks their deadlines every tenth of the
    /// shortest timeout (at most every 250 ms, at least every 20 ms), so a timeout fires that late at most.
    func sweeper(for eventLoop: any EventLoop) -> TimeoutSweeper {
        sweepers.withLock { sweepers in
            if let sweeper = sweepers[ObjectIdentifier(eventLoop)] { return sweeper }
            let shortest = min(limits.headerTimeout, limits.bodyIdleTimeout, limits.keepAliveIdleTimeout)
            let period = TimeAmount.milliseconds(Int64(max(20, min(250, shortest * 100))))
            let sweeper = TimeoutSweeper(eventLoop: eventLoop, period: period)
            sweepers[ObjectIdentifier(eventLoop)] = sweeper
            return sweeper
        }
    }

    func count(_ timer: ConnectionTimeoutState.Timer) {
        switch timer {
        case .header: headerTimeouts.add(1, ordering: .relaxed)
        case .bodyIdle: bodyTimeouts.add(1, ordering: .relaxed)
        case .keepAliveIdle: idleTimeouts.add(1, ordering: .relaxed)
        }
    }
}

/// First in a connection's pipeline (before TLS and HTTP decoding): tells the timeout handler
/// that bytes arrived, so a head that trickles in on a kept-alive connection is held to the
/// header timeout, not the idle one.
final class ConnectionActivityHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    weak var timeouts: ConnectionTimeoutHandler?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        timeouts?.bytesArrived()
        context.fireChannelRead(data)
    }
}

/// After HTTP decoding: closes a connection whose head, body or next request is late,
/// answering `408` where a request was under way.
final class ConnectionTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let governor: ConnectionGovernor
    private var state = ConnectionTimeoutState()
    /// When the armed timer runs out, and which it is (nil: none armed). Checked by the loop's
    /// sweeper: arming or disarming per request stores a time instead of scheduling a task.
    private var deadline: NIODeadline?
    private var armed: ConnectionTimeoutState.Timer = .header
    private var sweeper: TimeoutSweeper?
    private var context: ChannelHandlerContext?
    private var sawBytes = false

    init(governor: ConnectionGovernor) {
        self.governor = governor
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let activity = try? context.pipeline.syncOperations.handler(type: ConnectionActivityHandler.self) {
            activity.timeouts = self
        }
        let sweeper = governor.sweeper(for: context.eventLoop)
        sweeper.register(self)
        self.sweeper = sweeper
        arm(.header, context: context)   // the connection stays evictable until its first byte
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline = nil
        sweeper?.deregister(self)
        sweeper = nil
        self.context = nil
    }

    /// Closes the connection if its armed timer has run out by `now` (called by the sweeper).
    func expireIfDue(_ now: NIODeadline) {
        guard let deadline, deadline <= now else { return }
        self.deadline = nil
        expire(armed)
    }

    func bytesArrived() {
        if !sawBytes, let context {
            sawBytes = true
            governor.setIdle(context.channel, false)
        }
        apply(state.bytesArrived())
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: apply(state.headReceived())
        case .body: apply(state.bodyReceived())
        case .end: apply(state.requestEnded())
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { apply(state.responseEnded()) }
        context.write(data, promise: promise)
    }

    private func apply(_ action: ConnectionTimeoutState.Action) {
        guard let context else { return }
        switch action {
        case .none:
            return
        case .disarm:
            deadline = nil
            governor.setIdle(context.channel, false)
        case .arm(let kind):
            governor.setIdle(context.channel, kind == .keepAliveIdle)
            arm(kind, context: context)
        }
    }

    private func arm(_ kind: ConnectionTimeoutState.Timer, context: ChannelHandlerContext) {
        let seconds = switch kind {
        case .header: governor.limits.headerTimeout
        case .bodyIdle: governor.limits.bodyIdleTimeout
        case .keepAliveIdle: governor.limits.keepAliveIdleTimeout
        }
        armed = kind
        deadline = .now() + .nanoseconds(Int64(seconds * 1_000_000_000))
    }

    private func expire(_ kind: ConnectionTimeoutState.Timer) {
        guard let context else { return }
        governor.count(kind)
        if kind != .keepAliveIdle {
            // The client is told why; it may have sent part of a request.
            var head = HTTPResponse(status: .requestTimeout)
            head.headerFields[.connection] = "close"
            head.headerFields[.contentLength] = "0"
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.close(promise: nil)
    }
}

/// Checks the deadlines of one event loop's connections every `period`: a request's timeouts
/// then cost two stored times instead of three scheduled and cancelled tasks (measured: the
/// timer work was about 10% of a trivial request's CPU, `bench/profile.sh`). Runs only while
/// the loop has connections.
final class TimeoutSweeper: Sendable {
    private struct State {
        var handlers: [ObjectIdentifier: ConnectionTimeoutHandler] = [:]
        var task: RepeatedTask?
    }

    let eventLoop: any EventLoop
    let period: TimeAmount
    private let state: NIOLoopBoundBox<State>

    init(eventLoop: any EventLoop, period: TimeAmount) {
        self.eventLoop = eventLoop
        self.period = period
        self.state = NIOLoopBoundBox(State(), eventLoop: eventLoop)
    }

    /// On the loop: starts checking `handler` (and starts the sweep if it was stopped).
    func register(_ handler: ConnectionTimeoutHandler) {
        state.value.handlers[ObjectIdentifier(handler)] = handler
        guard state.value.task == nil else { return }
        let state = self.state
        state.value.task = eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            let now = NIODeadline.now()
            // Collected first: expiring closes channels, which deregisters them.
            for handler in Array(state.value.handlers.values) { handler.expireIfDue(now) }
        }
    }

    /// On the loop: stops checking `handler`; the sweep stops with the loop's last connection.
    func deregister(_ handler: ConnectionTimeoutHandler) {
        state.value.handlers[ObjectIdentifier(handler)] = nil
        if state.value.handlers.isEmpty {
            state.value.task?.cancel()
            state.value.task = nil
        }
    }
}

/// Answers a connection refused at the cap: a `503` on plain HTTP (nothing on TLS), then closes.
final class RefusalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let isPlainHTTP: Bool

    init(isPlainHTTP: Bool) {
        self.isPlainHTTP = isPlainHTTP
    }

    func channelActive(context: ChannelHandlerContext) {
        guard isPlainHTTP else {
            context.close(promise: nil)
            return
        }
        let refusal = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(NIOAny(ByteBuffer(string: refusal))).whenComplete { _ in loopBound.value.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// A server child channel that bounds connections and their timeouts around another one
/// (HTTP/1.1, TLS or HTTP/2): it admits the connection, puts the activity handler first (and,
/// on TLS, the handshake observer before the TLS handler), then lets `base` build the rest. The
/// timeout handler itself goes in through `base`'s `additionalChannelHandlers`, after HTTP decoding.
struct GovernedChildChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base
    let governor: ConnectionGovernor
    /// On TLS, where handshakes are counted; nil on plain HTTP (a refused connection then gets a `503`).
    let handshakes: TLSHandshakeCounts?

    var isPlainHTTP: Bool { handshakes == nil }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        guard governor.admit(channel) else {
            // The channel is not active yet: the refusal is written once it is, and nothing it sends is read.
            do {
                try channel.pipeline.syncOperations.addHandler(RefusalHandler(isPlainHTTP: isPlainHTTP), position: .first)
            } catch {
                channel.close(promise: nil)
            }
            return base.setup(channel: channel, logger: logger)
        }
        let governor = self.governor
        channel.closeFuture.whenComplete { _ in governor.remove(channel) }
        do {
            try channel.pipeline.syncOperations.addHandler(ConnectionActivityHandler(), position: .first)
            if let handshakes { try channel.pipeline.syncOperations.addHandler(TLSHandshakeObserver(counts: handshakes), position: .first) }
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return base.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
