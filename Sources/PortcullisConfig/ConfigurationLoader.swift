import Foundation
import PortcullisAccess
import PortcullisCore
import PortcullisGuardrails
import PortcullisRouting
import PortcullisStorage
import Yams

/// One problem in a configuration file, located by key path and line.
public struct ConfigurationIssue: Sendable, Equatable, CustomStringConvertible {
    /// The key path, e.g. `models[0].deployments[1].provider`.
    public var path: String
    /// One-based line, when known.
    public var line: Int?
    /// One-based column, when known.
    public var column: Int?
    public var message: String

    public init(path: String, line: Int? = nil, column: Int? = nil, message: String) {
        self.path = path
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String {
        let location = line.map { "line \($0)" + (column.map { ", column \($0)" } ?? "") + ": " } ?? ""
        return "\(location)\(path.isEmpty ? "" : "\(path): ")\(message)"
    }
}

/// A configuration that cannot be used, with every problem found.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    /// Where the configuration came from (a path, or a description).
    public var source: String
    public var issues: [ConfigurationIssue]

    public init(source: String, issues: [ConfigurationIssue]) {
        self.source = source
        self.issues = issues
    }

    public var description: String {
        "invalid configuration \(source):\n" + issues.map { "  - \($0.description)" }.joined(separator: "\n")
    }
}

/// Reads the YAML configuration: `${NAME}` / `${NAME:-default}` interpolation from the
/// environment, strict key checking, and validation that names each offending key and line.
public enum ConfigurationLoader {
    /// Loads and validates the file at `path`.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> GatewayConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(source: path, issues: [ConfigurationIssue(path: "", message: "cannot read the file")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(source: path, issues: [ConfigurationIssue(path: "", message: "the file is not UTF-8 text")])
        }
        return try parse(yaml: text, environment: environment, source: path)
    }

    /// Parses and validates YAML text.
    public static func parse(yaml: String, environment: [String: String], source: String = "<text>") throws -> GatewayConfiguration {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigurationError(source: source, issues: [yamlIssue(error)])
        }
        let issues = IssueList()
        var configuration = GatewayConfiguration()
        applyEnvironment(environment, to: &configuration)
        if let root {
            let reader = NodeReader(node: root, path: "", issues: issues, environment: environment)
            decode(reader, into: &configuration)
        }
        validate(&configuration, issues: issues)
        if !issues.items.isEmpty { throw ConfigurationError(source: source, issues: issues.items) }
        return configuration
    }

    /// The configuration used when no file is given: one process, the built-in `demo` model,
    /// plus OpenAI, Anthropic and Azure OpenAI models when their keys are in the environment.
    public static func embeddedDefault(environment: [String: String] = ProcessInfo.processInfo.environment) -> GatewayConfiguration {
        var configuration = GatewayConfiguration()
        applyEnvironment(environment, to: &configuration)
        if let port = environment["PORTCULLIS_PORT"].flatMap(Int.init) { configuration.server.port = port }
        if let host = environment["PORTCULLIS_HOST"], !host.isEmpty { configuration.server.host = host }
        configuration.models.append(.init(name: "demo", deployments: [.init(provider: .demo, model: "demo")]))
        if let key = environment["OPENAI_API_KEY"], !key.isEmpty {
            for model in ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "text-embedding-3-small", "text-embedding-3-large"] {
                var deployment = GatewayConfiguration.Deployment(provider: .openai, model: model)
                deployment.apiKey = key
                deployment.apiBase = environment["OPENAI_BASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
                configuration.models.append(.init(name: model, deployments: [deployment]))
            }
        }
        if let key = environment["ANTHROPIC_API_KEY"], !key.isEmpty {
            for model in ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"] {
                var deployment = GatewayConfiguration.Deployment(provider: .anthropic, model: model)
                deployment.apiKey = key
                deployment.apiBase = environment["ANTHROPIC_BASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
                configuration.models.append(.init(name: model, deployments: [deployment]))
            }
        }
        if let key = environment["AZURE_OPENAI_API_KEY"], !key.isEmpty,
           let endpoint = environment["AZURE_OPENAI_ENDPOINT"], !endpoint.isEmpty {
            let names = (environment["AZURE_OPENAI_DEPLOYMENTS"] ?? environment["AZURE_OPENAI_DEPLOYMENT"] ?? "")
                .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            for name in names {
                var deployment = GatewayConfiguration.Deployment(provider: .azure, model: name)
                deployment.apiKey = key
                deployment.apiBase = endpoint
                deployment.apiVersion = environment["AZURE_OPENAI_API_VERSION"].flatMap { $0.isEmpty ? nil : $0 }
                let publicName = configuration.models.contains { $0.name == name } ? "azure/\(name)" : name
                configuration.models.append(.init(name: publicName, deployments: [deployment]))
            }
        }
        return configuration
    }

    /// Defaults that come from the environment; the file, when given, overrides them.
    private static func applyEnvironment(_ environment: [String: String], to configuration: inout GatewayConfiguration) {
        func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        configuration.auth.masterKey = value("PORTCULLIS_MASTER_KEY")
        configuration.auth.keyPepper = value("PORTCULLIS_KEY_PEPPER").flatMap { $0.utf8.count >= 32 ? $0 : nil }
        if let database = value("PORTCULLIS_DATABASE"), StorageLocation(database) != nil { configuration.storage.database = database }
        if let redis = value("PORTCULLIS_REDIS_URL") { configuration.storage.redis = redis }
    }

    private static func yamlIssue(_ error: YamlError) -> ConfigurationIssue {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return ConfigurationIssue(path: "", line: mark.line, column: mark.column, message: "YAML syntax error: \(problem)")
        default:
            return ConfigurationIssue(path: "", message: "YAML error: \(error)")
        }
    }
}
