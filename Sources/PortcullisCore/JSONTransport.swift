/// Where a library that calls a remote JSON service (an external guard) sends its requests,
/// without knowing how: the gateway injects one per service that holds the base address,
/// credentials, deadlines and any request signing.
public protocol JSONTransport: Sendable {
    /// POSTs `body` to `path` (with query, relative to the service's base address) and
    /// returns the JSON answer; throws when the service fails, is late or does not answer JSON.
    func post(path: String, headers: [(String, String)], body: JSONValue, requestID: String) async throws -> JSONValue
}
