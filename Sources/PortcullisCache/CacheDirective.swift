import PortcullisCore

/// What one request asks of the cache: the `Cache-Control` header and the body's `cache`
/// object (`{"ttl": seconds, "no-cache": true, "no-store": true, "namespace": "…"}`).
///
/// `no-cache` skips the lookup but stores the fresh answer; `no-store` neither reads nor
/// writes; a namespace partitions entries within the tenant; `ttl` sets this answer's
/// lifetime (bounded by `maximum_ttl_seconds`).
public struct CacheDirective: Sendable, Equatable {
    public var skipLookup = false
    public var skipStore = false
    public var ttlSeconds: Double?
    public var namespace = ""

    public init(skipLookup: Bool = false, skipStore: Bool = false, ttlSeconds: Double? = nil, namespace: String = "") {
        self.skipLookup = skipLookup
        self.skipStore = skipStore
        self.ttlSeconds = ttlSeconds
        self.namespace = namespace
    }

    /// The directive of a request: its `Cache-Control` header value and the body's `cache`
    /// field, which is removed from `extra` (it is the gateway's, never the provider's).
    /// A malformed `cache` object is the client's `400 invalid_parameter`.
    public static func take(from extra: inout JSONObject, cacheControl: String?) throws(GatewayError) -> CacheDirective {
        var directive = CacheDirective()
        for token in (cacheControl ?? "").split(separator: ",") {
            switch token.trimmingSpaces.lowercased() {
            case "no-cache": directive.skipLookup = true
            case "no-store": directive.skipLookup = true; directive.skipStore = true
            default: continue   // other directives (max-age, …) mean nothing here
            }
        }
        guard let value = extra.removeValue(forKey: "cache") else { return directive }
        guard case .object(let object) = value else {
            throw GatewayError.invalidParameter("cache", "'cache' must be an object such as {\"ttl\": 600, \"no-store\": true}, not a \(value.typeName).")
        }
        for (key, field) in object {
            switch key {
            case "ttl":
                guard let seconds = field.doubleValue, seconds > 0, seconds.isFinite else {
                    throw GatewayError.invalidParameter("cache.ttl", "'cache.ttl' must be a positive number of seconds.")
                }
                directive.ttlSeconds = seconds
            case "no-cache", "no_cache":
                guard let flag = field.boolValue else { throw GatewayError.invalidParameter("cache.\(key)", "'cache.\(key)' must be true or false.") }
                directive.skipLookup = directive.skipLookup || flag
            case "no-store", "no_store":
                guard let flag = field.boolValue else { throw GatewayError.invalidParameter("cache.\(key)", "'cache.\(key)' must be true or false.") }
                if flag { directive.skipLookup = true; directive.skipStore = true }
            case "namespace":
                guard let name = field.stringValue, name.utf8.count <= 128 else {
                    throw GatewayError.invalidParameter("cache.namespace", "'cache.namespace' must be a string of at most 128 bytes.")
                }
                directive.namespace = name
            default:
                throw GatewayError.invalidParameter("cache.\(GatewayError.echo(key))",
                                                    "Unknown field 'cache.\(GatewayError.echo(key))': expected ttl, no-cache, no-store or namespace.")
            }
        }
        return directive
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }
}
