import PortcullisCore

/// What a route needs. The matrix below is the whole of authorisation; README documents it.
public enum Permission: String, Sendable, CaseIterable {
    /// Chat, completions, embeddings, messages.
    case callModels
    /// `GET /v1/models`.
    case listModels
    /// Create, list, rotate and revoke one's own keys.
    case manageOwnKeys
    /// Keys of anyone, any role.
    case manageAllKeys
    /// Read users, teams, budgets, IP rules, everyone's usage and the admin action log.
    case readAdministration
    /// Change users, teams, budgets and IP rules.
    case writeAdministration
    /// Read one's own usage and identity.
    case readOwnUsage
}

extension Role {
    /// The permissions this role grants.
    public var permissions: Set<Permission> {
        switch self {
        case .user: return [.callModels, .listModels, .readOwnUsage]
        case .developer: return [.callModels, .listModels, .readOwnUsage, .manageOwnKeys]
        case .admin: return Set(Permission.allCases)
        case .auditor: return [.listModels, .readOwnUsage, .readAdministration]
        }
    }

    /// Roles a caller with this role may give to keys it creates.
    public var grantableRoles: Set<Role> {
        switch self {
        case .admin: return Set(Role.allCases)
        case .developer: return [.user, .developer]
        case .user, .auditor: return []
        }
    }
}

extension Principal {
    /// Whether the caller holds `permission`.
    public func has(_ permission: Permission) -> Bool { role.permissions.contains(permission) }

    /// Throws `401` for an anonymous caller on a route that needs more than model access,
    /// `403 permission_denied` when the role lacks the permission.
    public func require(_ permission: Permission) throws {
        if credential == .anonymous && ![.callModels, .listModels].contains(permission) {
            throw GatewayError.unauthenticated()
        }
        guard has(permission) else {
            throw GatewayError(status: 403, kind: .permission, code: .permissionDenied,
                               message: "The \(role.rawValue) role may not do this (\(permission.rawValue) is required).")
        }
    }
}
