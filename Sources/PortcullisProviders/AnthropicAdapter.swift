import Foundation
import NIOCore
import NIOHTTP1
import PortcullisCore

/// Anthropic's Messages API as an upstream.
public struct AnthropicAdapter: ChatBackedCompletions {
    private let http: UpstreamHTTPClient

    public init(http: UpstreamHTTPClient) {
        self.http = http
    }

    private func headers(_ target: DeploymentTarget, streaming: Bool) -> [(String, String)] {
        var headers: [(String, String)] = [("accept", streaming ? "text/event-stream" : "application/json"),
                                           ("anthropic-version", AnthropicWire.apiVersion)]
        if let key = target.apiKey, !key.isEmpty { headers.append(("x-api-key", key)) }
        return headers
    }

    public func chat(_ request: ChatRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> ChatCompletion {
        var upstream = request
        upstream.stream = false
        let body = try AnthropicWire.encodeRequest(upstream, upstreamModel: target.upstreamModel, defaultMaxTokens: target.defaultMaxTokens)
        let json = try await http.sendJSON(url: joinURL(target.apiBase, "/v1/messages"), headers: headers(target, streaming: false),
                                           body: body, target: target, context: context)
        do {
            return try AnthropicWire.decodeResponse(json)
        } catch {
            throw UpstreamFailure(reason: .malformed, message: "\(error)", deployment: target.name)
        }
    }

    public func streamChat(_ request: ChatRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> EventStream<ChatChunk> {
        var upstream = request
        upstream.stream = true
        let body = try AnthropicWire.encodeRequest(upstream, upstreamModel: target.upstreamModel, defaultMaxTokens: target.defaultMaxTokens)
        let response = try await http.send(url: joinURL(target.apiBase, "/v1/messages"), headers: headers(target, streaming: true),
                                           body: JSONWriter.buffer(body), target: target, context: context)
        let deployment = target.name
        return UpstreamHTTPClient.events(of: response, deployment: deployment).flatMapEvents({
            var decoder = AnthropicStreamDecoder(deployment: deployment)
            return { event in try decoder.decode(event) }
        })
    }

    public func embeddings(_ request: EmbeddingRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> JSONValue {
        throw GatewayError.unsupported("Anthropic models do not offer embeddings.", param: "model")
    }

    public func checkHealth(target: DeploymentTarget, context: UpstreamContext) async throws {
        let response = try await http.send(method: .GET, url: joinURL(target.apiBase, "/v1/models"),
                                           headers: headers(target, streaming: false), body: nil, target: target, context: context)
        _ = try? await response.body.collect(upTo: 4 * 1024 * 1024)
    }
}

/// A provider that only has a chat API and serves legacy completions through it.
public protocol ChatBackedCompletions: ProviderAdapter {}

extension ChatBackedCompletions {
    public func completion(_ request: CompletionRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> JSONValue {
        let chatRequest = try CompletionBridge.chatRequest(for: request)
        return CompletionBridge.textCompletion(from: try await chat(chatRequest, target: target, context: context))
    }

    public func streamCompletion(_ request: CompletionRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> EventStream<JSONValue> {
        let chatRequest = try CompletionBridge.chatRequest(for: request)
        return CompletionBridge.textChunks(from: try await streamChat(chatRequest, target: target, context: context))
    }
}

/// Serves legacy `/v1/completions` on providers that only have a chat API.
public enum CompletionBridge {
    /// A chat request with the prompt as one user message.
    public static func chatRequest(for request: CompletionRequest) throws(GatewayError) -> ChatRequest {
        guard let prompt = request.singlePromptText else {
            throw .unsupported("This model accepts a single string prompt only.", param: "prompt")
        }
        var chat = ChatRequest(model: request.model, messages: [ChatMessage(role: .user, content: .text(prompt))],
                               stream: request.stream, includeUsage: true, maxTokens: request.maxTokens, temperature: request.temperature)
        chat.stop = request.stop
        return chat
    }

    /// A `text_completion` object from a chat completion.
    public static func textCompletion(from completion: ChatCompletion) -> JSONValue {
        var object: JSONObject = [
            "id": .string(completion.id.replacingOccurrences(of: "chatcmpl-", with: "cmpl-")),
            "object": "text_completion",
            "created": .integer(completion.created),
            "model": .string(completion.model),
            "choices": .array(completion.choices.map { choice in
                ["text": .string(choice.message.content?.text ?? ""), "index": .integer(Int64(choice.index)), "logprobs": .null,
                 "finish_reason": choice.finishReason.map { .string($0.rawValue) } ?? .null]
            }),
        ]
        if let usage = completion.usage { object["usage"] = OpenAIWire.encodeUsage(usage) }
        return .object(object)
    }

    /// `text_completion` chunk objects from chat chunks.
    public static func textChunks(from stream: EventStream<ChatChunk>) -> EventStream<JSONValue> {
        stream.flatMapEvents({
            { (chunk: ChatChunk) -> [JSONValue] in
                var object: JSONObject = [
                    "id": .string(chunk.id.replacingOccurrences(of: "chatcmpl-", with: "cmpl-")),
                    "object": "text_completion",
                    "created": .integer(chunk.created),
                    "model": .string(chunk.model),
                    "choices": .array(chunk.choices.map { choice in
                        ["text": .string(choice.delta.content ?? ""), "index": .integer(Int64(choice.index)), "logprobs": .null,
                         "finish_reason": choice.finishReason.map { .string($0.rawValue) } ?? .null]
                    }),
                ]
                if let usage = chunk.usage { object["usage"] = OpenAIWire.encodeUsage(usage) }
                if chunk.choices.isEmpty && chunk.usage == nil { return [] }
                if chunk.choices.count == 1, chunk.usage == nil, chunk.choices[0].delta.content?.isEmpty ?? true,
                   chunk.choices[0].finishReason == nil {
                    return []
                }
                return [.object(object)]
            }
        })
    }
}
