import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PortcullisAccess
import PortcullisAudit
import PortcullisCache
import PortcullisCore

/// `/admin`: keys, users, teams, budgets, IP rules, usage and the action log. JSON in and
/// out, lists paginated (`limit`, `cursor`), every change recorded as an admin action.
struct AdminAPI: Sendable {
    let access: AccessSystem
    let audit: AuditLogs
    /// What the cost layer saved (nil: not kept).
    let savings: SavingsLedger?

    func register(on group: RouterGroup<GatewayRequestContext>) {
        group.get("whoami") { _, context in Self.json(Self.principalObject(context.principal)) }
        // Keys: developers manage their own, admins everyone's; auditors read.
        group.post("keys") { request, context in try await createKey(request, context) }
        group.get("keys") { request, context in try await listKeys(request, context) }
        group.get("keys/{id}") { _, context in try await getKey(context.parameters.require("id"), context) }
        group.post("keys/{id}/rotate") { request, context in try await rotateKey(request, context) }
        group.post("keys/{id}/revoke") { _, context in try await revokeKey(context.parameters.require("id"), context) }
        group.delete("keys/{id}") { _, context in try await revokeKey(context.parameters.require("id"), context) }
        // Users and teams.
        group.get("users") { request, context in try await list(request, context) { try await access.directory.users(limit: $0, offset: $1).map(Self.userObject) } }
        group.post("users") { request, context in try await putUser(request, context, id: nil) }
        group.get("users/{id}") { _, context in try await getUser(context.parameters.require("id"), context) }
        group.put("users/{id}") { request, context in try await putUser(request, context, id: context.parameters.require("id")) }
        group.delete("users/{id}") { _, context in
            try await delete(context, action: "user.delete", target: context.parameters.require("id")) { try await access.directory.deleteUser($0) }
        }
        group.get("teams") { request, context in try await list(request, context) { try await access.directory.teams(limit: $0, offset: $1).map(Self.teamObject) } }
        group.post("teams") { request, context in try await putTeam(request, context, id: nil) }
        group.get("teams/{id}") { _, context in try await getTeam(context.parameters.require("id"), context) }
        group.put("teams/{id}") { request, context in try await putTeam(request, context, id: context.parameters.require("id")) }
        group.delete("teams/{id}") { _, context in
            try await delete(context, action: "team.delete", target: context.parameters.require("id")) { try await access.directory.deleteTeam($0) }
        }
        // Budgets.
        group.get("budgets") { request, context in try await list(request, context) { try await access.directory.budgets(limit: $0, offset: $1).map(Self.budgetObject) } }
        group.post("budgets") { request, context in try await setBudget(request, context) }
        group.delete("budgets/{scope}/{subject}") { _, context in try await deleteBudget(context) }
        // IP rules.
        group.get("ip-rules") { request, context in try await list(request, context) { limit, offset in
            Array(try await access.directory.ipRules().dropFirst(offset).prefix(limit)).map(Self.ipRuleObject)
        } }
        group.post("ip-rules") { request, context in try await addIPRule(request, context) }
        group.delete("ip-rules/{id}") { _, context in try await deleteIPRule(context) }
        // Usage and the action log.
        group.get("usage") { request, context in try await usage(request, context) }
        group.post("usage/flush") { _, context in
            try context.principal.require(.writeAdministration)
            await access.recorder.flush()
            return Self.json(["flushed": true])
        }
        group.get("savings") { request, context in try await savingsReport(request, context) }
        group.get("actions") { request, context in try await list(request, context) { try await audit.adminActions.list(limit: $0, offset: $1) } }
        group.get("guard-events") { request, context in try await list(request, context) { try await audit.guardEvents.list(limit: $0, offset: $1) } }
        registerAudit(on: group)
    }

    // MARK: Keys

    func createKey(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let principal = context.principal
        try principal.require(.manageOwnKeys)
        let body = try await Self.body(request)
        let fields = FieldReader(body)
        let roleName = try fields.string("role") ?? "user"
        guard let role = Role(rawValue: roleName) else {
            throw GatewayError.invalidParameter("role", "role must be one of user, developer, admin, auditor")
        }
        guard principal.role.grantableRoles.contains(role) else {
            throw GatewayError(status: 403, kind: .permission, code: .permissionDenied,
                               message: "The \(principal.role.rawValue) role may not issue \(role.rawValue) keys.", param: "role")
        }
        var userID = try fields.string("user_id")
        var teamID = try fields.string("team_id")
        if !principal.has(.manageAllKeys) {
            guard userID == nil || userID == principal.userID else {
                throw GatewayError(status: 403, kind: .permission, code: .permissionDenied, message: "Developers issue keys for themselves only.", param: "user_id")
            }
            guard teamID == nil || teamID == principal.teamID else {
                throw GatewayError(status: 403, kind: .permission, code: .permissionDenied, message: "Developers issue keys for their own team only.", param: "team_id")
            }
            userID = principal.userID
            teamID = teamID ?? principal.teamID
        }
        let lifetimeDays = try fields.number("expires_in_days", in: 0.0001...3650)
        let budget = try fields.number("budget", in: 0...1_000_000_000)
        let periodName = try fields.string("budget_period") ?? "month"
        guard let period = BudgetPeriod(rawValue: periodName) else { throw GatewayError.invalidParameter("budget_period", "budget_period must be day or month") }
        var spec = NewAPIKey(name: try fields.string("name"), userID: userID, teamID: teamID, role: role,
                             allowedModels: try fields.stringOrStrings("models") ?? [], budgetMicros: budget.map { Int64(($0 * 1_000_000).rounded()) },
                             lifetime: lifetimeDays.map { $0 * 86_400 }, metadata: try fields.object("metadata") ?? JSONObject())
        let limits = try Self.rateLimits(fields)
        (spec.requestsPerMinute, spec.tokensPerMinute, spec.maximumConcurrency) = (limits.requestsPerMinute, limits.tokensPerMinute, limits.concurrency)
        if !principal.has(.manageAllKeys) { try await boundByIssuer(&spec, issuer: principal) }
        let issued = try await access.keys.create(spec)
        if let micros = spec.budgetMicros {
            try await access.directory.setBudget(BudgetRecord(scope: .key, subject: issued.record.keyID, period: period, capMicros: micros))
        }
        try await record(context, "key.create", target: issued.record.keyID, ["role": .string(role.rawValue), "user_id": userID.map(JSONValue.string) ?? .null])
        var object = Self.keyObject(issued.record)
        object["key"] = .string(issued.key)
        return Self.json(.object(object), status: .created)
    }

    /// A key minted by a caller who does not manage every key gets no more than the caller has:
    /// models within the caller's, limits no higher, a budget no larger (and the caller's budget
    /// pays for it too), an expiry no later. An omitted bound is inherited; an exceeded one is refused.
    private func boundByIssuer(_ spec: inout NewAPIKey, issuer: Principal) async throws {
        func exceeds(_ param: String, _ what: String) -> GatewayError {
            GatewayError(status: 403, kind: .permission, code: .exceedsIssuerBounds,
                         message: "A key you mint cannot have more than your own credential: \(what).", param: param)
        }
        if !issuer.allowedModels.isEmpty {
            if spec.allowedModels.isEmpty {
                spec.allowedModels = issuer.allowedModels
            } else if let outside = spec.allowedModels.first(where: { !issuer.allowedModels.contains($0) }) {
                throw exceeds("models", "the model '\(String(outside.prefix(64)))' is not one you may use")
            }
        }
        let own = access.admission.ownLimits(of: issuer)
        func bound(_ value: inout Int64?, _ cap: Int64?, _ param: String) throws {
            guard let cap else { return }
            guard let requested = value else { value = cap; return }
            if requested > cap { throw exceeds(param, "\(param) \(requested) is above your \(cap)") }
        }
        try bound(&spec.requestsPerMinute, own.requestsPerMinute, "rpm")
        try bound(&spec.tokensPerMinute, own.tokensPerMinute, "tpm")
        try bound(&spec.maximumConcurrency, own.concurrency, "concurrency")
        if let issuerKeyID = issuer.keyID {
            let budget = await access.directoryCache.budget(scope: .key, subject: issuerKeyID)?.capMicros ?? issuer.budgetMicros
            try bound(&spec.budgetMicros, budget, "budget")
            spec.issuerChain = [issuerKeyID] + issuer.issuerChain
            spec.revokedWithIssuer = access.revokeMintedKeysWithIssuer
        }
        spec.latestExpiry = issuer.expiresAt
    }

    func listKeys(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let principal = context.principal
        let everyone = principal.has(.readAdministration)
        if !everyone { try principal.require(.manageOwnKeys) }
        let query = request.uri.queryParameters
        let userID = everyone ? query["user_id"].map(String.init) : principal.userID
        if !everyone && principal.userID == nil { return Self.page([], limit: 1, offset: 0) }
        let teamID = query["team_id"].map(String.init)
        return try await list(request, context, requiring: nil) { limit, offset in
            try await access.keys.list(userID: userID, teamID: teamID, limit: limit, offset: offset).map { .object(Self.keyObject($0)) }
        }
    }

    /// The key, if the caller may see it (its owner, or anyone who reads administration).
    private func visibleKey(_ id: String, _ principal: Principal, modifying: Bool) async throws -> APIKeyRecord {
        let record = try await access.keys.get(keyID: id)
        let mayAll = modifying ? principal.has(.manageAllKeys) : principal.has(.readAdministration)
        guard let record, mayAll || (principal.has(.manageOwnKeys) && record.userID != nil && record.userID == principal.userID) else {
            if !mayAll && !principal.has(.manageOwnKeys) { try principal.require(.manageOwnKeys) }
            throw GatewayError(status: 404, kind: .notFound, code: .keyNotFound, message: "There is no key '\(String(id.prefix(64)))' you may see.")
        }
        // Rotating a key hands out its secret, and revoking it acts with its authority: only for
        // keys of a role the caller could issue.
        if modifying && !principal.role.grantableRoles.contains(record.role) {
            throw GatewayError(status: 403, kind: .permission, code: .permissionDenied,
                               message: "The \(principal.role.rawValue) role may not manage \(record.role.rawValue) keys.")
        }
        return record
    }

    func getKey(_ id: String, _ context: GatewayRequestContext) async throws -> Response {
        Self.json(.object(Self.keyObject(try await visibleKey(id, context.principal, modifying: false))))
    }

    func rotateKey(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let id = try context.parameters.require("id")
        _ = try await visibleKey(id, context.principal, modifying: true)
        let body = try await Self.body(request, optional: true)
        let grace = try FieldReader(body).number("grace_seconds", in: 0...(90 * 86_400)) ?? access.rotationGrace
        guard let issued = try await access.keys.rotate(keyID: id, grace: grace) else {
            throw GatewayError(status: 409, kind: .invalidRequest, code: .keyRevoked, message: "The key '\(id)' is revoked and cannot be rotated.")
        }
        // Cached copies of the previous secret must be checked again against its grace period.
        access.authenticator.cache.invalidate(keyID: id)
        try? await access.bus.publish(.keyRevoked(id))
        try await record(context, "key.rotate", target: id, ["grace_seconds": .double(grace)])
        var object = Self.keyObject(issued.record)
        object["key"] = .string(issued.key)
        object["previous_key_valid_until"] = .integer(Int64(Date().timeIntervalSince1970 + grace))
        return Self.json(.object(object))
    }

    func revokeKey(_ id: String, _ context: GatewayRequestContext) async throws -> Response {
        _ = try await visibleKey(id, context.principal, modifying: true)
        let revoked = try await access.keys.revoke(keyID: id)
        let minted = try await access.keys.revokeMinted(by: id)
        for keyID in [id] + minted {
            access.authenticator.cache.invalidate(keyID: keyID)
            try? await access.bus.publish(.keyRevoked(keyID))
        }
        if revoked || !minted.isEmpty {
            try await record(context, "key.revoke", target: id, ["minted_keys_revoked": .array(minted.map(JSONValue.string))])
        }
        return Self.json(["key_id": .string(id), "revoked": true, "minted_keys_revoked": .array(minted.map(JSONValue.string))])
    }

    // MARK: Users and teams

    func getUser(_ id: String, _ context: GatewayRequestContext) async throws -> Response {
        if context.principal.userID != id { try context.principal.require(.readAdministration) } else { try context.principal.require(.readOwnUsage) }
        guard let user = try await access.directory.user(id) else {
            throw GatewayError(status: 404, kind: .notFound, code: .userNotFound, message: "There is no user '\(id)'.")
        }
        return Self.json(Self.userObject(user))
    }

    func putUser(_ request: Request, _ context: GatewayRequestContext, id: String?) async throws -> Response {
        try context.principal.require(.writeAdministration)
        let fields = FieldReader(try await Self.body(request))
        let userID = try Self.subjectID(id, fields, "user_id")
        let roleName = try fields.string("role") ?? "user"
        guard let role = Role(rawValue: roleName) else { throw GatewayError.invalidParameter("role", "role must be one of user, developer, admin, auditor") }
        let existing = try await access.directory.user(userID)
        let limits = try Self.rateLimits(fields)
        let user = UserRecord(userID: userID, email: try fields.string("email"), role: role, teamID: try fields.string("team_id"),
                              requestsPerMinute: limits.requestsPerMinute, tokensPerMinute: limits.tokensPerMinute,
                              maximumConcurrency: limits.concurrency, metadata: try fields.object("metadata") ?? JSONObject(),
                              createdAt: existing?.createdAt ?? Int64(Date().timeIntervalSince1970))
        try await access.directory.upsertUser(user)
        try await changed(context, existing == nil ? "user.create" : "user.update", target: userID)
        return Self.json(Self.userObject(user), status: existing == nil ? .created : .ok)
    }

    func getTeam(_ id: String, _ context: GatewayRequestContext) async throws -> Response {
        if context.principal.teamID != id { try context.principal.require(.readAdministration) } else { try context.principal.require(.readOwnUsage) }
        guard let team = try await access.directory.team(id) else {
            throw GatewayError(status: 404, kind: .notFound, code: .teamNotFound, message: "There is no team '\(id)'.")
        }
        return Self.json(Self.teamObject(team))
    }

    func putTeam(_ request: Request, _ context: GatewayRequestContext, id: String?) async throws -> Response {
        try context.principal.require(.writeAdministration)
        let fields = FieldReader(try await Self.body(request))
        let teamID = try Self.subjectID(id, fields, "team_id")
        let existing = try await access.directory.team(teamID)
        let limits = try Self.rateLimits(fields)
        let team = TeamRecord(teamID: teamID, name: try fields.string("name"), requestsPerMinute: limits.requestsPerMinute,
                              tokensPerMinute: limits.tokensPerMinute, maximumConcurrency: limits.concurrency,
                              metadata: try fields.object("metadata") ?? JSONObject(), createdAt: existing?.createdAt ?? Int64(Date().timeIntervalSince1970))
        try await access.directory.upsertTeam(team)
        try await changed(context, existing == nil ? "team.create" : "team.update", target: teamID)
        return Self.json(Self.teamObject(team), status: existing == nil ? .created : .ok)
    }

    /// The `rpm`, `tpm` and `concurrency` fields of a key, user or team, each optional and bounded.
    static func rateLimits(_ fields: FieldReader) throws -> RateLimits {
        RateLimits(requestsPerMinute: try fields.integer("rpm", in: 0...100_000_000), tokensPerMinute: try fields.integer("tpm", in: 0...10_000_000_000),
                   concurrency: try fields.integer("concurrency", in: 0...1_000_000))
    }

    /// A user's or team's id: from the path, else from the body's `field`; 1–256 bytes.
    static func subjectID(_ path: String?, _ fields: FieldReader, _ field: String) throws -> String {
        guard let id = try path ?? fields.string(field), !id.isEmpty, id.utf8.count <= 256 else {
            throw GatewayError.invalidParameter(field, "\(field) is required (1–256 characters)")
        }
        return id
    }

    func delete(_ context: GatewayRequestContext, action: String, target: String, _ remove: (String) async throws -> Bool) async throws -> Response {
        try context.principal.require(.writeAdministration)
        guard try await remove(target) else {
            throw GatewayError(status: 404, kind: .notFound, code: .notFound, message: "There is no '\(target)'.")
        }
        try await changed(context, action, target: target)
        return Self.json(["id": .string(target), "deleted": true])
    }

    // MARK: Budgets

    func setBudget(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try context.principal.require(.writeAdministration)
        let fields = FieldReader(try await Self.body(request))
        guard let scope = BudgetScope(rawValue: try fields.requiredString("scope")) else {
            throw GatewayError.invalidParameter("scope", "scope must be key, user or team")
        }
        let subject = try fields.requiredString("subject")
        guard let period = BudgetPeriod(rawValue: try fields.string("period") ?? "month") else {
            throw GatewayError.invalidParameter("period", "period must be day or month")
        }
        guard let amount = try fields.number("amount", in: 0...1_000_000_000) else {
            throw GatewayError.invalidParameter("amount", "amount (the cap, in the price currency) is required")
        }
        let budget = BudgetRecord(scope: scope, subject: subject, period: period, capMicros: Int64((amount * 1_000_000).rounded()))
        try await access.directory.setBudget(budget)
        try await changed(context, "budget.set", target: "\(scope.rawValue):\(subject)", ["amount": .double(amount), "period": .string(period.rawValue)])
        return Self.json(Self.budgetObject(budget), status: .created)
    }

    func deleteBudget(_ context: GatewayRequestContext) async throws -> Response {
        guard let scope = BudgetScope(rawValue: try context.parameters.require("scope")) else {
            throw GatewayError.invalidParameter("scope", "scope must be key, user or team")
        }
        let subject = try context.parameters.require("subject")
        return try await delete(context, action: "budget.delete", target: "\(scope.rawValue):\(subject)") { _ in
            try await access.directory.deleteBudget(scope: scope, subject: subject)
        }
    }

    // MARK: IP rules

    func addIPRule(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try context.principal.require(.writeAdministration)
        let fields = FieldReader(try await Self.body(request))
        let cidr = try fields.requiredString("cidr")
        guard CIDR(cidr) != nil else { throw GatewayError.invalidParameter("cidr", "'\(cidr)' is not an IPv4 or IPv6 address or CIDR block") }
        guard let action = IPRuleRecord.Action(rawValue: try fields.string("action") ?? "deny") else {
            throw GatewayError.invalidParameter("action", "action must be allow or deny")
        }
        let now = Date().timeIntervalSince1970
        let ttl = try fields.integer("expires_in_seconds", in: 1...(365 * 86_400))
        // Expiry in whole seconds, rounded up: a rule lasts at least what was asked (at most a second more), never less.
        let rule = IPRuleRecord(ruleID: FastRandom.hex(bytes: 8), cidr: cidr, action: action, note: try fields.string("note"), createdAt: Int64(now),
                                expiresAt: ttl.map { Int64((now + Double($0)).rounded(.up)) })
        try await access.directory.addIPRule(rule)
        try await record(context, "ip_rule.add", target: rule.ruleID, ["cidr": .string(cidr), "action": .string(action.rawValue)])
        await publishRules()
        return Self.json(Self.ipRuleObject(rule), status: .created)
    }

    func deleteIPRule(_ context: GatewayRequestContext) async throws -> Response {
        let response = try await delete(context, action: "ip_rule.delete", target: try context.parameters.require("id")) {
            try await access.directory.deleteIPRule($0)
        }
        await publishRules()
        return response
    }

    /// Applies the rules here at once and tells the other replicas.
    private func publishRules() async {
        if let rules = try? await access.directory.ipRules() { access.ipPolicy.update(rules) }
        try? await access.bus.publish(.ipRulesChanged)
    }

    // MARK: Usage

    func usage(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let principal = context.principal
        try principal.require(.readOwnUsage)
        let query = request.uri.queryParameters
        var filters: [String: String] = [:]
        for name in ["key_id", "user_id", "team_id", "model"] {
            if let value = query[Substring(name)] { filters[name] = String(value) }
        }
        if !principal.has(.readAdministration) {
            guard let own = principal.userID else { throw GatewayError(status: 403, kind: .permission, code: .permissionDenied, message: "Anonymous callers have no usage.") }
            if let asked = filters["user_id"], asked != own {
                throw GatewayError(status: 403, kind: .permission, code: .permissionDenied, message: "You may read your own usage only.", param: "user_id")
            }
            filters["user_id"] = own
        }
        let dimensions = ["day", "key_id", "user_id", "team_id", "model"]
        let groupBy = (query["group_by"].map(String.init) ?? "day").split(separator: ",").map(String.init)
        for dimension in groupBy where !dimensions.contains(dimension) {
            throw GatewayError.invalidParameter("group_by", "group_by takes day, key_id, user_id, team_id, model; got '\(dimension)'")
        }
        for name in ["from", "to"] {
            if let day = query[Substring(name)], !Self.isDay(day) { throw GatewayError.invalidParameter(name, "\(name) must be a day, YYYY-MM-DD") }
        }
        return try await list(request, context, requiring: nil) { limit, offset in
            try await access.directory.usage(groupBy: groupBy, filters: filters, fromDay: query["from"].map(String.init), toDay: query["to"].map(String.init),
                                             limit: limit, offset: offset)
        }
    }

    /// `GET /admin/savings`: what the cache and de-duplication saved, summed by `group_by`
    /// (day, team_id, mechanism, model; default day,team_id,mechanism), for admins and auditors.
    func savingsReport(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try context.principal.require(.readAdministration)
        let query = request.uri.queryParameters
        let dimensions = ["day", "team_id", "mechanism", "model"]
        let groupBy = (query["group_by"].map(String.init) ?? "day,team_id,mechanism").split(separator: ",").map(String.init)
        for dimension in groupBy where !dimensions.contains(dimension) {
            throw GatewayError.invalidParameter("group_by", "group_by takes day, team_id, mechanism, model; got '\(GatewayError.echo(dimension))'")
        }
        for name in ["from", "to"] {
            if let day = query[Substring(name)], !Self.isDay(day) { throw GatewayError.invalidParameter(name, "\(name) must be a day, YYYY-MM-DD") }
        }
        if let mechanism = query["mechanism"], !["exact", "semantic", "dedup"].contains(mechanism) {
            throw GatewayError.invalidParameter("mechanism", "mechanism is exact, semantic or dedup")
        }
        await savings?.flush()   // this replica's pending savings first
        return try await list(request, context) { limit, offset in
            try await savings?.totals(groupBy: groupBy, teamID: query["team_id"].map(String.init), mechanism: query["mechanism"].map(String.init),
                                      fromDay: query["from"].map(String.init), toDay: query["to"].map(String.init), limit: limit, offset: offset) ?? []
        }
    }

    static func isDay(_ text: Substring) -> Bool {
        let parts = text.split(separator: "-")
        return parts.count == 3 && parts[0].count == 4 && parts[1].count == 2 && parts[2].count == 2 && parts.allSatisfy { $0.allSatisfy(\.isNumber) }
    }

    // MARK: Helpers

    /// A page of `fetch(limit + 1, offset)`; the cursor is the next offset.
    /// A page of `fetch`, for callers holding `permission` (nil: the caller checked already, as
    /// the key and usage lists do, which also serve developers and users their own rows).
    func list(_ request: Request, _ context: GatewayRequestContext, requiring permission: Permission? = .readAdministration,
              _ fetch: (Int, Int) async throws -> [JSONValue]) async throws -> Response {
        if let permission { try context.principal.require(permission) }
        let query = request.uri.queryParameters
        var limit = 50
        if let text = query["limit"] {
            guard let value = Int(text), (1...500).contains(value) else { throw GatewayError.invalidParameter("limit", "limit must be 1–500") }
            limit = value
        }
        var offset = 0
        if let cursor = query["cursor"] {
            guard let value = Int(cursor), value >= 0 else { throw GatewayError.invalidParameter("cursor", "cursor is not one this API returned") }
            offset = value
        }
        let rows = try await fetch(limit + 1, offset)
        return Self.page(rows, limit: limit, offset: offset)
    }

    static func page(_ rows: [JSONValue], limit: Int, offset: Int) -> Response {
        let more = rows.count > limit
        return json(["object": "list", "data": .array(Array(rows.prefix(limit))), "has_more": .bool(more),
                     "next_cursor": more ? .string(String(offset + limit)) : .null])
    }

    /// Records an action; directory changes are also announced so other replicas drop their copies.
    func changed(_ context: GatewayRequestContext, _ action: String, target: String, _ details: JSONObject = [:]) async throws {
        try await record(context, action, target: target, details)
        access.directoryCache.invalidate()
        try? await access.bus.publish(.directoryChanged)
    }

    func record(_ context: GatewayRequestContext, _ action: String, target: String, _ details: JSONObject) async throws {
        try await audit.recordAdminAction(actor: context.principal.actor, actorKeyID: context.principal.keyID, action: action, target: target,
                                          details: details, requestID: context.requestID)
    }

    static func body(_ request: Request, optional: Bool = false) async throws -> JSONObject {
        let buffer = try await RequestPipeline.collectBody(request, limit: 1 << 20)
        if optional && buffer.readableBytes == 0 { return JSONObject() }
        let value: JSONValue
        do {
            value = try JSONParser.parse(buffer.readableBytesView)
        } catch {
            throw GatewayError.invalidJSON(error)
        }
        guard let object = value.objectValue else { throw GatewayError.invalidParameter("", "the body must be a JSON object") }
        return object
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: JSONWriter.buffer(value)))
    }

    static func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
    static func optional(_ value: Int64?) -> JSONValue { value.map(JSONValue.integer) ?? .null }

    static func principalObject(_ principal: Principal) -> JSONValue {
        ["actor": .string(principal.actor), "user_id": optional(principal.userID), "team_id": optional(principal.teamID),
         "role": .string(principal.role.rawValue), "mfa": .bool(principal.multiFactor), "key_id": optional(principal.keyID),
         "permissions": .array(Permission.allCases.filter(principal.has).map { .string($0.rawValue) })]
    }

    static func keyObject(_ record: APIKeyRecord) -> JSONObject {
        ["key_id": .string(record.keyID), "name": optional(record.name), "user_id": optional(record.userID), "team_id": optional(record.teamID),
         "role": .string(record.role.rawValue), "models": .array(record.allowedModels.map(JSONValue.string)),
         "rpm": optional(record.requestsPerMinute), "tpm": optional(record.tokensPerMinute), "concurrency": optional(record.maximumConcurrency),
         "budget": record.budgetMicros.map { .double(Double($0) / 1_000_000) } ?? .null,
         "expires_at": optional(record.expiresAt), "created_at": .integer(record.createdAt), "revoked_at": optional(record.revokedAt),
         "last_used_at": optional(record.lastUsedAt), "metadata": .object(record.metadata),
         "issuer_key_id": optional(record.issuerChain.first), "revoked_with_issuer": .bool(record.revokedWithIssuer)]
    }

    static func userObject(_ user: UserRecord) -> JSONValue {
        ["user_id": .string(user.userID), "email": optional(user.email), "role": .string(user.role.rawValue), "team_id": optional(user.teamID),
         "rpm": optional(user.requestsPerMinute), "tpm": optional(user.tokensPerMinute), "concurrency": optional(user.maximumConcurrency),
         "metadata": .object(user.metadata), "created_at": .integer(user.createdAt)]
    }

    static func teamObject(_ team: TeamRecord) -> JSONValue {
        ["team_id": .string(team.teamID), "name": optional(team.name), "rpm": optional(team.requestsPerMinute), "tpm": optional(team.tokensPerMinute),
         "concurrency": optional(team.maximumConcurrency), "metadata": .object(team.metadata), "created_at": .integer(team.createdAt)]
    }

    static func budgetObject(_ budget: BudgetRecord) -> JSONValue {
        ["scope": .string(budget.scope.rawValue), "subject": .string(budget.subject), "period": .string(budget.period.rawValue),
         "amount": .double(Double(budget.capMicros) / 1_000_000), "amount_micros": .integer(budget.capMicros)]
    }

    static func ipRuleObject(_ rule: IPRuleRecord) -> JSONValue {
        ["id": .string(rule.ruleID), "cidr": .string(rule.cidr), "action": .string(rule.action.rawValue), "note": optional(rule.note),
         "created_at": .integer(rule.createdAt), "expires_at": optional(rule.expiresAt)]
    }
}
