import NIOCore
import NIOHTTP1
import PortcullisCore

/// OpenAI's API and everything that speaks it: OpenAI, Azure OpenAI, vLLM, Ollama, any `api_base`.
public struct OpenAIAdapter: ProviderAdapter {
    private let http: UpstreamHTTPClient

    public init(http: UpstreamHTTPClient) {
        self.http = http
    }

    private func url(_ operation: String, _ target: DeploymentTarget) -> String {
        if target.provider == .azure {
            let version = target.apiVersion ?? "2024-10-21"
            let deployment = target.upstreamModel.addingPercentEncodingForPath()
            return joinURL(target.apiBase, "/openai/deployments/\(deployment)/\(operation)?api-version=\(version)")
        }
        return joinURL(target.apiBase, "/" + operation)
    }

    private func headers(_ target: DeploymentTarget, streaming: Bool) -> [(String, String)] {
        var headers: [(String, String)] = [("accept", streaming ? "text/event-stream" : "application/json")]
        if let key = target.apiKey, !key.isEmpty {
            if target.provider == .azure {
                headers.append(("api-key", key))
            } else {
                headers.append(("authorization", "Bearer \(key)"))
            }
        }
        return headers
    }

    public func chat(_ request: ChatRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> ChatCompletion {
        var upstream = request
        upstream.stream = false
        upstream.includeUsage = false
        let body = OpenAIWire.encodeChatRequest(upstream, upstreamModel: target.upstreamModel)
        let json = try await http.sendJSON(url: url("chat/completions", target), headers: headers(target, streaming: false),
                                           body: body, target: target, context: context)
        do {
            return try OpenAIWire.decodeChatCompletion(json)
        } catch {
            throw UpstreamFailure(reason: .malformed, message: error.message, deployment: target.name)
        }
    }

    public func streamChat(_ request: ChatRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> EventStream<ChatChunk> {
        var upstream = request
        upstream.stream = true
        // The gateway always asks for usage so it can account for the call; the
        // server drops the usage chunk for clients that did not ask for it.
        upstream.includeUsage = true
        let body = OpenAIWire.encodeChatRequest(upstream, upstreamModel: target.upstreamModel)
        let response = try await http.send(url: url("chat/completions", target), headers: headers(target, streaming: true),
                                           body: JSONWriter.buffer(body), target: target, context: context)
        let deployment = target.name
        return openAIEvents(response, deployment: deployment).flatMapEvents({
            { (object: JSONValue) throws -> [ChatChunk] in
                do {
                    return [try OpenAIWire.decodeChatChunk(object)]
                } catch {
                    throw UpstreamFailure(reason: .malformed, message: "\(error)", deployment: deployment)
                }
            }
        })
    }

    public func completion(_ request: CompletionRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> JSONValue {
        var upstream = request
        upstream.stream = false
        return try await http.sendJSON(url: url("completions", target), headers: headers(target, streaming: false),
                                       body: OpenAIWire.encodeCompletionRequest(upstream, upstreamModel: target.upstreamModel),
                                       target: target, context: context)
    }

    public func streamCompletion(_ request: CompletionRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> EventStream<JSONValue> {
        var upstream = request
        upstream.stream = true
        upstream.includeUsage = true
        let body = OpenAIWire.encodeCompletionRequest(upstream, upstreamModel: target.upstreamModel)
        let response = try await http.send(url: url("completions", target), headers: headers(target, streaming: true),
                                           body: JSONWriter.buffer(body), target: target, context: context)
        return openAIEvents(response, deployment: target.name)
    }

    public func embeddings(_ request: EmbeddingRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> JSONValue {
        try await http.sendJSON(url: url("embeddings", target), headers: headers(target, streaming: false),
                                body: OpenAIWire.encodeEmbeddingRequest(request, upstreamModel: target.upstreamModel),
                                target: target, context: context)
    }

    public func checkHealth(target: DeploymentTarget, context: UpstreamContext) async throws {
        let probeURL: String
        if target.provider == .azure {
            probeURL = joinURL(target.apiBase, "/openai/models?api-version=\(target.apiVersion ?? "2024-10-21")")
        } else {
            probeURL = joinURL(target.apiBase, "/models")
        }
        let response = try await http.send(method: .GET, url: probeURL, headers: headers(target, streaming: false), body: nil,
                                           target: target, context: context)
        _ = try? await response.body.collect(upTo: 4 * 1024 * 1024)
    }

    /// The `data:` payloads of an OpenAI event stream as JSON, ending at `[DONE]`; an `error` payload fails the stream.
    private func openAIEvents(_ response: UpstreamResponse, deployment: String) -> EventStream<JSONValue> {
        let events = UpstreamHTTPClient.events(of: response, deployment: deployment)
        return EventStream {
            var iterator = events.makeAsyncIterator()
            var done = false
            return {
                while !done {
                    guard let event = try await iterator.next() else { return nil }
                    if event.data == "[DONE]" {
                        done = true
                        return nil
                    }
                    if event.data.isEmpty { continue }
                    let json: JSONValue
                    do {
                        json = try JSONParser.parse(event.data)
                    } catch {
                        throw UpstreamFailure(reason: .malformed, message: "stream event is not JSON (\(error))", deployment: deployment)
                    }
                    if let failure = json.objectValue?["error"], !failure.isNull {
                        let message = failure.objectValue?["message"]?.stringValue ?? "upstream reported an error mid-stream"
                        throw UpstreamFailure(reason: .status(500), message: UpstreamHTTPClient.scrubSecrets(message, apiKey: nil), deployment: deployment)
                    }
                    return json
                }
                return nil
            }
        }
    }
}

extension String {
    func addingPercentEncodingForPath() -> String {
        var result = ""
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                result.append(Character(UnicodeScalar(byte)))
            default:
                result += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return result
    }

    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
