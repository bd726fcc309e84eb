import PortcullisCore
import PortcullisProviders
import Synchronization

/// One upstream stream read by several clients (de-duplicated streamed requests): a task pulls
/// the stream once and keeps every event; each reader gets them all from the first — a late
/// joiner what was already sent, then the live tail. When the last reader goes away before the
/// end, the pull is cancelled, which closes the upstream connection.
public final class SharedStream<Element: Sendable>: Sendable {
    struct State {
        var elements: [Element]
        var finished = false
        var failure: (any Error)?
        var waiting: [CheckedContinuation<Void, Never>] = []
        var readers = 0
        var pull: Task<Void, Never>?
    }

    private let state: Mutex<State>
    private let onEnd: @Sendable () -> Void

    /// Starts pulling the rest of `primed` at once.
    /// - Parameters:
    ///   - failure: what a reader sees of the upstream's error (told to the routing once, here).
    ///   - onEnd: called once when the stream has ended or was abandoned (the registry retires it).
    public init(_ primed: PrimedStream<Element>, failure: @escaping @Sendable (any Error) -> any Error = { $0 },
                onEnd: @escaping @Sendable () -> Void = {}) {
        state = Mutex(State(elements: [primed.first]))
        self.onEnd = onEnd
        // The pull holds this stream until it ends, or until its last reader leaves and cancels it.
        let task = Task { await self.pull(primed, failure: failure) }
        state.withLock { $0.pull = task }
    }

    private func pull(_ primed: PrimedStream<Element>, failure: @Sendable (any Error) -> any Error) async {
        var ended: (any Error)?
        if var iterator = primed.takeRest() {
            do {
                while let element = try await iterator.next() {
                    let waiting = state.withLock { state in
                        state.elements.append(element)
                        defer { state.waiting = [] }
                        return state.waiting
                    }
                    for continuation in waiting { continuation.resume() }
                }
            } catch {
                ended = failure(error)
            }
        }
        let waiting = state.withLock { state in
            state.finished = true
            state.failure = ended
            defer { state.waiting = [] }
            return state.waiting
        }
        for continuation in waiting { continuation.resume() }
        onEnd()
    }

    /// A reader from the first event on: its own primed stream.
    public func reader() -> PrimedStream<Element> {
        let first = state.withLock { state in
            state.readers += 1
            return state.elements[0]
        }
        let reader = Reader(shared: self)
        let stream = EventStream<Element> { { try await reader.next() } }
        return PrimedStream(first: first, rest: stream.makeAsyncIterator())
    }

    /// Events pulled so far, and whether the stream has ended.
    public var progress: (events: Int, finished: Bool) { state.withLock { ($0.elements.count, $0.finished) } }

    enum Step {
        case element(Element)
        case end
        case failed(any Error)
        case wait
    }

    func step(at index: Int) -> Step {
        state.withLock { state in
            if index < state.elements.count { return .element(state.elements[index]) }
            guard state.finished else { return .wait }
            return state.failure.map(Step.failed) ?? .end
        }
    }

    func waitForMore(than index: Int) async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state in
                if index < state.elements.count || state.finished { return true }
                state.waiting.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// A reader went away (finished or not): the last one cancels an unfinished pull.
    func leave() {
        let abandoned: Task<Void, Never>? = state.withLock { state in
            state.readers -= 1
            return state.readers == 0 && !state.finished ? state.pull : nil
        }
        abandoned?.cancel()
    }

    /// One reader's position; leaving when it is released (its iterator dropped).
    final class Reader: Sendable {
        let shared: SharedStream<Element>
        let index = Mutex(1)

        init(shared: SharedStream<Element>) {
            self.shared = shared
        }

        func next() async throws -> Element? {
            while true {
                let position = index.withLock { $0 }
                switch shared.step(at: position) {
                case .element(let element):
                    index.withLock { $0 += 1 }
                    return element
                case .end:
                    return nil
                case .failed(let error):
                    throw error
                case .wait:
                    await shared.waitForMore(than: position)
                }
            }
        }

        deinit { shared.leave() }
    }
}
