import Synchronization

/// A single-pass asynchronous sequence of events produced by an upstream or local provider.
///
/// It is built from a factory so that the per-stream state (HTTP body iterator, parser,
/// translator) is created by the one consumer that iterates it and never shared.
public struct EventStream<Element: Sendable>: AsyncSequence, Sendable {
    /// Pulls the next event; `nil` ends the stream.
    public typealias Next = () async throws -> Element?

    private let factory: @Sendable () -> Next

    /// Creates a stream whose iterator calls the closure `factory` returns.
    public init(_ factory: @escaping @Sendable () -> Next) {
        self.factory = factory
    }

    /// A stream over a fixed list, for local providers and tests.
    public init(elements: [Element]) {
        self.factory = {
            var remaining = elements[...]
            return { remaining.popFirst() }
        }
    }

    public func makeAsyncIterator() -> Iterator {
        Iterator(next: factory())
    }

    /// Iterates the stream.
    public struct Iterator: AsyncIteratorProtocol {
        let nextElement: Next

        init(next: @escaping Next) { self.nextElement = next }

        public mutating func next() async throws -> Element? {
            try await nextElement()
        }
    }

    /// A stream whose elements are those of `self` transformed one-to-many by `transform`.
    public func flatMapEvents<Output: Sendable>(
        _ makeTransform: @escaping @Sendable () -> (Element) throws -> [Output],
        finish makeFinish: @escaping @Sendable () -> (() throws -> [Output])? = { nil }
    ) -> EventStream<Output> {
        let base = self
        return EventStream<Output> {
            var iterator = base.makeAsyncIterator()
            let transform = makeTransform()
            let finish = makeFinish()
            var pending: [Output] = []
            var pendingIndex = 0
            var ended = false
            return {
                while true {
                    if pendingIndex < pending.count {
                        defer { pendingIndex += 1 }
                        return pending[pendingIndex]
                    }
                    if ended { return nil }
                    pending.removeAll(keepingCapacity: true)
                    pendingIndex = 0
                    if let element = try await iterator.next() {
                        pending = try transform(element)
                    } else {
                        ended = true
                        pending = try finish?() ?? []
                    }
                }
            }
        }
    }
}

/// A stream whose first event has already been received.
///
/// Routing pulls the first event before it commits to a deployment, so that a
/// stream that fails before its first byte can still fail over; this carries that
/// event together with the rest of the stream to the response writer.
public struct PrimedStream<Element: Sendable>: Sendable {
    /// The first event.
    public let first: Element
    private let rest: SendingBox<EventStream<Element>.Iterator>

    public init(first: Element, rest: consuming sending EventStream<Element>.Iterator) {
        self.first = first
        self.rest = SendingBox(rest)
    }

    /// Takes the rest of the stream; only the first call gets it.
    public func takeRest() -> EventStream<Element>.Iterator? {
        rest.take()
    }

    /// Pulls the first event of `stream`; returns nil if it ends with none.
    public static func prime(_ stream: EventStream<Element>) async throws -> PrimedStream<Element>? {
        var iterator = stream.makeAsyncIterator()
        guard let first = try await iterator.next() else { return nil }
        return PrimedStream(first: first, rest: iterator)
    }
}

/// Hands one non-`Sendable` value from one task to another exactly once.
public final class SendingBox<Value>: Sendable {
    private let storage: Mutex<Value?>

    public init(_ value: consuming sending Value) {
        self.storage = Mutex(Optional(value))
    }

    /// Removes and returns the value; `nil` if it was already taken.
    public func take() -> sending Value? {
        storage.withLock { value -> sending Value? in
            let taken = value.take()
            return taken
        }
    }
}
