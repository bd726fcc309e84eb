import Foundation
import PortcullisCore

/// What a finding is about. Stable names: they appear in client errors, guard events and metrics.
public enum GuardCategory: String, Sendable, CaseIterable, Comparable {
    case invalidInput = "invalid_input"
    case encoding
    case promptInjection = "prompt_injection"
    case jailbreak
    case systemPromptExtraction = "system_prompt_extraction"
    case pii
    case secret
    case moderation
    case systemPromptLeak = "system_prompt_leak"
    case format
    /// An image part that fails the local checks (type, dimensions, host) or an image moderation.
    case image

    public static func < (lhs: GuardCategory, rhs: GuardCategory) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// How bad a finding is; a policy maps each level to an action.
public enum RiskLevel: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case low = 1, medium, high, critical

    public init?(name: String) {
        switch name {
        case "low": self = .low
        case "medium": self = .medium
        case "high": self = .high
        case "critical": self = .critical
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .low: "low"
        case .medium: "medium"
        case .high: "high"
        case .critical: "critical"
        }
    }

    public static func < (lhs: RiskLevel, rhs: RiskLevel) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// What a policy does about findings of one risk level.
public enum GuardAction: String, Sendable, Comparable {
    /// Record the finding only.
    case flag
    /// Replace the offending span (when the guard can) and go on.
    case redact
    /// Refuse the request (or end the stream).
    case block

    private var rank: Int {
        switch self {
        case .flag: 0
        case .redact: 1
        case .block: 2
        }
    }

    public static func < (lhs: GuardAction, rhs: GuardAction) -> Bool { lhs.rank < rhs.rank }
}

/// One thing a guard noticed. `reason` names the rule or check, never the matched text,
/// so that it can be shown to clients and written to logs.
public struct GuardFinding: Sendable, Equatable {
    public var guardName: String
    public var category: GuardCategory
    public var risk: RiskLevel
    /// Confidence, 0–1.
    public var score: Double
    public var reason: String
    /// Where in the inspected segment (UTF-8 offsets), when the finding has a span.
    public var span: Range<Int>?
    /// Which segment of the input (see `GuardInput.segments`).
    public var segment: Int?

    public init(guardName: String, category: GuardCategory, risk: RiskLevel, score: Double, reason: String,
                span: Range<Int>? = nil, segment: Int? = nil) {
        self.guardName = guardName
        self.category = category
        self.risk = risk
        self.score = min(max(score, 0), 1)
        self.reason = reason
        self.span = span
        self.segment = segment
    }
}

/// A piece of text a guard reads: one message's text with where it came from.
public struct GuardSegment: Sendable, Equatable {
    public var role: ChatRole
    /// The message index in the request (nil for text that is not a message, e.g. a tool description).
    public var messageIndex: Int?
    /// The text as sent.
    public var text: String
    /// Whether the text is the message's whole content (so a redaction can replace it); false
    /// for text joined from parts and for tool-call arguments.
    public var isWholeContent: Bool
    /// For a tool call's arguments: the call's position in the message (a redaction replaces
    /// the arguments, as long as they stay valid JSON).
    public var toolCallIndex: Int?
    /// Whether the text comes from the caller's own instructions (system/developer) rather
    /// than a user, a tool result or a document.
    public var isTrusted: Bool { role == .system || role == .developer }

    public init(role: ChatRole, messageIndex: Int?, text: String, isWholeContent: Bool = false, toolCallIndex: Int? = nil) {
        self.role = role
        self.messageIndex = messageIndex
        self.text = text
        self.isWholeContent = isWholeContent
        self.toolCallIndex = toolCallIndex
    }
}

/// The input side of a request as the guards see it: every text segment, with a normalised
/// view prepared once (NFKC, invisible characters removed, look-alikes folded).
public struct GuardInput: Sendable {
    public var segments: [GuardSegment]
    /// The request's image parts, in order (inline ones as `data:` URLs).
    public var images: [GuardImage] = []
    /// `segments[i]`'s normalised view (empty for trusted segments, which the detectors skip).
    public var normalized: [NormalizedText]

    public init(segments: [GuardSegment]) {
        self.segments = segments
        self.normalized = segments.map { $0.isTrusted ? .empty : NormalizedText($0.text) }
    }

    /// The segments of a chat request: everything in it that reaches the model as text.
    ///
    /// Every message's text parts and tool-call arguments, in order; then what else a model
    /// reads: parts the gateway passes through (an Anthropic `document` with a text source,
    /// any other block's strings), image URLs that are not inline data, tool names and
    /// descriptions with the strings of their parameter schemas, the `response_format`
    /// schema's strings, and the pass-through request and message fields (`documents`,
    /// `prediction`, …) except those that only steer the API (`metadata`, `store`, …).
    public init(request: ChatRequest) {
        var segments: [GuardSegment] = []
        var images: [GuardImage] = []
        for (index, message) in request.messages.enumerated() {
            switch message.content {
            case .text(let text)?: segments.append(GuardSegment(role: message.role, messageIndex: index, text: text, isWholeContent: true))
            case .parts(let parts)?:
                segments.append(GuardSegment(role: message.role, messageIndex: index, text: MessageContent.parts(parts).text))
                var passedThrough: [String] = []
                for part in parts {
                    switch part {
                    case .text: break
                    case .image(let url, _):
                        images.append(GuardImage(messageIndex: index, position: images.count, url: url))
                        if !url.hasPrefix("data:") { passedThrough.append(Self.readable(url: url)) }
                    case .other(let object): Self.collectStrings(.object(object), into: &passedThrough)
                    }
                }
                if !passedThrough.isEmpty {
                    segments.append(GuardSegment(role: message.role, messageIndex: index, text: passedThrough.joined(separator: "\n")))
                }
            case nil: break
            }
            for (position, call) in message.toolCalls.enumerated() {
                segments.append(GuardSegment(role: message.role, messageIndex: index, text: call.arguments, toolCallIndex: position))
            }
            var extra: [String] = []
            Self.collectStrings(.object(message.extra), into: &extra)
            if !extra.isEmpty { segments.append(GuardSegment(role: message.role, messageIndex: index, text: extra.joined(separator: "\n"))) }
        }
        var declared: [String] = []
        for tool in request.tools {
            declared.append(tool.name)
            if let description = tool.description { declared.append(description) }
            if let parameters = tool.parameters { Self.collectStrings(parameters, into: &declared) }
        }
        if case .jsonSchema(_, _, let original)? = request.responseFormat { Self.collectStrings(.object(original), into: &declared) }
        Self.collectStrings(.object(request.extra), into: &declared)
        Self.collectStrings(.object(request.anthropicExtra), into: &declared)
        if !declared.isEmpty { segments.append(GuardSegment(role: .user, messageIndex: nil, text: declared.joined(separator: "\n"))) }
        self.init(segments: segments)
        self.images = images
    }

    /// Fields whose strings steer the API and never reach the model as text.
    static let nonTextFields: Set<String> = [
        "type", "media_type", "cache_control", "metadata", "store", "service_tier", "user", "safety_identifier", "prompt_cache_key",
        "reasoning_effort", "modalities", "format", "$ref", "$schema", "id", "tool_use_id", "detail", "voice", "strict",
    ]

    /// Appends every string inside `value` that a model would read; inline base64 data is left out.
    static func collectStrings(_ value: JSONValue, into strings: inout [String], depth: Int = 0) {
        guard depth < 32 else { return }
        if let text = value.stringValue {
            strings.append(text)
        } else if let array = value.arrayValue {
            for element in array { collectStrings(element, into: &strings, depth: depth + 1) }
        } else if let object = value.objectValue {
            // A source's `data` is text only when the source says so (an Anthropic text document).
            let dataIsText = object["type"]?.stringValue == "text"
            for (key, member) in object where !nonTextFields.contains(key) && (key != "data" || dataIsText) {
                if key == "url", let url = member.stringValue {
                    if !url.hasPrefix("data:") { strings.append(readable(url: url)) }
                    continue
                }
                collectStrings(member, into: &strings, depth: depth + 1)
            }
        }
    }

    /// A URL as words: percent-escapes decoded and the usual separators made spaces, so an
    /// instruction hidden in a query string reads as one.
    static func readable(url: String) -> String {
        var text = url.replacingOccurrences(of: "+", with: " ")
        text = text.removingPercentEncoding ?? text
        return String(text.map { "/?&=#_-.".contains($0) ? " " : $0 })
    }

    /// `inspect`'s findings on every untrusted segment's normalised text, with its index.
    func findingsInUntrusted(_ inspect: (NormalizedText, Int) -> [GuardFinding]) -> [GuardFinding] {
        var findings: [GuardFinding] = []
        for (index, segment) in segments.enumerated() where !segment.isTrusted { findings += inspect(normalized[index], index) }
        return findings
    }

    /// One piece of untrusted user text (evaluation, tests).
    public init(text: String) {
        self.init(segments: [GuardSegment(role: .user, messageIndex: 0, text: text)])
    }
}

/// A guard on the input side. Guards are cheap to call and never throw for bad input:
/// whatever the text, they return findings.
public protocol InputGuard: Sendable {
    /// A stable name, used in policies, events and metrics.
    var name: String { get }
    /// The tier, for the cascade's order: cheaper tiers run first.
    var tier: GuardTier { get }
    /// Findings on `input` (empty: nothing to say).
    func inspect(_ input: GuardInput) async -> [GuardFinding]
    /// Whether the cascade asks this guard only when an earlier tier found something it did
    /// not block (the costly tiers). Default false.
    var onlyWhenUncertain: Bool { get }
}

extension InputGuard {
    public var onlyWhenUncertain: Bool { false }
}

/// Cascade tiers, cheapest first.
public enum GuardTier: Int, Sendable, Comparable {
    case validation = 0, rules, classifier, external

    public static func < (lhs: GuardTier, rhs: GuardTier) -> Bool { lhs.rawValue < rhs.rawValue }
}
