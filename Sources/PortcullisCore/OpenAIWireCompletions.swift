extension OpenAIWire {
    // MARK: Completions and embeddings

    /// Reads a `/v1/completions` body.
    public static func decodeCompletionRequest(_ value: JSONValue) throws(GatewayError) -> CompletionRequest {
        guard let root = value.objectValue else {
            throw .invalidParameter("body", "The request body must be a JSON object, not \(value.typeName).")
        }
        let reader = FieldReader(root)
        let model = try reader.requiredString("model")
        guard let prompt = root["prompt"], !prompt.isNull else { throw .invalidParameter("prompt", "'prompt' is required.") }
        switch prompt {
        case .string, .array: break
        default: throw .invalidParameter("prompt", "'prompt' must be a string or an array, not \(prompt.typeName).")
        }
        var request = CompletionRequest(model: model, prompt: prompt)
        request.stream = try reader.bool("stream") ?? false
        if let options = try reader.object("stream_options") {
            request.includeUsage = try FieldReader(options, path: "stream_options").bool("include_usage") ?? false
        }
        request.maxTokens = try reader.integer("max_tokens", in: 0...10_000_000).map(Int.init)
        request.temperature = try reader.number("temperature", in: 0...2)
        request.stop = try reader.stringOrStrings("stop")
        request.extra = reader.unknownMembers(known: ["model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "stop"])
        return request
    }

    /// Writes a completion request for an OpenAI-compatible upstream.
    public static func encodeCompletionRequest(_ request: CompletionRequest, upstreamModel: String) -> JSONValue {
        var object: JSONObject = ["model": .string(upstreamModel), "prompt": request.prompt]
        if request.stream {
            object["stream"] = true
            if request.includeUsage { object["stream_options"] = ["include_usage": true] }
        }
        if let maxTokens = request.maxTokens { object["max_tokens"] = .integer(Int64(maxTokens)) }
        if let temperature = request.temperature { object["temperature"] = .double(temperature) }
        if let stop = request.stop { object["stop"] = .array(stop.map(JSONValue.string)) }
        object.merge(missingFrom: request.extra)
        return .object(object)
    }

    /// Reads an `/v1/embeddings` body.
    public static func decodeEmbeddingRequest(_ value: JSONValue) throws(GatewayError) -> EmbeddingRequest {
        guard let root = value.objectValue else {
            throw .invalidParameter("body", "The request body must be a JSON object, not \(value.typeName).")
        }
        let reader = FieldReader(root)
        let model = try reader.requiredString("model")
        guard let input = root["input"], !input.isNull else { throw .invalidParameter("input", "'input' is required.") }
        switch input {
        case .string: break
        case .array(let elements) where !elements.isEmpty: break
        case .array: throw .invalidParameter("input", "'input' must not be empty.")
        default: throw .invalidParameter("input", "'input' must be a string or an array, not \(input.typeName).")
        }
        if let format = try reader.string("encoding_format"), format != "float", format != "base64" {
            throw .invalidParameter("encoding_format", "'encoding_format' must be float or base64; got '\(format)'.")
        }
        return EmbeddingRequest(model: model, input: input, extra: reader.unknownMembers(known: ["model", "input"]))
    }

    /// Writes an embeddings request for an OpenAI-compatible upstream.
    public static func encodeEmbeddingRequest(_ request: EmbeddingRequest, upstreamModel: String) -> JSONValue {
        var object: JSONObject = ["model": .string(upstreamModel), "input": request.input]
        object.merge(missingFrom: request.extra)
        return .object(object)
    }

    /// An error for an upstream body that does not follow the documented schema.
    public static func malformedUpstream(_ detail: String) -> GatewayError {
        GatewayError(status: 502, kind: .upstream, code: .upstreamMalformedResponse,
                     message: "The upstream provider returned a response the gateway could not read (\(detail)).")
    }
}
