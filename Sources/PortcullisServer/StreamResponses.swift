import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PortcullisCore
import PortcullisProviders
import PortcullisRouting

/// Frames canonical chat chunks as OpenAI `chat.completion.chunk` events.
struct OpenAIChunkFraming: Sendable {
    /// Whether the client asked for `stream_options.include_usage`.
    let includeUsage: Bool

    /// The SSE frame for `chunk`, or nil when the client must not see it (a usage chunk it did not ask for).
    func frame(_ chunk: ChatChunk) -> ByteBuffer? {
        if chunk.choices.isEmpty {
            guard includeUsage, chunk.usage != nil else { return nil }
        }
        return SSEWriter.data(JSONWriter.bytes(OpenAIWire.encodeChatChunk(chunk, includeUsageField: includeUsage)))
    }
}

/// Frames OpenAI `text_completion` chunk objects.
struct CompletionChunkFraming: Sendable {
    let includeUsage: Bool

    func frame(_ object: JSONValue) -> ByteBuffer? {
        var chunk = object.objectValue ?? JSONObject()
        let hasChoices = !(chunk["choices"]?.arrayValue?.isEmpty ?? true)
        if !includeUsage {
            if !hasChoices { return nil }
            chunk.removeValue(forKey: "usage")
        }
        return SSEWriter.data(JSONWriter.bytes(.object(chunk)))
    }
}

/// Builds streaming responses that forward events as they arrive and end failed streams with a clean terminal error event.
enum StreamResponses {
    static func headers(routed deployment: Deployment, group: String, attempts: Int) -> HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("x-accel-buffering")!] = "no"
        RoutingHeaders.add(to: &headers, deployment: deployment, group: group, attempts: attempts)
        return headers
    }

    /// Pulls the remaining events and writes their frames; returns the failure that ended the stream early, if any.
    static func pump<Element: Sendable>(
        _ primed: PrimedStream<Element>, writer: inout any ResponseBodyWriter, deployment: Deployment,
        frame: (Element) -> [ByteBuffer]
    ) async throws -> GatewayError? {
        for buffer in frame(primed.first) { try await writer.write(buffer) }
        guard var rest = primed.takeRest() else { return nil }
        while true {
            let next: Element?
            do {
                next = try await rest.next()
            } catch let failure as UpstreamFailure {
                deployment.record(failure)
                return ModelRouter.clientError(for: failure)
            } catch let error as GatewayError {
                return error
            } catch {
                return GatewayError.internalFailure
            }
            guard let element = next else { return nil }
            for buffer in frame(element) { try await writer.write(buffer) }
        }
    }

    /// An OpenAI-framed chat stream.
    static func openAIChat(_ routed: Routed<PrimedStream<ChatChunk>>, includeUsage: Bool, logger: Logger) -> Response {
        let framing = OpenAIChunkFraming(includeUsage: includeUsage)
        return openAIFramed(routed, logger: logger) { framing.frame($0) }
    }

    /// An OpenAI-framed legacy completion stream.
    static func completion(_ routed: Routed<PrimedStream<JSONValue>>, includeUsage: Bool, logger: Logger) -> Response {
        let framing = CompletionChunkFraming(includeUsage: includeUsage)
        return openAIFramed(routed, logger: logger) { framing.frame($0) }
    }

    /// A stream in OpenAI's framing: one `data:` event per element, `[DONE]` at the end, or an error event instead.
    private static func openAIFramed<Element: Sendable>(
        _ routed: Routed<PrimedStream<Element>>, logger: Logger,
        frame: @escaping @Sendable (Element) -> ByteBuffer?
    ) -> Response {
        let deployment = routed.deployment
        let primed = routed.value
        let body = ResponseBody { writer in
            let failure = try await pump(primed, writer: &writer, deployment: deployment) { element in frame(element).map { [$0] } ?? [] }
            if let failure {
                logger.warning("stream failed after first byte", metadata: ["deployment": "\(deployment.name)", "code": "\(failure.code)"])
                try await writer.write(SSEWriter.data(JSONWriter.bytes(failure.openAIEnvelope())))
            } else {
                try await writer.write(SSEWriter.done)
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers(routed: deployment, group: routed.group, attempts: routed.attempts), body: body)
    }

    /// An Anthropic-framed chat stream (`message_start` … `message_stop`).
    static func anthropicChat(_ routed: Routed<PrimedStream<ChatChunk>>, model: String, logger: Logger) -> Response {
        let deployment = routed.deployment
        let primed = routed.value
        let body = ResponseBody { writer in
            var encoder = AnthropicStreamEncoder(model: model)
            let failure = try await pump(primed, writer: &writer, deployment: deployment) { chunk in encoder.encode(chunk) }
            if let failure {
                logger.warning("stream failed after first byte", metadata: ["deployment": "\(deployment.name)", "code": "\(failure.code)"])
                try await writer.write(AnthropicStreamEncoder.errorEvent(failure))
            } else {
                for buffer in encoder.finish() { try await writer.write(buffer) }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers(routed: deployment, group: routed.group, attempts: routed.attempts), body: body)
    }
}

/// Headers that tell the client which model group and deployment served it (names only, never secrets).
enum RoutingHeaders {
    static func add(to headers: inout HTTPFields, deployment: Deployment, group: String, attempts: Int) {
        headers[HTTPField.Name("x-portcullis-model-group")!] = group
        headers[HTTPField.Name("x-portcullis-deployment")!] = deployment.name
        headers[HTTPField.Name("x-portcullis-attempts")!] = String(attempts)
    }
}
