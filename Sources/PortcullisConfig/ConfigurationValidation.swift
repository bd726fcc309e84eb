import Foundation
import PortcullisAccess
import PortcullisCache
import PortcullisCore
import PortcullisGuardrails
import PortcullisRouting
import PortcullisStorage
import PortcullisTLS
import Yams

/// Checks that span keys (a model named by a policy, a judge model that exists, …), after decoding.
extension ConfigurationLoader {
    static func validate(_ configuration: inout GatewayConfiguration, issues: IssueList) {
        if configuration.models.isEmpty {
            issues.add(path: "models", message: "at least one model is required")
        }
        var seen = Set<String>()
        for (index, model) in configuration.models.enumerated() {
            if model.name.isEmpty { continue }
            if !seen.insert(model.name).inserted {
                issues.add(path: "models[\(index)].name", message: "duplicate model name '\(model.name)'")
            }
        }
        let names = Set(configuration.models.map(\.name))
        if let model = configuration.cache.semantic?.embeddingModel, model != GatewayConfiguration.Cache.Semantic.builtin, !names.contains(model) {
            issues.add(path: "cache.semantic.embedding_model", message: "unknown model '\(model)'; use builtin or an embedding model group defined here")
        }
        for (index, model) in configuration.models.enumerated() {
            for (position, fallback) in model.fallbacks.enumerated() {
                if fallback == model.name {
                    issues.add(path: "models[\(index)].fallbacks[\(position)]", message: "a model cannot fall back to itself")
                } else if !names.contains(fallback) {
                    issues.add(path: "models[\(index)].fallbacks[\(position)]",
                               message: "unknown model '\(fallback)'; fallbacks must name models defined here")
                }
            }
        }
        for model in configuration.limits.models.keys.sorted() where !names.contains(model) {
            issues.add(path: "limits.models.\(model)", message: "unknown model '\(model)'; limits must name models defined here")
        }
        if case .postgres = StorageLocation(configuration.storage.database), configuration.auth.keyPepper == nil {
            issues.add(path: "auth.key_pepper", message: "is required with PostgreSQL (set PORTCULLIS_KEY_PEPPER to 32+ random bytes shared by every replica)")
        }
        if !configuration.auth.certificatePrincipals.isEmpty && (configuration.server.tls?.clientAuthentication ?? .none) == .none {
            issues.add(path: "auth.certificate_principals",
                       message: "needs server.tls with client_auth optional or required: without it no client presents a certificate")
        }
        if configuration.routing.maximumBackoffMilliseconds < configuration.routing.initialBackoffMilliseconds {
            issues.add(path: "routing.backoff.max_ms", message: "must not be smaller than initial_ms")
        }
    }

    /// The closest candidate by edit distance, if it is close enough to be a likely typo.
    static func suggestion(for word: String, among candidates: [String]) -> String? {
        func distance(_ a: [Character], _ b: [Character]) -> Int {
            var previous = Array(0...b.count)
            for (i, ca) in a.enumerated() {
                var current = [i + 1]
                for (j, cb) in b.enumerated() {
                    current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (ca == cb ? 0 : 1)))
                }
                previous = current
            }
            return previous[b.count]
        }
        let scored = candidates.map { ($0, distance(Array(word), Array($0))) }.min { $0.1 < $1.1 }
        guard let (best, score) = scored, score <= max(2, word.count / 3) else { return nil }
        return best
    }
}
