/// The family an error belongs to; decides the `type` field of each wire envelope.
public enum GatewayErrorKind: String, Sendable {
    case invalidRequest
    case authentication
    case permission
    case notFound
    case requestTooLarge
    case rateLimited
    case upstream
    case overloaded
    case timeout
    case internalError

    /// The `error.type` OpenAI clients see.
    public var openAIType: String {
        switch self {
        case .invalidRequest, .notFound, .requestTooLarge: return "invalid_request_error"
        case .authentication: return "authentication_error"
        case .permission: return "permission_error"
        case .rateLimited: return "rate_limit_error"
        case .upstream, .overloaded, .timeout: return "api_error"
        case .internalError: return "server_error"
        }
    }

    /// The `error.type` Anthropic clients see.
    public var anthropicType: String {
        switch self {
        case .invalidRequest: return "invalid_request_error"
        case .authentication: return "authentication_error"
        case .permission: return "permission_error"
        case .notFound: return "not_found_error"
        case .requestTooLarge: return "request_too_large"
        case .rateLimited: return "rate_limit_error"
        case .overloaded: return "overloaded_error"
        case .upstream, .timeout, .internalError: return "api_error"
        }
    }
}

/// Which client API an error must be rendered for.
public enum WireDialect: Sendable {
    case openAI
    case anthropic
}

/// A refusal or failure the client should see, with a stable machine-readable code.
///
/// Messages are written for the client: they never contain credentials or
/// upstream internals beyond the name of the deployment that failed.
public struct GatewayError: Error, Sendable, Equatable, CustomStringConvertible {
    /// HTTP status code (`status`, as Hummingbird reads it, is this code's `HTTPResponse.Status`).
    public var statusCode: Int
    /// The error family.
    public var kind: GatewayErrorKind
    /// The stable code, from the one catalog (`ErrorCode`).
    public var code: ErrorCode
    /// Human-readable explanation.
    public var message: String
    /// The request parameter at fault, when one is.
    public var param: String?
    /// Extra response headers such as `Retry-After`.
    public var headers: [String: String]
    /// What a limit or budget refusal counted against (`key`, `user`, `team`, `model`, `global`), for metrics.
    public var scope: String?

    public init(status: Int, kind: GatewayErrorKind, code: ErrorCode, message: String, param: String? = nil, headers: [String: String] = [:]) {
        self.statusCode = status
        self.kind = kind
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers
    }

    public var description: String { "\(statusCode) \(code.rawValue): \(message)" }

    /// The OpenAI envelope: `{"error":{"message","type","param","code"}}`.
    public func openAIEnvelope() -> JSONValue {
        .object([
            "error": .object([
                "message": .string(message),
                "type": .string(kind.openAIType),
                "param": param.map(JSONValue.string) ?? .null,
                "code": .string(code.rawValue),
            ])
        ])
    }

    /// The Anthropic envelope: `{"type":"error","error":{"type","message"}}`, plus our stable code.
    public func anthropicEnvelope(requestID: String?) -> JSONValue {
        var object: JSONObject = [
            "type": "error",
            "error": .object(["type": .string(kind.anthropicType), "message": .string(message), "code": .string(code.rawValue)]),
        ]
        if let requestID { object["request_id"] = .string(requestID) }
        return .object(object)
    }

    /// The envelope for `dialect`.
    public func envelope(for dialect: WireDialect, requestID: String?) -> JSONValue {
        switch dialect {
        case .openAI: return openAIEnvelope()
        case .anthropic: return anthropicEnvelope(requestID: requestID)
        }
    }
}

extension GatewayError {
    /// 400: the body is not JSON; says where.
    public static func invalidJSON(_ error: JSONParseError) -> GatewayError {
        GatewayError(status: 400, kind: .invalidRequest, code: .invalidJson,
                     message: "The request body is not valid JSON: \(error.description) (byte offset \(error.offset)).")
    }

    /// 400: a field is missing or has the wrong shape.
    public static func invalidParameter(_ param: String, _ message: String) -> GatewayError {
        GatewayError(status: 400, kind: .invalidRequest, code: .invalidParameter, message: message, param: param)
    }

    /// 404: no such model; lists what exists.
    public static func modelNotFound(_ model: String, available: [String]) -> GatewayError {
        let list = available.sorted().joined(separator: ", ")
        return GatewayError(status: 404, kind: .notFound, code: .modelNotFound,
                            message: "The model '\(echo(model))' does not exist. Available models: \(list.isEmpty ? "(none)" : list).",
                            param: "model")
    }

    /// Client input as an error message may repeat it: at most `limit` characters, marked when cut.
    public static func echo(_ text: String, limit: Int = 64) -> String {
        guard text.count > limit else { return text }
        return String(text.prefix(limit)) + "… (\(text.utf8.count) bytes)"
    }

    /// 400: the body's HTTP framing is broken or it ended before its declared length.
    public static let malformedBody = GatewayError(status: 400, kind: .invalidRequest, code: .malformedBody,
        message: "The request body could not be read: its chunked encoding or Content-Length is invalid, or it ended early.")

    /// 413: the body exceeds the configured limit.
    public static func bodyTooLarge(limit: Int) -> GatewayError {
        GatewayError(status: 413, kind: .requestTooLarge, code: .requestTooLarge,
                     message: "The request body exceeds the limit of \(limit) bytes.")
    }

    /// 401: credentials missing or wrong.
    public static func unauthenticated(_ message: String = "Missing or invalid API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.") -> GatewayError {
        GatewayError(status: 401, kind: .authentication, code: .invalidApiKey, message: message)
    }

    /// 400: the model cannot serve this kind of request.
    public static func unsupported(_ message: String, param: String? = nil) -> GatewayError {
        GatewayError(status: 400, kind: .invalidRequest, code: .unsupportedOperation, message: message, param: param)
    }

    /// 500 that exposes no internals.
    public static let internalFailure = GatewayError(status: 500, kind: .internalError, code: .internalError,
                                                     message: "The gateway hit an internal error. The request id identifies it in the logs.")
}
