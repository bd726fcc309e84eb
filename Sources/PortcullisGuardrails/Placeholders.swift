import Synchronization

/// Reversible tokenisation for one request: each personal value sent upstream is replaced by a
/// placeholder (`[EMAIL_1]`; the same value, the same placeholder) and restored in the answer.
/// The originals live only here, in memory, for the request's lifetime.
public final class PlaceholderVault: Sendable {
    private struct State {
        var byValue: [String: String] = [:]
        var byPlaceholder: [String: String] = [:]
        var counters: [String: Int] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// The placeholder standing for `value` of `kind` (e.g. `email`).
    public func placeholder(for value: String, kind: String) -> String {
        state.withLock { state in
            if let existing = state.byValue[value] { return existing }
            let label = kind.uppercased()
            let number = (state.counters[label] ?? 0) + 1
            state.counters[label] = number
            let placeholder = "[\(label)_\(number)]"
            state.byValue[value] = placeholder
            state.byPlaceholder[placeholder] = value
            return placeholder
        }
    }

    /// Whether any value was tokenised.
    public var isEmpty: Bool { state.withLock { $0.byPlaceholder.isEmpty } }

    /// The longest placeholder handed out (how much a stream must hold back at most).
    var longestPlaceholder: Int { state.withLock { $0.byPlaceholder.keys.map(\.utf8.count).max() ?? 0 } }

    /// `text` with every placeholder replaced by its original.
    public func restore(_ text: String) -> String {
        let table = state.withLock { $0.byPlaceholder }
        guard !table.isEmpty, text.contains("[") else { return text }
        var result = ""
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "[") {
            result += rest[..<open]
            if let close = rest[open...].firstIndex(of: "]"), let original = table[String(rest[open...close])] {
                result += original
                rest = rest[rest.index(after: close)...]
            } else {
                result += "["
                rest = rest[rest.index(after: open)...]
            }
        }
        return result + rest
    }

    /// Whether `fragment` (starting with `[`) could still grow into a placeholder.
    func couldBecomePlaceholder(_ fragment: Substring) -> Bool {
        state.withLock { state in state.byPlaceholder.keys.contains { $0.hasPrefix(fragment) } }
    }
}

/// Restores placeholders in a stream of text deltas: a placeholder may arrive split across
/// chunks, so a tail that could still become one is held back until it is complete or cannot
/// be; nothing else is delayed.
public struct StreamRestorer: Sendable {
    private let vault: PlaceholderVault
    private var held = ""

    public init(vault: PlaceholderVault) {
        self.vault = vault
    }

    /// The text to send now for the next delta.
    public mutating func feed(_ delta: String) -> String {
        let text = held + delta
        held = ""
        if let open = text.lastIndex(of: "["), !text[open...].contains("]"),
           text.utf8.distance(from: open.samePosition(in: text.utf8) ?? text.utf8.startIndex, to: text.utf8.endIndex) <= vault.longestPlaceholder,
           vault.couldBecomePlaceholder(text[open...]) {
            held = String(text[open...])
            return vault.restore(String(text[..<open]))
        }
        return vault.restore(text)
    }

    /// What is still held back, at the end of the stream.
    public mutating func flush() -> String {
        defer { held = "" }
        return vault.restore(held)
    }
}
