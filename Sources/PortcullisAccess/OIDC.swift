import Foundation
import PortcullisCore
import Synchronization

/// Fetches a JSON document over HTTP(S); the server supplies it (with its HTTP client and trust settings).
public typealias JSONFetcher = @Sendable (_ url: String) async throws -> JSONValue

/// One issuer's signing keys: the discovery document and JWKS are fetched on first use,
/// refreshed every `refreshInterval`, and fetched again when a token names an unknown `kid`
/// (at most once per `minimumRefreshGap`, so unknown kids cannot hammer the issuer).
public actor IssuerKeys {
    public let policy: IssuerPolicy
    private let configuredJWKSURL: String?
    private let fetch: JSONFetcher
    private let refreshInterval: Double
    private let minimumRefreshGap: Double
    private var keySet: KeySet?
    private var fetchedAt: Double = -.infinity
    private var attemptedAt: Double = -.infinity
    private var refreshing: Task<KeySet, any Error>?

    public init(policy: IssuerPolicy, jwksURL: String?, fetch: @escaping JSONFetcher, refreshInterval: Double = 600, minimumRefreshGap: Double = 1) {
        self.policy = policy
        self.configuredJWKSURL = jwksURL
        self.fetch = fetch
        self.refreshInterval = refreshInterval
        self.minimumRefreshGap = minimumRefreshGap
    }

    /// The key `kid` names (or, without a kid, the only candidates), refreshing the set when needed.
    func keys(kid: String?, now: Double) async throws -> [KeySet.Entry] {
        if keySet == nil || now - fetchedAt > refreshInterval {
            try await refresh(now: now)
        }
        if let found = lookup(kid) , !found.isEmpty { return found }
        if now - attemptedAt >= minimumRefreshGap {
            try await refresh(now: now)
            if let found = lookup(kid), !found.isEmpty { return found }
        }
        throw TokenRejection(.unknownKey, "The token was signed by a key the issuer does not publish.")
    }

    private func lookup(_ kid: String?) -> [KeySet.Entry]? {
        guard let keySet else { return nil }
        if let kid { return keySet.keys[kid].map { [$0] } }
        return keySet.anonymous.isEmpty ? Array(keySet.keys.values) : keySet.anonymous
    }

    private func refresh(now: Double) async throws {
        if let refreshing {
            _ = try await refreshing.value
            return
        }
        attemptedAt = now
        let fetch = self.fetch
        let issuer = policy.issuer
        let configured = configuredJWKSURL
        let task = Task { () throws -> KeySet in
            var url = configured
            if url == nil {
                let discovery = try await fetch(joinIssuer(issuer, ".well-known/openid-configuration"))
                guard let found = discovery.objectValue?["jwks_uri"]?.stringValue else {
                    throw TokenRejection(.unknownKey, "The issuer's discovery document names no jwks_uri.")
                }
                url = found
            }
            return KeySet(jwks: try await fetch(url ?? ""))
        }
        refreshing = task
        defer { refreshing = nil }
        do {
            keySet = try await task.value
            fetchedAt = now
        } catch let rejection as TokenRejection {
            throw rejection
        } catch {
            // Keep serving the keys we had; with none, no token from this issuer can be checked.
            if keySet == nil { throw TokenRejection(.unknownKey, "The issuer's keys cannot be fetched right now.") }
        }
    }
}

private func joinIssuer(_ issuer: String, _ path: String) -> String {
    issuer.hasSuffix("/") ? issuer + path : issuer + "/" + path
}

/// Verifies OIDC bearer tokens against the configured issuers and caches the principals of
/// tokens already verified (until they expire), so a repeated token costs one lookup.
public final class TokenVerifier: Sendable {
    private let issuers: [String: IssuerKeys]
    private let cache = Mutex<[String: (principal: Principal, validUntil: Double)]>([:])
    private let cacheCapacity: Int

    public init(issuers: [IssuerKeys], cacheCapacity: Int = 50_000) {
        var byName: [String: IssuerKeys] = [:]
        for issuer in issuers { byName[issuer.policy.issuer] = issuer }
        self.issuers = byName
        self.cacheCapacity = cacheCapacity
    }

    /// Whether any issuer is configured.
    public var isEmpty: Bool { issuers.isEmpty }

    /// Whether `text` looks like a JWT (three base64url parts) rather than an opaque key.
    public static func looksLikeToken(_ text: String) -> Bool {
        text.utf8.count > 20 && text.utf8.filter { $0 == UInt8(ascii: ".") }.count == 2 && text.hasPrefix("ey")
    }

    /// The principal the token proves, or a rejection saying why not.
    public func verify(_ token: String, now: Double = Date().timeIntervalSince1970) async throws -> Principal {
        if let hit = cache.withLock({ $0[token] }) {
            if hit.validUntil > now { return hit.principal }
            cache.withLock { $0[token] = nil }
        }
        let parsed = try UnverifiedToken(token)
        guard let algorithm = parsed.header["alg"]?.stringValue else { throw TokenRejection(.malformed, "The token names no algorithm.") }
        if algorithm.lowercased() == "none" || algorithm.hasPrefix("HS") {
            throw TokenRejection(.unsupportedAlgorithm, "Tokens signed with '\(algorithm)' are not accepted.")
        }
        if parsed.header["crit"] != nil {
            throw TokenRejection(.malformed, "The token has critical header parameters this gateway does not understand.")
        }
        guard let issuerName = parsed.claims["iss"]?.stringValue, let issuer = issuers[issuerName] else {
            throw TokenRejection(.unknownIssuer, "The token's issuer is not trusted by this gateway.")
        }
        let policy = issuer.policy
        guard policy.algorithms.contains(algorithm) else {
            throw TokenRejection(.unsupportedAlgorithm, "Tokens signed with '\(algorithm)' are not accepted from this issuer.")
        }
        let candidates = try await issuer.keys(kid: parsed.header["kid"]?.stringValue, now: now)
        let verified = candidates.contains { entry in
            (entry.algorithm == nil || entry.algorithm == algorithm) && entry.key.verifies(parsed.signature, over: parsed.signingInput, algorithm: algorithm)
        }
        guard verified else { throw TokenRejection(.badSignature, "The token's signature is not valid.") }
        let principal = try policy.principal(from: parsed.claims, now: now)
        let expiry = parsed.claims["exp"]?.doubleValue ?? now
        cache.withLock { cache in
            if cache.count >= cacheCapacity { cache.removeAll(keepingCapacity: true) }
            cache[token] = (principal, min(expiry + policy.leeway, now + 300))
        }
        return principal
    }
}
