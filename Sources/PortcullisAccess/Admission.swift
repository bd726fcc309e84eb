import Foundation
import PortcullisCore
import PortcullisStorage

/// What a request was admitted with: released and settled when it ends.
public struct AdmissionTicket: Sendable {
    struct Hold: Sendable {
        var key: String
        var amount: Int64
        var cap: Int64
        var ttl: Double
    }

    /// Who was admitted, for the shared state to order this request's settlement after its admission.
    var affinity = ""
    /// Concurrency slots held.
    var slots: [String] = []
    /// Budget reservations held (worst case, and any extension).
    var holds: [Hold] = []
    /// Windows to which the real token count is added afterwards.
    var tokenWindows: [String] = []
    /// Tokens already counted in those windows before the call.
    var countedTokens: Int64 = 0
    /// Headers to return (`x-ratelimit-*`).
    public var headers: [String: String] = [:]
    /// The worst-case cost reserved (micro-units).
    public var reservedMicros: Int64 { holds.map(\.amount).max() ?? 0 }
    /// Whether any budget applies (streams then watch their running cost).
    public var hasBudget: Bool { !holds.isEmpty }
}

/// Rate limits (sliding windows) and budgets (reserve, then settle) over the shared state,
/// so that every replica enforces the same numbers.
public final class Admission: Sendable {
    public let state: any SharedState
    private let directory: DirectoryCache
    private let recorder: UsageRecorder?
    private let roleLimits: [Role: RateLimits]
    private let modelLimits: [String: RateLimits]
    private let clock: @Sendable () -> Double
    static let window: Double = 60
    static let slotTTL: Double = 900

    public init(state: any SharedState, directory: DirectoryCache, recorder: UsageRecorder?, roleLimits: [Role: RateLimits],
                modelLimits: [String: RateLimits], clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.state = state
        self.directory = directory
        self.recorder = recorder
        self.roleLimits = roleLimits
        self.modelLimits = modelLimits
        self.clock = clock
    }

    /// The subjects whose limits apply to `principal` on `model`, each with its limits.
    func subjects(for principal: Principal, model: String) async -> [(name: String, limits: RateLimits)] {
        var subjects: [(String, RateLimits)] = []
        let roleDefault = roleLimits[principal.role] ?? RateLimits()
        let user = await principal.userID.asyncMap { await directory.user($0) } ?? nil
        let userLimits = user.map { RateLimits(requestsPerMinute: $0.requestsPerMinute, tokensPerMinute: $0.tokensPerMinute, concurrency: $0.maximumConcurrency) }
        switch principal.credential {
        case .anonymous:
            break
        case .apiKey(let id):
            let own = RateLimits(requestsPerMinute: principal.requestsPerMinute, tokensPerMinute: principal.tokensPerMinute,
                                 concurrency: principal.maximumConcurrency)
            subjects.append(("key:\(id)", own.over(roleDefault)))
            if let userID = principal.userID, let userLimits { subjects.append(("user:\(userID)", userLimits)) }
        case .certificate(let subject):
            // Like a key: the mapping's own limits over its role's.
            let own = RateLimits(requestsPerMinute: principal.requestsPerMinute, tokensPerMinute: principal.tokensPerMinute,
                                 concurrency: principal.maximumConcurrency)
            subjects.append(("certificate:\(subject)", own.over(roleDefault)))
        case .masterKey, .token:
            if let userID = principal.userID { subjects.append(("user:\(userID)", (userLimits ?? RateLimits()).over(roleDefault))) }
        }
        if let teamID = principal.teamID, let team = await directory.team(teamID) {
            subjects.append(("team:\(teamID)", RateLimits(requestsPerMinute: team.requestsPerMinute, tokensPerMinute: team.tokensPerMinute,
                                                          concurrency: team.maximumConcurrency)))
        }
        if let limits = modelLimits[model] { subjects.append(("model:\(model)", limits)) }
        return subjects
    }

    /// The limits of the caller's own credential: a key's, over its role's defaults (what a key
    /// it mints may not exceed).
    public func ownLimits(of principal: Principal) -> RateLimits {
        let roleDefault = roleLimits[principal.role] ?? RateLimits()
        return RateLimits(requestsPerMinute: principal.requestsPerMinute, tokensPerMinute: principal.tokensPerMinute,
                          concurrency: principal.maximumConcurrency).over(roleDefault)
    }

    /// Admits the request or throws `429` saying which limit and when to retry.
    ///
    /// Every window, concurrency slot and budget is decided at once and all or nothing (one
    /// round trip to Redis): a refused request counts nowhere and holds nothing. A budget not
    /// yet in the shared state is seeded from the database (and the unflushed spend), then the
    /// admission is asked again.
    ///
    /// - Parameters:
    ///   - estimatedTokens: prompt tokens estimated before the call (counted against TPM).
    ///   - worstCaseMicros: the most the call can cost (reserved against budgets).
    public func admit(_ principal: Principal, model: String, estimatedTokens: Int64, worstCaseMicros: Int64) async throws -> AdmissionTicket {
        let now = clock()
        let subjects = await subjects(for: principal, model: model)
        let budgets = await budgets(for: principal).map { budget in
            let (startDay, end) = budget.period.bounds(at: now)
            return (record: budget, key: "budget:\(budget.scope.rawValue):\(budget.subject):\(startDay)", startDay: startDay, end: end,
                    ttl: max(60, end - now + 3600))
        }
        /// What each check stands for, in the order of `checks`.
        enum Meaning {
            case requests(subject: Int, limit: Int64)
            case tokens(subject: Int, limit: Int64)
            case slot(subject: Int, limit: Int64)
            case budget(index: Int)
        }
        var checks: [LimitCheck] = []
        var meanings: [Meaning] = []
        for (index, subject) in subjects.enumerated() {
            if let limit = subject.limits.requestsPerMinute {
                checks.append(.window(key: "\(subject.name):rpm", cost: 1, limit: limit, window: Self.window))
                meanings.append(.requests(subject: index, limit: limit))
            }
            if let limit = subject.limits.tokensPerMinute {
                checks.append(.window(key: "\(subject.name):tpm", cost: estimatedTokens, limit: limit, window: Self.window))
                meanings.append(.tokens(subject: index, limit: limit))
            }
            if let limit = subject.limits.concurrency {
                checks.append(.reserve(key: "\(subject.name):concurrency", amount: 1, cap: limit, ttl: Self.slotTTL, mustExist: false))
                meanings.append(.slot(subject: index, limit: limit))
            }
        }
        for (index, budget) in budgets.enumerated() {
            checks.append(.reserve(key: budget.key, amount: worstCaseMicros, cap: budget.record.capMicros, ttl: budget.ttl, mustExist: true))
            meanings.append(.budget(index: index))
        }
        guard !checks.isEmpty else { return AdmissionTicket() }
        let affinity = subjects.first?.name ?? checks[0].key

        var outcomes = try await state.admit(checks, affinity: affinity, now: now)
        // Budgets the shared state does not know yet (a new period, a restarted Redis): seed
        // them with the spend recorded durably, then decide again.
        var seeded = false
        for (meaning, outcome) in zip(meanings, outcomes) {
            guard case .budget(let index) = meaning, case .reserve(nil) = outcome else { continue }
            let budget = budgets[index]
            let stored = try await directory.directory.spend(scope: budget.record.scope, subject: budget.record.subject, sinceDay: budget.startDay)
            let pending = recorder?.pendingSpend(scope: budget.record.scope, subject: budget.record.subject, sinceDay: budget.startDay) ?? 0
            _ = try await state.seed(key: budget.key, spent: stored + pending, ttl: budget.ttl)
            seeded = true
        }
        if seeded { outcomes = try await state.admit(checks, affinity: affinity, now: now) }

        var ticket = AdmissionTicket()
        ticket.affinity = affinity
        var refusal: (order: Int, error: GatewayError)?
        func refuse(_ order: Int, _ error: GatewayError) {
            if refusal.map({ order < $0.order }) ?? true { refusal = (order, error) }
        }
        var tightestRequests: (limit: Int64, decision: WindowDecision)?
        var tightestTokens: (limit: Int64, decision: WindowDecision)?
        for (position, (meaning, outcome)) in zip(meanings, outcomes).enumerated() {
            switch (meaning, outcome) {
            case (.requests(let subject, let limit), .window(let decision)):
                if tightestRequests.map({ decision.remaining < $0.decision.remaining }) ?? true { tightestRequests = (limit, decision) }
                if !decision.allowed {
                    refuse(subject * 3, Self.limited(subjects[subject].name, "requests per minute", limit, retryAfter: decision.retryAfter, headers: [:]))
                }
            case (.tokens(let subject, let limit), .window(let decision)):
                if tightestTokens.map({ decision.remaining < $0.decision.remaining }) ?? true { tightestTokens = (limit, decision) }
                if estimatedTokens > limit {
                    refuse(subject * 3 + 1, Self.neverFits(subjects[subject].name, tokens: estimatedTokens, limit: limit))
                } else if !decision.allowed {
                    refuse(subject * 3 + 1, Self.limited(subjects[subject].name, "tokens per minute", limit, retryAfter: decision.retryAfter, headers: [:]))
                }
                ticket.tokenWindows.append("\(subjects[subject].name):tpm")
            case (.slot(let subject, let limit), .reserve(let granted)):
                if granted == true {
                    if case .reserve(let key, _, _, _, _) = checks[position] { ticket.slots.append(key) }
                } else {
                    refuse(subject * 3 + 2, Self.limited(subjects[subject].name, "concurrent requests", limit, retryAfter: 1, headers: [:]))
                }
            case (.budget(let index), .reserve(let reserved)):
                let budget = budgets[index]
                if reserved == true {
                    ticket.holds.append(.init(key: budget.key, amount: worstCaseMicros, cap: budget.record.capMicros, ttl: budget.ttl))
                } else {
                    refuse(1_000_000 + index, Self.budgetExceeded(budget.record, amount: worstCaseMicros, now: now, end: budget.end))
                }
            default:
                throw GatewayError(status: 500, kind: .internalError, code: .admissionMismatch, message: "The shared state answered an admission out of order.")
            }
        }
        // Headers tell the tightest window of each kind.
        if let (limit, decision) = tightestRequests {
            ticket.headers["x-ratelimit-limit-requests"] = String(limit)
            ticket.headers["x-ratelimit-remaining-requests"] = String(decision.remaining)
            ticket.headers["x-ratelimit-reset-requests"] = Self.duration(decision.allowed ? decision.resetAfter : decision.retryAfter)
        }
        if let (limit, decision) = tightestTokens {
            ticket.headers["x-ratelimit-limit-tokens"] = String(limit)
            ticket.headers["x-ratelimit-remaining-tokens"] = String(decision.remaining)
            ticket.headers["x-ratelimit-reset-tokens"] = Self.duration(decision.allowed ? decision.resetAfter : decision.retryAfter)
        }
        ticket.countedTokens = estimatedTokens
        if var (_, error) = refusal {
            // All or nothing: a refused admission holds nothing, so there is nothing to give back.
            for (name, value) in ticket.headers where error.headers[name] == nil { error.headers[name] = value }
            throw error
        }
        return ticket
    }

    private func budgets(for principal: Principal) async -> [BudgetRecord] {
        var found: [BudgetRecord] = []
        if let keyID = principal.keyID, let budget = await directory.budget(scope: .key, subject: keyID) { found.append(budget) }
        // A minted key spends from its issuers' budgets as well: minting cannot create money.
        for issuer in principal.issuerChain {
            if let budget = await directory.budget(scope: .key, subject: issuer) { found.append(budget) }
        }
        if let userID = principal.userID, let budget = await directory.budget(scope: .user, subject: userID) { found.append(budget) }
        if let teamID = principal.teamID, let budget = await directory.budget(scope: .team, subject: teamID) { found.append(budget) }
        return found
    }

    static func budgetExceeded(_ budget: BudgetRecord, amount: Int64, now: Double, end: Double) -> GatewayError {
        var error = GatewayError(status: 429, kind: .rateLimited, code: .budgetExceeded,
                                 message: "The \(budget.scope.rawValue) budget for this \(budget.period.rawValue) is exhausted "
                                     + "(cap \(money(budget.capMicros))); this request could cost up to \(money(amount)).",
                                 headers: ["Retry-After": String(Int((end - now).rounded(.up)))])
        error.scope = budget.scope.rawValue
        return error
    }

    /// Reserves `additional` more on every budget the ticket holds (a stream running past its
    /// first reservation); false, and nothing reserved, when any budget has no room.
    public func extend(_ ticket: inout AdmissionTicket, additional: Int64) async -> Bool {
        guard !ticket.holds.isEmpty else { return true }
        let checks = ticket.holds.map { LimitCheck.reserve(key: $0.key, amount: additional, cap: $0.cap, ttl: $0.ttl, mustExist: true) }
        // All or nothing, in one round trip: a budget without room (or gone) reserves nothing anywhere.
        guard let outcomes = try? await state.admit(checks, affinity: ticket.affinity, now: clock()),
              outcomes.allSatisfy({ $0 == .reserve(true) }) else { return false }
        for index in ticket.holds.indices { ticket.holds[index].amount += additional }
        return true
    }

    /// Ends the request: frees concurrency slots, settles budgets at the real cost and counts
    /// the real tokens beyond those counted on admission — all at once (one round trip to Redis).
    public func settle(_ ticket: AdmissionTicket, totalTokens: Int64, costMicros: Int64) async {
        var settlements: [LimitSettlement] = []
        if totalTokens > ticket.countedTokens {
            for key in ticket.tokenWindows { settlements.append(.add(key: key, cost: totalTokens - ticket.countedTokens, window: Self.window)) }
        }
        for hold in ticket.holds { settlements.append(.settle(key: hold.key, reserved: hold.amount, actual: costMicros, ttl: hold.ttl)) }
        for slot in ticket.slots { settlements.append(.settle(key: slot, reserved: 1, actual: 0, ttl: Self.slotTTL)) }
        guard !settlements.isEmpty else { return }
        // A failure here (the shared store just went away) loses nothing durable: spend is in the
        // usage recorder, and the fallback state takes over.
        try? await state.settle(settlements, affinity: ticket.affinity, now: clock())
    }

    /// Releases everything without spending (the request failed before any cost).
    public func release(_ ticket: AdmissionTicket) async {
        await settle(AdmissionTicket(affinity: ticket.affinity, slots: ticket.slots, holds: ticket.holds), totalTokens: 0, costMicros: 0)
    }

    static func limited(_ subject: String, _ what: String, _ limit: Int64, retryAfter: Double, headers: [String: String]) -> GatewayError {
        var headers = headers
        let seconds = max(1, Int(retryAfter.rounded(.up)))
        headers["Retry-After"] = String(seconds)
        let scope = subject.split(separator: ":").first.map(String.init) ?? subject
        var error = GatewayError(status: 429, kind: .rateLimited, code: .rateLimitExceeded,
                                 message: "Rate limit reached for this \(scope): \(limit) \(what). Retry after \(seconds) s.", headers: headers)
        error.scope = scope
        return error
    }

    /// A request larger than a tokens-per-minute limit: waiting never helps, so no `Retry-After`.
    static func neverFits(_ subject: String, tokens: Int64, limit: Int64) -> GatewayError {
        let scope = subject.split(separator: ":").first.map(String.init) ?? subject
        var error = GatewayError(status: 429, kind: .rateLimited, code: .requestExceedsLimit,
                                 message: "This request needs about \(tokens) tokens, more than this \(scope)'s limit of \(limit) tokens per minute: "
                                     + "it can never fit. Send a shorter request or ask for a higher limit.")
        error.scope = scope
        return error
    }

    /// OpenAI's reset format: `1m30s`, `12s`, `250ms`.
    static func duration(_ seconds: Double) -> String {
        if seconds < 1 { return "\(Int((seconds * 1000).rounded(.up)))ms" }
        let whole = Int(seconds.rounded(.up))
        return whole >= 60 ? "\(whole / 60)m\(whole % 60)s" : "\(whole)s"
    }

    static func money(_ micros: Int64) -> String { DecimalText.format(Double(micros) / 1_000_000, places: 6) }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let self else { return nil }
        return try await transform(self)
    }
}
