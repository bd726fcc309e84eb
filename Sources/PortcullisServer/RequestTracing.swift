import Foundation
import HTTPTypes
import Hummingbird
import Instrumentation
import Logging
import PortcullisCore
import PortcullisProviders
import PortcullisRouting
import Tracing

/// Records one server span per API and admin request (probes are not traced), continuing the
/// caller's W3C trace: it ends when the response is complete — a stream's when its last byte is
/// out — with the GenAI semantic conventions' attributes (`gen_ai.operation.name`,
/// `gen_ai.request.model`, `gen_ai.usage.input_tokens`, …), the status and the stable error code.
///
/// Added only when tracing is configured (the executable bootstraps the tracer). The request's
/// logs, audit record and upstream calls then carry this span's trace id; each upstream attempt
/// is a child span (`RouteStage`).
public struct RequestTracingMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext
    let tracer: any Tracer

    public init(tracer: any Tracer) {
        self.tracer = tracer
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard !path.hasPrefix("/health/"), path != "/metrics" else { return try await next(request, context) }
        var parent = InstrumentationContext.topLevel
        if let traceparent = request.headers[Self.traceparent] {
            var carrier = ["traceparent": traceparent]
            if let state = request.headers[Self.tracestate] { carrier["tracestate"] = state }
            tracer.extract(carrier, into: &parent, using: DictionaryCarrier())
        }
        let route = context.endpointPath ?? "unmatched"
        let span = tracer.startSpan("\(request.method.rawValue) \(route)", context: parent, ofKind: .server)
        span.attributes["http.request.method"] = request.method.rawValue
        span.attributes["http.route"] = route
        span.attributes["url.path"] = path
        span.attributes["portcullis.request_id"] = context.requestID
        if let operation = GenAI.operation(route: route) { span.attributes["gen_ai.operation.name"] = operation }
        var context = context
        if var trace = GenAI.traceContext(of: span.context, tracer: tracer) {
            trace.parentSpanID = context.trace?.parentSpanID
            context.trace = trace
            context.logger[metadataKey: "trace_id"] = .string(trace.traceID)
            if trace.flags == "01" { context.measures?.traced(trace.traceID) }
        }
        let measures = context.measures
        var response: Response
        do {
            response = try await InstrumentationContext.withValue(span.context) { try await next(request, context) }
        } catch {
            Self.finish(span, status: 500, measures: measures)
            throw error
        }
        let status = Int(response.status.code)
        guard response.body.contentLength == nil else {
            Self.finish(span, status: status, measures: measures)
            return response
        }
        let body = response.body
        response.body = ResponseBody { writer in
            defer { Self.finish(span, status: status, measures: measures) }
            try await body.write(writer)
        }
        return response
    }

    static func finish(_ span: any Span, status: Int, measures: RequestMeasures?) {
        span.attributes["http.response.status_code"] = status
        if let facts = measures?.snapshot {
            if let model = facts.model { span.attributes["gen_ai.request.model"] = model }
            if let deployment = facts.deployment { span.attributes["portcullis.deployment"] = deployment }
            if facts.deployment != nil {
                span.attributes["gen_ai.usage.input_tokens"] = Int(facts.inputTokens)
                span.attributes["gen_ai.usage.output_tokens"] = Int(facts.outputTokens)
            }
            span.attributes["portcullis.role"] = facts.role
            if let code = facts.code { span.attributes["error.type"] = code }
            if status >= 500 { span.setStatus(SpanStatus(code: .error, message: facts.code)) }
        } else if status >= 500 {
            span.setStatus(SpanStatus(code: .error))
        }
        span.end()
    }

    static let traceparent = HTTPField.Name("traceparent")!
    static let tracestate = HTTPField.Name("tracestate")!
}

/// Names of the OpenTelemetry GenAI semantic conventions, and the W3C context of a span.
enum GenAI {
    /// `gen_ai.operation.name` of an API route; nil for admin routes.
    static func operation(route: String) -> String? {
        if route.hasSuffix("/chat/completions") || route.hasSuffix("/messages") { return "chat" }
        if route.hasSuffix("/completions") { return "text_completion" }
        if route.hasSuffix("/embeddings") { return "embeddings" }
        return nil
    }

    /// `gen_ai.provider.name` of a provider kind: the conventions' well-known values, else the kind.
    static func providerName(_ kind: ProviderKind) -> String {
        switch kind {
        case .openai: "openai"
        case .azure: "azure.ai.openai"
        case .anthropic: "anthropic"
        case .demo: "portcullis.demo"
        case .openaiCompatible, .vllm, .ollama: kind.rawValue
        }
    }

    /// The trace a span belongs to, as the gateway's own context (the upstream `traceparent` is this span's).
    static func traceContext(of context: InstrumentationContext, tracer: any Tracer) -> TraceContext? {
        var carrier: [String: String] = [:]
        tracer.inject(context, into: &carrier, using: DictionaryCarrier())
        guard let header = carrier["traceparent"] else { return nil }
        let fields = header.split(separator: "-")
        guard fields.count == 4 else { return nil }
        return TraceContext(traceID: String(fields[1]), parentSpanID: nil, spanID: String(fields[2]), flags: String(fields[3]))
    }

    /// The host of an API base URL, for `server.address`.
    static func host(of apiBase: String) -> String {
        var rest = Substring(apiBase)
        if let scheme = rest.range(of: "://") { rest = rest[scheme.upperBound...] }
        if let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) { rest = rest[..<end] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") { return String(rest[rest.index(after: rest.startIndex)..<close]) }
        if let colon = rest.lastIndex(of: ":") { rest = rest[..<colon] }
        return String(rest)
    }

    /// The `traceparent` header naming `context`'s span.
    static func traceparent(of context: InstrumentationContext, tracer: any Tracer) -> String? {
        var carrier: [String: String] = [:]
        tracer.inject(context, into: &carrier, using: DictionaryCarrier())
        return carrier["traceparent"]
    }
}

/// Reads and writes W3C trace headers in a plain dictionary.
struct DictionaryCarrier: Extractor, Injector {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}
