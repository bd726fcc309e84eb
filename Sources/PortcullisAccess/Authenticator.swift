import Foundation
import PortcullisCore
import PortcullisStorage
import Synchronization

/// Turns a presented credential into a `Principal`: the master key, a virtual API key
/// (validated once, then served from the in-process cache), an OIDC bearer token, or, when
/// none is presented, a verified TLS client certificate whose subject is mapped.
public final class Authenticator: Sendable {
    private let masterKey: [UInt8]?
    private let keys: APIKeyStore
    public let cache: ValidatedKeyCache
    private let tokens: TokenVerifier
    private let health: DatabaseHealth
    private let recorder: UsageRecorder?
    /// Whether a request without a credential is refused.
    public let isRequired: Bool
    private let failOpen: Bool
    private let mfaRequiredRoles: Set<Role>
    private let certificatePrincipals: [String: Principal]
    private let staleAdmissions = Atomic<Int>(0)

    /// Whether some client certificate subject authenticates (the listener then reads the peer's certificate).
    public var acceptsCertificates: Bool { !certificatePrincipals.isEmpty }

    /// Requests admitted on a cached key while the database was unreachable (fail-open).
    public var staleAdmissionCount: Int { staleAdmissions.load(ordering: .relaxed) }

    public init(masterKey: String?, keys: APIKeyStore, cache: ValidatedKeyCache, tokens: TokenVerifier, health: DatabaseHealth,
                recorder: UsageRecorder?, isRequired: Bool, failOpen: Bool, mfaRequiredRoles: Set<Role>,
                certificatePrincipals: [CertificatePrincipalConfiguration] = []) {
        self.masterKey = masterKey.map { Array($0.utf8) }
        self.keys = keys
        self.cache = cache
        self.tokens = tokens
        self.health = health
        self.recorder = recorder
        self.isRequired = isRequired
        self.failOpen = failOpen
        self.mfaRequiredRoles = mfaRequiredRoles
        self.certificatePrincipals = Dictionary(certificatePrincipals.map { ($0.subject, $0.principal) }, uniquingKeysWith: { first, _ in first })
    }

    /// The principal for `presented` (nil: no credential sent), or the refusal to send. A
    /// credential wins over the certificate; without one, `certificateSubject` (a verified
    /// client certificate's) is the caller when it is mapped.
    public func authenticate(_ presented: String?, certificateSubject: String? = nil, now: Date = Date()) async throws -> Principal {
        guard let presented, !presented.isEmpty else {
            if let certificateSubject, let principal = certificatePrincipals[certificateSubject] {
                try requireFactors(of: principal)
                return principal
            }
            if isRequired { throw GatewayError.unauthenticated() }
            return .anonymous
        }
        if let masterKey, Self.constantTimeEquals(masterKey, presented.utf8) { return .master }
        if presented.hasPrefix(APIKeyStore.prefix) {
            return try await authenticateKey(presented, now: now)
        }
        if TokenVerifier.looksLikeToken(presented) {
            if tokens.isEmpty { throw GatewayError.unauthenticated("Bearer tokens are not accepted: no OIDC issuer is configured.") }
            let principal: Principal
            do {
                principal = try await tokens.verify(presented, now: now.timeIntervalSince1970)
            } catch let rejection as TokenRejection {
                throw GatewayError(status: 401, kind: .authentication, code: .invalidToken, message: rejection.message)
            }
            try requireFactors(of: principal)
            return principal
        }
        throw GatewayError.unauthenticated("The API key is not valid.")
    }

    private func requireFactors(of principal: Principal) throws {
        if mfaRequiredRoles.contains(principal.role) && !principal.multiFactor {
            throw GatewayError(status: 403, kind: .permission, code: .mfaRequired,
                               message: "The \(principal.role.rawValue) role requires multi-factor authentication; sign in again with MFA.")
        }
    }

    private func authenticateKey(_ text: String, now: Date) async throws -> Principal {
        let seconds = Int64(now.timeIntervalSince1970)
        if let record = cache.record(for: text) {
            return try accept(record, now: seconds)
        }
        // While the database is known to be down nothing waits on it: a key validated before is
        // served (fail-open) and others are refused, until the health probe sees it answer again.
        if !health.isReachable {
            if failOpen, let stale = cache.record(for: text, allowingStale: true) {
                staleAdmissions.add(1, ordering: .relaxed)
                return try accept(stale, now: seconds)
            }
            throw Self.storeUnavailable
        }
        let record: APIKeyRecord?
        do {
            record = try await keys.authenticate(text, now: now)
            health.recordSuccess()
        } catch {
            health.recordFailure()
            if failOpen, let stale = cache.record(for: text, allowingStale: true) {
                staleAdmissions.add(1, ordering: .relaxed)
                return try accept(stale, now: seconds)
            }
            throw Self.storeUnavailable
        }
        guard let record else { throw GatewayError.unauthenticated("The API key is not valid, has expired or was revoked.") }
        cache.store(record, for: text, now: now.timeIntervalSince1970)
        return try accept(record, now: seconds)
    }

    static let storeUnavailable = GatewayError(status: 503, kind: .overloaded, code: .credentialStoreUnavailable,
                                               message: "API keys cannot be checked right now; try again shortly.", headers: ["Retry-After": "5"])

    private func accept(_ record: APIKeyRecord, now: Int64) throws -> Principal {
        if let expires = record.expiresAt, now >= expires {
            throw GatewayError.unauthenticated("The API key has expired.")
        }
        // A rotated-out secret ends with its grace period, cached or not, on every replica.
        if let until = record.secretValidUntil, now >= until {
            throw GatewayError.unauthenticated("The API key was rotated and its previous secret's grace period has ended.")
        }
        recorder?.touch(keyID: record.keyID, now: now)
        return Principal(key: record)
    }

    static func constantTimeEquals(_ lhs: [UInt8], _ rhs: some Collection<UInt8>) -> Bool {
        var difference = UInt8(truncatingIfNeeded: lhs.count ^ rhs.count)
        var index = 0
        for byte in rhs {
            difference |= byte ^ (index < lhs.count ? lhs[index] : 0)
            index += 1
        }
        return difference == 0
    }
}

/// Which client addresses may call: static lists from the configuration plus rules managed
/// through the admin API (reloaded on every replica when any replica changes them).
public final class IPPolicyEngine: Sendable {
    private let allow: [CIDR]
    private let deny: [CIDR]
    private let adminAllow: [CIDR]
    private let trustedProxies: [CIDR]
    /// Rules managed through the admin API, each with its expiry (unix seconds; `.max` for none),
    /// so a rule stops applying the second it expires, not at the next reload.
    private let dynamic = Mutex<(allow: [(CIDR, Int64)], deny: [(CIDR, Int64)])>(([], []))
    /// Addresses (or CIDR blocks) in Redis's `blocked_ips` set: the incident runbook's
    /// `SADD blocked_ips ADDRESS` blocks them on every replica.
    private let blocked = Mutex<[CIDR]>([])
    private let stale = Atomic<Bool>(false)
    /// Wakes the refresher when the rules went stale (buffering one wake-up is enough).
    public let staleSignals: AsyncStream<Void>
    private let staleContinuation: AsyncStream<Void>.Continuation

    public init(allow: [String], deny: [String], adminAllow: [String], trustedProxies: [String]) {
        self.allow = allow.compactMap(CIDR.init)
        self.deny = deny.compactMap(CIDR.init)
        self.adminAllow = adminAllow.compactMap(CIDR.init)
        self.trustedProxies = trustedProxies.compactMap(CIDR.init)
        (staleSignals, staleContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Notes that the dynamic rules changed somewhere; the refresher reloads them.
    public func markStale() {
        stale.store(true, ordering: .relaxed)
        staleContinuation.yield()
    }

    /// Whether a reload is due (and clears the mark).
    public func takeStale() -> Bool { stale.exchange(false, ordering: .relaxed) }

    /// Replaces the dynamic rules (those not expired).
    public func update(_ rules: [IPRuleRecord], now: Int64 = Int64(Date().timeIntervalSince1970)) {
        let active = rules.filter { ($0.expiresAt ?? .max) > now }
        func entries(_ action: IPRuleRecord.Action) -> [(CIDR, Int64)] {
            active.filter { $0.action == action }.compactMap { rule in CIDR(rule.cidr).map { ($0, rule.expiresAt ?? .max) } }
        }
        let allow = entries(.allow), deny = entries(.deny)
        dynamic.withLock { $0 = (allow, deny) }
    }

    /// Replaces the addresses blocked through Redis (members that are not addresses or CIDR blocks are ignored).
    public func updateBlocked(_ members: [String]) {
        let parsed = members.compactMap { CIDR($0.trimmingCharacters(in: .whitespaces)) }
        blocked.withLock { $0 = parsed }
    }

    /// The client's address: the peer, or — when the peer is a trusted proxy — the first
    /// address in `X-Forwarded-For`, read from the right, that is not itself a trusted proxy.
    public func clientAddress(peer: IPAddress?, forwardedFor: String?) -> IPAddress? {
        guard let peer else { return nil }
        guard let forwardedFor, isTrustedProxy(peer) else { return peer }
        var client = peer
        for hop in forwardedFor.split(separator: ",").reversed() {
            guard let address = IPAddress(hop.trimmingCharacters(in: .whitespaces)) else { break }
            client = address
            if !isTrustedProxy(address) { break }
        }
        return client
    }

    private func isTrustedProxy(_ address: IPAddress) -> Bool { trustedProxies.contains { $0.contains(address) } }

    /// Nil when `address` may call (an admin route when `admin`), else the refusal.
    public func check(_ address: IPAddress?, admin: Bool, now: Int64 = Int64(Date().timeIntervalSince1970)) -> GatewayError? {
        let (dynamicAllow, dynamicDeny) = dynamic.withLock { rules in
            (rules.allow.compactMap { $0.1 > now ? $0.0 : nil }, rules.deny.compactMap { $0.1 > now ? $0.0 : nil })
        }
        let blockedNow = blocked.withLock { $0 }
        let anyRules = !allow.isEmpty || !deny.isEmpty || !dynamicAllow.isEmpty || !dynamicDeny.isEmpty || !blockedNow.isEmpty
            || (admin && !adminAllow.isEmpty)
        guard anyRules else { return nil }
        guard let address else { return Self.refusal }
        if deny.contains(where: { $0.contains(address) }) || dynamicDeny.contains(where: { $0.contains(address) })
            || blockedNow.contains(where: { $0.contains(address) }) { return Self.refusal }
        let allowList = allow + dynamicAllow
        if !allowList.isEmpty && !allowList.contains(where: { $0.contains(address) }) { return Self.refusal }
        if admin && !adminAllow.isEmpty && !adminAllow.contains(where: { $0.contains(address) }) { return Self.refusal }
        return nil
    }

    static let refusal = GatewayError(status: 403, kind: .permission, code: .ipNotAllowed, message: "Requests from this address are not allowed.")
}
