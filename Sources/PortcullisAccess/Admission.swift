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

    /// One check of an admission, run concurrently with the others (one round trip to Redis
    /// for all of them, as its client pipelines concurrent commands).
    private enum Check: Sendable {
        case requests(subject: Int, limit: Int64, decision: WindowDecision)
        case tokens(subject: Int, limit: Int64, decision: WindowDecision)
        case slot(subject: Int, limit: Int64, key: String, granted: Bool)
        case budget(index: Int, reserved: Bool?)
    }

    /// Admits the request or throws `429` saying which limit and when to retry.
    ///
    /// Every window, concurrency slot and budget is checked at once; when any refuses, what
    /// the others granted is given back (a refused request still counts in the windows, as
    /// retries should not multiply). A budget not yet in the shared state is seeded from the
    /// database (and the unflushed spend), then reserved.
    ///
    /// - Parameters:
    ///   - estimatedTokens: prompt tokens estimated before the call (counted against TPM).
    ///   - worstCaseMicros: the most the call can cost (reserved against budgets).
    public func admit(_ principal: Principal, model: String, estimatedTokens: Int64, worstCaseMicros: Int64) async throws -> AdmissionTicket {
        var ticket = AdmissionTicket()
        let now = clock()
        let subjects = await subjects(for: principal, model: model)
        let budgets = await budgets(for: principal).map { budget in
            let (startDay, end) = budget.period.bounds(at: now)
            return (record: budget, key: "budget:\(budget.scope.rawValue):\(budget.subject):\(startDay)", startDay: startDay, end: end,
                    ttl: max(60, end - now + 3600))
        }
        let state = self.state
        var work: [@Sendable () async throws -> Check] = []
        for (index, subject) in subjects.enumerated() {
            if let limit = subject.limits.requestsPerMinute {
                work.append {
                    .requests(subject: index, limit: limit,
                              decision: try await state.consume(key: "\(subject.name):rpm", cost: 1, limit: limit, window: Self.window, now: now))
                }
            }
            if let limit = subject.limits.tokensPerMinute {
                work.append {
                    .tokens(subject: index, limit: limit,
                            decision: try await state.consume(key: "\(subject.name):tpm", cost: estimatedTokens, limit: limit,
                                                              window: Self.window, now: now))
                }
            }
            if let limit = subject.limits.concurrency {
                let key = "\(subject.name):concurrency"
                work.append {
                    .slot(subject: index, limit: limit, key: key, granted: try await state.reserve(key: key, amount: 1, cap: limit, ttl: Self.slotTTL))
                }
            }
        }
        for (index, budget) in budgets.enumerated() {
            work.append {
                .budget(index: index, reserved: try await state.reserveIfKnown(key: budget.key, amount: worstCaseMicros,
                                                                               cap: budget.record.capMicros, ttl: budget.ttl))
            }
        }
        let checks = try await Self.perform(work, concurrently: !state.answersInProcess)
        // What was granted goes on the ticket first, so that a refusal gives it all back.
        var refusal: (order: Int, error: GatewayError)?
        func refuse(_ order: Int, _ error: GatewayError) {
            if refusal.map({ order < $0.order }) ?? true { refusal = (order, error) }
        }
        var unknownBudgets: [Int] = []
        var requestDecisions: [(subject: Int, limit: Int64, decision: WindowDecision)] = []
        var tokenDecisions: [(subject: Int, limit: Int64, decision: WindowDecision)] = []
        for check in checks {
            switch check {
            case .requests(let subject, let limit, let decision): requestDecisions.append((subject, limit, decision))
            case .tokens(let subject, let limit, let decision):
                tokenDecisions.append((subject, limit, decision))
                ticket.tokenWindows.append("\(subjects[subject].name):tpm")
            case .slot(let subject, let limit, let key, let granted):
                if granted {
                    ticket.slots.append(key)
                } else {
                    refuse(subject * 3 + 2, Self.limited(subjects[subject].name, "concurrent requests", limit, retryAfter: 1, headers: [:]))
                }
            case .budget(let index, let reserved):
                switch reserved {
                case true?:
                    let budget = budgets[index]
                    ticket.holds.append(.init(key: budget.key, amount: worstCaseMicros, cap: budget.record.capMicros, ttl: budget.ttl))
                case false?: refuse(1_000_000 + index, Self.budgetExceeded(budgets[index].record, amount: worstCaseMicros, now: now,
                                                                          end: budgets[index].end))
                case nil: unknownBudgets.append(index)
                }
            }
        }
        // Headers tell the tightest window of each kind.
        if let tightest = requestDecisions.min(by: { $0.decision.remaining < $1.decision.remaining }) {
            ticket.headers["x-ratelimit-limit-requests"] = String(tightest.limit)
            ticket.headers["x-ratelimit-remaining-requests"] = String(tightest.decision.remaining)
            ticket.headers["x-ratelimit-reset-requests"] = Self.duration(tightest.decision.allowed ? tightest.decision.resetAfter
                                                                                                   : tightest.decision.retryAfter)
        }
        if let tightest = tokenDecisions.min(by: { $0.decision.remaining < $1.decision.remaining }) {
            ticket.headers["x-ratelimit-limit-tokens"] = String(tightest.limit)
            ticket.headers["x-ratelimit-remaining-tokens"] = String(tightest.decision.remaining)
            ticket.headers["x-ratelimit-reset-tokens"] = Self.duration(tightest.decision.allowed ? tightest.decision.resetAfter
                                                                                                 : tightest.decision.retryAfter)
        }
        for entry in requestDecisions where !entry.decision.allowed {
            refuse(entry.subject * 3, Self.limited(subjects[entry.subject].name, "requests per minute", entry.limit,
                                                   retryAfter: entry.decision.retryAfter, headers: [:]))
        }
        for entry in tokenDecisions where !entry.decision.allowed {
            refuse(entry.subject * 3 + 1, Self.limited(subjects[entry.subject].name, "tokens per minute", entry.limit,
                                                       retryAfter: entry.decision.retryAfter, headers: [:]))
        }
        ticket.countedTokens = estimatedTokens
        do {
            if var (_, error) = refusal {
                for (name, value) in ticket.headers where error.headers[name] == nil { error.headers[name] = value }
                throw error
            }
            for index in unknownBudgets {
                let budget = budgets[index]
                let stored = try await directory.directory.spend(scope: budget.record.scope, subject: budget.record.subject, sinceDay: budget.startDay)
                let pending = recorder?.pendingSpend(scope: budget.record.scope, subject: budget.record.subject, sinceDay: budget.startDay) ?? 0
                _ = try await state.seed(key: budget.key, spent: stored + pending, ttl: budget.ttl)
                guard try await state.reserveIfKnown(key: budget.key, amount: worstCaseMicros, cap: budget.record.capMicros, ttl: budget.ttl) == true else {
                    throw Self.budgetExceeded(budget.record, amount: worstCaseMicros, now: now, end: budget.end)
                }
                ticket.holds.append(.init(key: budget.key, amount: worstCaseMicros, cap: budget.record.capMicros, ttl: budget.ttl))
            }
            return ticket
        } catch {
            await release(ticket)
            throw error
        }
    }

    /// Runs `work` one after another, or as concurrent tasks (one round trip for all when the
    /// shared state is remote and pipelines concurrent calls).
    static func perform<T: Sendable>(_ work: [@Sendable () async throws -> T], concurrently: Bool) async throws -> [T] {
        guard concurrently, work.count > 1 else {
            var results: [T] = []
            results.reserveCapacity(work.count)
            for item in work { results.append(try await item()) }
            return results
        }
        return try await withThrowingTaskGroup(of: T.self, returning: [T].self) { group in
            for item in work { group.addTask { try await item() } }
            var results: [T] = []
            for try await result in group { results.append(result) }
            return results
        }
    }

    private func budgets(for principal: Principal) async -> [BudgetRecord] {
        var found: [BudgetRecord] = []
        if let keyID = principal.keyID, let budget = await directory.budget(scope: .key, subject: keyID) { found.append(budget) }
        if let userID = principal.userID, let budget = await directory.budget(scope: .user, subject: userID) { found.append(budget) }
        if let teamID = principal.teamID, let budget = await directory.budget(scope: .team, subject: teamID) { found.append(budget) }
        return found
    }

    static func budgetExceeded(_ budget: BudgetRecord, amount: Int64, now: Double, end: Double) -> GatewayError {
        GatewayError(status: 429, kind: .rateLimited, code: "budget_exceeded",
                     message: "The \(budget.scope.rawValue) budget for this \(budget.period.rawValue) is exhausted "
                         + "(cap \(money(budget.capMicros))); this request could cost up to \(money(amount)).",
                     headers: ["Retry-After": String(Int((end - now).rounded(.up)))])
    }

    /// Reserves `additional` more on every budget the ticket holds (a stream running past its
    /// first reservation); false, and nothing reserved, when any budget has no room.
    public func extend(_ ticket: inout AdmissionTicket, additional: Int64) async -> Bool {
        var extended: [Int] = []
        for (index, hold) in ticket.holds.enumerated() {
            let ok = (try? await state.reserveIfKnown(key: hold.key, amount: additional, cap: hold.cap, ttl: hold.ttl)) ?? false
            guard ok == true else {
                for done in extended {
                    try? await state.settle(key: ticket.holds[done].key, reserved: additional, actual: 0, ttl: ticket.holds[done].ttl)
                }
                return false
            }
            extended.append(index)
        }
        for index in extended { ticket.holds[index].amount += additional }
        return true
    }

    /// Ends the request: frees concurrency slots, settles budgets at the real cost and counts
    /// the real tokens beyond those counted on admission — all at once (one round trip to Redis).
    public func settle(_ ticket: AdmissionTicket, totalTokens: Int64, costMicros: Int64) async {
        let now = clock()
        let state = self.state
        var work: [@Sendable () async throws -> Void] = []
        for key in ticket.tokenWindows where totalTokens > ticket.countedTokens {
            work.append { _ = try await state.consume(key: key, cost: totalTokens - ticket.countedTokens, limit: 1 << 50, window: Self.window, now: now) }
        }
        for hold in ticket.holds {
            work.append { try await state.settle(key: hold.key, reserved: hold.amount, actual: costMicros, ttl: hold.ttl) }
        }
        for slot in ticket.slots {
            work.append { try await state.settle(key: slot, reserved: 1, actual: 0, ttl: Self.slotTTL) }
        }
        // Each settles on its own: one failing (the shared store just went away) must not keep the others from trying.
        _ = try? await Self.perform(work.map { item in { @Sendable in try? await item() } }, concurrently: !state.answersInProcess)
    }

    /// Releases everything without spending (the request failed before any cost).
    public func release(_ ticket: AdmissionTicket) async {
        await settle(AdmissionTicket(slots: ticket.slots, holds: ticket.holds), totalTokens: 0, costMicros: 0)
    }

    static func limited(_ subject: String, _ what: String, _ limit: Int64, retryAfter: Double, headers: [String: String]) -> GatewayError {
        var headers = headers
        let seconds = max(1, Int(retryAfter.rounded(.up)))
        headers["Retry-After"] = String(seconds)
        let scope = subject.split(separator: ":").first.map(String.init) ?? subject
        return GatewayError(status: 429, kind: .rateLimited, code: "rate_limit_exceeded",
                            message: "Rate limit reached for this \(scope): \(limit) \(what). Retry after \(seconds) s.", headers: headers)
    }

    /// OpenAI's reset format: `1m30s`, `12s`, `250ms`.
    static func duration(_ seconds: Double) -> String {
        if seconds < 1 { return "\(Int((seconds * 1000).rounded(.up)))ms" }
        let whole = Int(seconds.rounded(.up))
        return whole >= 60 ? "\(whole / 60)m\(whole % 60)s" : "\(whole)s"
    }

    static func money(_ micros: Int64) -> String { String(format: "%.6f", Double(micros) / 1_000_000) }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let self else { return nil }
        return try await transform(self)
    }
}
