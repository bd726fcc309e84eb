/// One guard decision about one request, as the guard-event log records it: which guard of
/// which policy found what, what was done, and for whom (ids only, never the text).
public struct GuardEvent: Sendable, Equatable {
    public var at: Int64
    public var requestID: String
    public var policy: String
    public var guardName: String
    public var category: String
    public var risk: String
    public var score: Double
    public var action: String
    public var reason: String
    public var model: String
    public var keyID: String?
    public var userID: String?
    public var teamID: String?

    public init(at: Int64, requestID: String, policy: String, guardName: String, category: String, risk: String, score: Double,
                action: String, reason: String, model: String, keyID: String?, userID: String?, teamID: String?) {
        self.at = at
        self.requestID = requestID
        self.policy = policy
        self.guardName = guardName
        self.category = category
        self.risk = risk
        self.score = score
        self.action = action
        self.reason = reason
        self.model = model
        self.keyID = keyID
        self.userID = userID
        self.teamID = teamID
    }
}

/// Where guard decisions go (the audit library's guard-event log); never blocks the request.
public protocol GuardEventSink: Sendable {
    func record(_ events: [GuardEvent])
}
