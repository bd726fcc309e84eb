import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PortcullisAccess
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders
import PortcullisRouting
import Synchronization

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
    static func headers<Value>(_ routed: Routed<Value>) -> HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("x-accel-buffering")!] = "no"
        RoutingHeaders.add(to: &headers, routed)
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
        /// A write to the client failed: it went away (FIN, RST) or the server is closing.
        case clientGone
    }

    /// Pulls the remaining events and writes their frames; `gate` may stop the stream before an
    /// element. Never throws: a failed write ends the pump as `.clientGone`, and the rest of the
    /// upstream stream is dropped, which closes its connection.
    static func pump<Element: Sendable>(
        _ primed: PrimedStream<Element>, writer: inout any ResponseBodyWriter, deployment: Deployment,
        gate: (Element) async -> Bool = { _ in true }, frame: (Element) throws(GatewayError) -> [ByteBuffer]
    ) async -> PumpEnd {
        var rest = primed.takeRest()
        var element = primed.first
        while true {
            guard await gate(element) else { return .stopped }
            // An output guard's block ends the stream with its terminal error event.
            let buffers: [ByteBuffer]
            do {
                buffers = try frame(element)
            } catch {
                return .failed(error)
            }
            do {
                for buffer in buffers { try await writer.write(buffer) }
            } catch {
                return .clientGone
            }
            guard var iterator = rest else { return .completed }
            let next: Element?
            do {
                next = try await iterator.next()
            } catch let failure as UpstreamFailure {
                deployment.record(failure)
                return .failed(ModelRouter.clientError(for: failure))
            } catch let error as GatewayError {
                return .failed(error)
            } catch {
                return .failed(GatewayError.internalFailure)
            }
            rest = iterator
            guard let next else { return .completed }
            element = next
        }
    }

    /// Ends a pumped stream: writes what closes it for the client (unless the client is gone),
    /// then settles through `meter` on every path, and logs how it ended.
    static func close(_ end: PumpEnd, writer: inout any ResponseBodyWriter, meter: StreamMeter?, deployment: Deployment, logger: Logger,
                      closing: (PumpEnd) -> [ByteBuffer]) async throws {
        var clientGone = false
        if case .clientGone = end {
            clientGone = true
        } else {
            switch end {
            case .stopped:
                logger.notice("stream ended at the budget", metadata: ["deployment": "\(deployment.name)"])
            case .failed(let failure):
                logger.warning("stream failed after first byte", metadata: ["deployment": "\(deployment.name)", "code": "\(failure.code)"])
            case .completed, .clientGone:
                break
            }
            do {
                for buffer in closing(end) { try await writer.write(buffer) }
            } catch {
                clientGone = true
            }
        }
        await meter?.finish()
        if clientGone {
            logger.notice("stream ended: the client went away", metadata: ["deployment": "\(deployment.name)", "outcome": "client_disconnected"])
            StreamDisconnects.count.add(1, ordering: .relaxed)
            return
        }
        try await writer.finish(nil)
    }

    /// The chunk that ends a stream cut short by a budget: `finish_reason: length`.
    static func budgetStop(after chunk: ChatChunk?) -> ChatChunk {
        ChatChunk(id: chunk?.id ?? "chatcmpl-\(FastRandom.hex(bytes: 12))", created: chunk?.created ?? Int64(Date().timeIntervalSince1970),
                  model: chunk?.model ?? "", choices: [ChunkChoice(index: 0, delta: ChunkDelta(), finishReason: .length)])
    }

    /// A chat stream in the exchange's dialect, with its limit headers: each chunk passes the
    /// output guard and the restorer; `meter` counts it, may end it at a budget, and settles it.
    /// `collector` sees each chunk as the client gets it and is finished when the stream completes.
    static func chat(_ routed: Routed<PrimedStream<ChatChunk>>, exchange: ChatExchange, meter: StreamMeter?,
                     outputGuard: ChunkGuard?, restorer: ChunkRestorer?, collector: StreamCollector?) -> Response {
        var response: Response
        switch exchange.dialect {
        case .openAI:
            response = openAIChat(routed, includeUsage: exchange.request.includeUsage, meter: meter, restorer: restorer,
                                  outputGuard: outputGuard, collector: collector, logger: exchange.logger)
        case .anthropic:
            response = anthropicChat(routed, model: exchange.request.model, meter: meter, restorer: restorer,
                                     outputGuard: outputGuard, collector: collector, logger: exchange.logger)
        }
        RequestPipeline.addLimitHeaders(exchange.grant, to: &response.headers)
        return response
    }

    /// An OpenAI-framed chat stream; `meter` counts it, may end it at a budget, and settles it.
    static func openAIChat(_ routed: Routed<PrimedStream<ChatChunk>>, includeUsage: Bool, meter: StreamMeter?,
                           restorer: ChunkRestorer? = nil, outputGuard: ChunkGuard? = nil, collector: StreamCollector? = nil, logger: Logger) -> Response {
        let framing = OpenAIChunkFraming(includeUsage: includeUsage)
        let deployment = routed.deployment
        let primed = routed.value
        let body = ResponseBody { writer in
            let end = await pump(primed, writer: &writer, deployment: deployment, gate: { chunk in await meter?.admit(chunk) ?? true }) { (chunk: ChatChunk) throws(GatewayError) -> [ByteBuffer] in
                let inspected = try outputGuard?.apply(chunk) ?? chunk
                let delivered = restorer?.restore(inspected) ?? inspected
                collector?.add(delivered)
                return framing.frame(delivered).map { [$0] } ?? []
            }
            outputGuard?.finish()
            try await close(end, writer: &writer, meter: meter, deployment: deployment, logger: logger) { end in
                switch end {
                case .completed, .clientGone:
                    return [SSEWriter.done]
                case .stopped:
                    return (framing.frame(budgetStop(after: primed.first)).map { [$0] } ?? []) + [SSEWriter.done]
                case .failed(let failure):
                    return [SSEWriter.data(JSONWriter.bytes(failure.openAIEnvelope()))]
                }
            }
            if case .completed = end { await collector?.finish() }   // after the client has its last byte
        }
        return Response(status: .ok, headers: headers(routed), body: body)
    }

    /// An OpenAI-framed legacy completion stream; `meter` counts its text and settles it.
    static func completion(_ routed: Routed<PrimedStream<JSONValue>>, includeUsage: Bool, meter: StreamMeter?, logger: Logger) -> Response {
        let framing = CompletionChunkFraming(includeUsage: includeUsage)
        let deployment = routed.deployment
        let primed = routed.value
        let body = ResponseBody { writer in
            let end = await pump(primed, writer: &writer, deployment: deployment, gate: { object in
                let usage = try? OpenAIWire.decodeUsage(object.objectValue?["usage"])
                var characters = 0
                for choice in object.objectValue?["choices"]?.arrayValue ?? [] { characters += choice.objectValue?["text"]?.stringValue?.count ?? 0 }
                return await meter?.admit(characters: characters, usage: usage ?? nil) ?? true
            }) { object in
                framing.frame(object).map { [$0] } ?? []
            }
            try await close(end, writer: &writer, meter: meter, deployment: deployment, logger: logger) { end in
                switch end {
                case .completed, .stopped, .clientGone:
                    return [SSEWriter.done]
                case .failed(let failure):
                    return [SSEWriter.data(JSONWriter.bytes(failure.openAIEnvelope()))]
                }
            }
        }
        return Response(status: .ok, headers: headers(routed), body: body)
    }

    /// An Anthropic-framed chat stream (`message_start` … `message_stop`).
    static func anthropicChat(_ routed: Routed<PrimedStream<ChatChunk>>, model: String, meter: StreamMeter?,
                              restorer: ChunkRestorer? = nil, outputGuard: ChunkGuard? = nil, collector: StreamCollector? = nil,
                              logger: Logger) -> Response {
        let deployment = routed.deployment
        let primed = routed.value
        let body = ResponseBody { writer in
            var encoder = AnthropicStreamEncoder(model: model)
            let end = await pump(primed, writer: &writer, deployment: deployment, gate: { chunk in await meter?.admit(chunk) ?? true }) { (chunk: ChatChunk) throws(GatewayError) -> [ByteBuffer] in
                let inspected = try outputGuard?.apply(chunk) ?? chunk
                let delivered = restorer?.restore(inspected) ?? inspected
                collector?.add(delivered)
                return encoder.encode(delivered)
            }
            outputGuard?.finish()
            try await close(end, writer: &writer, meter: meter, deployment: deployment, logger: logger) { end in
                switch end {
                case .completed, .clientGone:
                    return encoder.finish()
                case .stopped:
                    return encoder.encode(budgetStop(after: primed.first)) + encoder.finish()
                case .failed(let failure):
                    return [AnthropicStreamEncoder.errorEvent(failure)]
                }
            }
            if case .completed = end { await collector?.finish() }   // after the client has its last byte
        }
        return Response(status: .ok, headers: headers(routed), body: body)
    }
}

/// Streams that ended because the client went away (exported on `/metrics`).
enum StreamDisconnects {
    static let count = Atomic<Int>(0)
}

/// Headers that tell the client which model group and deployment served it (names only, never secrets).
enum RoutingHeaders {
    static func add<Value>(to headers: inout HTTPFields, _ routed: Routed<Value>) {
        headers[HTTPField.Name("x-portcullis-model-group")!] = routed.group
        headers[HTTPField.Name("x-portcullis-deployment")!] = routed.deployment.name
        headers[HTTPField.Name("x-portcullis-attempts")!] = String(routed.attempts)
        // Every deployment of the group was marked down by health checks; this one was tried anyway.
        if routed.panic { headers[HTTPField.Name("x-portcullis-panic-routing")!] = "true" }
    }
}
