import Foundation
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

    /// How a pumped stream ended.
    enum PumpEnd {
        /// The upstream finished.
        case completed
        /// The upstream failed after the first byte.
        case failed(GatewayError)
        /// The gate stopped it (a hard budget would be crossed).
        case stopped
    }

    /// Pulls the remaining events and writes their frames; `gate` may stop the stream before an element.
    static func pump<Element: Sendable>(
        _ primed: PrimedStream<Element>, writer: inout any ResponseBodyWriter, deployment: Deployment,
        gate: (Element) async -> Bool = { _ in true }, frame: (Element) throws(GatewayError) -> [ByteBuffer]
    ) async throws -> PumpEnd {
        guard await gate(primed.first) else { return .stopped }
        do {
            for buffer in try frame(primed.first) { try await writer.write(buffer) }
        } catch let error as GatewayError {
            return .failed(error)
        }
        guard var rest = primed.takeRest() else { return .completed }
        while true {
            let next: Element?
            do {
                next = try await rest.next()
            } catch let failure as UpstreamFailure {
                deployment.record(failure)
                return .failed(ModelRouter.clientError(for: failure))
            } catch let error as GatewayError {
                return .failed(error)
            } catch {
                return .failed(GatewayError.internalFailure)
            }
            guard let element = next else { return .completed }
            guard await gate(element) else { return .stopped }
            // An output guard's block ends the stream with its terminal error event.
            let buffers: [ByteBuffer]
            do {
                buffers = try frame(element)
            } catch {
                return .failed(error)
            }
            for buffer in buffers { try await writer.write(buffer) }
        }
    }

    /// The chunk that ends a stream cut short by a budget: `finish_reason: length`.
    static func budgetStop(after chunk: ChatChunk?) -> ChatChunk {
        ChatChunk(id: chunk?.id ?? "chatcmpl-\(FastRandom.hex(bytes: 12))", created: chunk?.created ?? Int64(Date().timeIntervalSince1970),
                  model: chunk?.model ?? "", choices: [ChunkChoice(index: 0, delta: ChunkDelta(), finishReason: .length)])
    }

    /// An OpenAI-framed chat stream; `meter` counts it, may end it at a budget, and settles it.
    static func openAIChat(_ routed: Routed<PrimedStream<ChatChunk>>, includeUsage: Bool, meter: ChatStreamMeter?,
                           restorer: ChunkRestorer? = nil, outputGuard: ChunkGuard? = nil, logger: Logger) -> Response {
        let framing = OpenAIChunkFraming(includeUsage: includeUsage)
        let deployment = routed.deployment
        let primed = routed.value
        let body = ResponseBody { writer in
            let end = try await pump(primed, writer: &writer, deployment: deployment, gate: { chunk in await meter?.admit(chunk) ?? true }) { (chunk: ChatChunk) throws(GatewayError) -> [ByteBuffer] in
                let inspected = try outputGuard?.apply(chunk) ?? chunk
                return framing.frame(restorer?.restore(inspected) ?? inspected).map { [$0] } ?? []
            }
            outputGuard?.finish()
            switch end {
            case .completed:
                try await writer.write(SSEWriter.done)
            case .stopped:
                logger.notice("stream ended at the budget", metadata: ["deployment": "\(deployment.name)"])
                if let frame = framing.frame(budgetStop(after: primed.first)) { try await writer.write(frame) }
                try await writer.write(SSEWriter.done)
            case .failed(let failure):
                logger.warning("stream failed after first byte", metadata: ["deployment": "\(deployment.name)", "code": "\(failure.code)"])
                try await writer.write(SSEWriter.data(JSONWriter.bytes(failure.openAIEnvelope())))
            }
            await meter?.finish(price: deployment.price)
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers(routed: deployment, group: routed.group, attempts: routed.attempts), body: body)
    }

    /// An OpenAI-framed legacy completion stream; `onEnd` receives the usage the provider reported.
    static func completion(_ routed: Routed<PrimedStream<JSONValue>>, includeUsage: Bool, logger: Logger,
                           onEnd: @escaping @Sendable (Usage?, Int) async -> Void) -> Response {
        let framing = CompletionChunkFraming(includeUsage: includeUsage)
        let deployment = routed.deployment
        let primed = routed.value
        let body = ResponseBody { writer in
            var usage: Usage?
            var characters = 0
            let end = try await pump(primed, writer: &writer, deployment: deployment) { object in
                if let reported = try? OpenAIWire.decodeUsage(object.objectValue?["usage"]) { usage = reported }
                for choice in object.objectValue?["choices"]?.arrayValue ?? [] { characters += choice.objectValue?["text"]?.stringValue?.count ?? 0 }
                return framing.frame(object).map { [$0] } ?? []
            }
            switch end {
            case .completed, .stopped:
                try await writer.write(SSEWriter.done)
            case .failed(let failure):
                logger.warning("stream failed after first byte", metadata: ["deployment": "\(deployment.name)", "code": "\(failure.code)"])
                try await writer.write(SSEWriter.data(JSONWriter.bytes(failure.openAIEnvelope())))
            }
            await onEnd(usage, characters)
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers(routed: deployment, group: routed.group, attempts: routed.attempts), body: body)
    }

    /// An Anthropic-framed chat stream (`message_start` … `message_stop`).
    static func anthropicChat(_ routed: Routed<PrimedStream<ChatChunk>>, model: String, meter: ChatStreamMeter?,
                              restorer: ChunkRestorer? = nil, outputGuard: ChunkGuard? = nil, logger: Logger) -> Response {
        let deployment = routed.deployment
        let primed = routed.value
        let body = ResponseBody { writer in
            var encoder = AnthropicStreamEncoder(model: model)
            let end = try await pump(primed, writer: &writer, deployment: deployment, gate: { chunk in await meter?.admit(chunk) ?? true }) { (chunk: ChatChunk) throws(GatewayError) -> [ByteBuffer] in
                let inspected = try outputGuard?.apply(chunk) ?? chunk
                return encoder.encode(restorer?.restore(inspected) ?? inspected)
            }
            outputGuard?.finish()
            switch end {
            case .completed:
                for buffer in encoder.finish() { try await writer.write(buffer) }
            case .stopped:
                logger.notice("stream ended at the budget", metadata: ["deployment": "\(deployment.name)"])
                for buffer in encoder.encode(budgetStop(after: primed.first)) { try await writer.write(buffer) }
                for buffer in encoder.finish() { try await writer.write(buffer) }
            case .failed(let failure):
                logger.warning("stream failed after first byte", metadata: ["deployment": "\(deployment.name)", "code": "\(failure.code)"])
                try await writer.write(AnthropicStreamEncoder.errorEvent(failure))
            }
            await meter?.finish(price: deployment.price)
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
