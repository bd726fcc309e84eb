import Foundation
import PortcullisAccess
import PortcullisCore
import PortcullisGuardrails
import PortcullisRouting
import PortcullisStorage
import Yams

/// Collects issues while decoding continues, so that one run reports them all.
final class IssueList {
    var items: [ConfigurationIssue] = []
    /// Where each key path read so far stands in the file, for checks that span keys.
    var positions: [String: (line: Int, column: Int)] = [:]

    func add(_ issue: ConfigurationIssue) { items.append(issue) }

    /// An issue at `path`, located by the position recorded while decoding.
    func add(path: String, message: String) {
        let position = positions[path]
        items.append(ConfigurationIssue(path: path, line: position?.line, column: position?.column, message: message))
    }
}

/// Walks a YAML node with its key path, reading typed values and recording issues with line numbers.
struct NodeReader {
    let node: Node
    let path: String
    let issues: IssueList
    let environment: [String: String]

    private func childPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    private func location(_ node: Node?) -> (Int?, Int?) {
        guard let mark = node?.mark else { return (nil, nil) }
        return (mark.line, mark.column)
    }

    func issue(_ key: String?, _ message: String) {
        let target = key.flatMap { valueNode($0) } ?? node
        let (line, column) = location(target)
        issues.add(ConfigurationIssue(path: key.map(childPath) ?? path, line: line, column: column, message: message))
    }

    var isSequence: Bool {
        if case .sequence = node { return true }
        return false
    }

    var isMapping: Bool {
        if case .mapping = node { return true }
        return false
    }

    var keys: [String] {
        guard case .mapping(let mapping) = node else { return [] }
        return mapping.keys.compactMap { $0.scalar?.string }
    }

    /// Checks this node is a mapping whose keys are all allowed (nil allows any).
    func expectMapping(allowedKeys: Set<String>?) -> Bool {
        guard case .mapping(let mapping) = node else {
            if case .scalar(let scalar) = node, scalar.string.isEmpty || scalar.tag == Tag(.null) { return false }
            let (line, column) = location(node)
            issues.add(ConfigurationIssue(path: path, line: line, column: column, message: "must be a mapping of keys to values"))
            return false
        }
        if let allowedKeys {
            for key in mapping.keys {
                guard let name = key.scalar?.string, !allowedKeys.contains(name) else { continue }
                let (line, column) = location(key)
                let hint = ConfigurationLoader.suggestion(for: name, among: Array(allowedKeys)).map { " (did you mean '\($0)'?)" } ?? ""
                issues.add(ConfigurationIssue(path: childPath(name), line: line, column: column,
                                              message: "unknown key '\(name)'\(hint); allowed: \(allowedKeys.sorted().joined(separator: ", "))"))
            }
        }
        return true
    }

    private func valueNode(_ key: String) -> Node? {
        guard case .mapping(let mapping) = node else { return nil }
        for (keyNode, value) in mapping where keyNode.scalar?.string == key { return value }
        return nil
    }

    func child(_ key: String) -> NodeReader? {
        guard let value = valueNode(key) else { return nil }
        if let mark = value.mark { issues.positions[childPath(key)] = (mark.line, mark.column) }
        if case .scalar(let scalar) = value, scalar.tag == Tag(.null) || (scalar.string.isEmpty && scalar.style == .plain) { return nil }
        return NodeReader(node: value, path: childPath(key), issues: issues, environment: environment)
    }

    func elements() -> [NodeReader] {
        guard case .sequence(let sequence) = node else {
            let (line, column) = location(node)
            issues.add(ConfigurationIssue(path: path, line: line, column: column, message: "must be a list"))
            return []
        }
        return sequence.enumerated().map { index, node in
            if let mark = node.mark { issues.positions["\(path)[\(index)]"] = (mark.line, mark.column) }
            return NodeReader(node: node, path: "\(path)[\(index)]", issues: issues, environment: environment)
        }
    }

    /// This node's scalar text with `${VAR}` interpolated.
    func scalarString() -> String? {
        guard case .scalar(let scalar) = node else {
            let (line, column) = location(node)
            issues.add(ConfigurationIssue(path: path, line: line, column: column, message: "must be a single value, not a list or mapping"))
            return nil
        }
        return interpolate(scalar.string)
    }

    private func interpolate(_ text: String) -> String? {
        guard text.contains("$") else { return text }
        var output = ""
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            if character == "$", text[index...].hasPrefix("$${") {
                output += "${"
                index = text.index(index, offsetBy: 3)
                continue
            }
            if character == "$", text[index...].hasPrefix("${"), let close = text[index...].firstIndex(of: "}") {
                let expression = String(text[text.index(index, offsetBy: 2)..<close])
                let name: String
                let fallback: String?
                if let separator = expression.range(of: ":-") {
                    name = String(expression[..<separator.lowerBound])
                    fallback = String(expression[separator.upperBound...])
                } else {
                    name = expression
                    fallback = nil
                }
                if let value = environment[name], !value.isEmpty {
                    output += value
                } else if let fallback {
                    output += fallback
                } else {
                    let (line, column) = location(node)
                    issues.add(ConfigurationIssue(path: path, line: line, column: column,
                                                  message: "environment variable \(name) is not set (write ${\(name):-default} to allow a default)"))
                    return nil
                }
                index = text.index(after: close)
                continue
            }
            output.append(character)
            index = text.index(after: index)
        }
        return output
    }

    /// The scalars of the sequence under `key` (nil when absent).
    func stringList(_ key: String) -> [String]? {
        child(key).map { $0.elements().compactMap { $0.scalarString() } }
    }

    func string(_ key: String) -> String? {
        child(key)?.scalarString()
    }

    func requiredString(_ key: String) -> String? {
        guard valueNode(key) != nil else {
            let (line, column) = location(node)
            issues.add(ConfigurationIssue(path: childPath(key), line: line, column: column, message: "is required"))
            return nil
        }
        guard child(key) != nil else {
            issue(key, "must not be empty")
            return nil
        }
        guard let value = string(key) else { return nil }
        if value.isEmpty {
            issue(key, "must not be empty")
            return nil
        }
        return value
    }

    func integer(_ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let text = string(key) else { return nil }
        guard let value = Int(text) else {
            issue(key, "must be a whole number; got '\(text)'")
            return nil
        }
        guard range.contains(value) else {
            issue(key, "must be between \(range.lowerBound) and \(range.upperBound); got \(value)")
            return nil
        }
        return value
    }

    func number(_ key: String, in range: ClosedRange<Double>) -> Double? {
        guard let text = string(key) else { return nil }
        guard let value = Double(text), value.isFinite else {
            issue(key, "must be a number; got '\(text)'")
            return nil
        }
        guard range.contains(value) else {
            issue(key, "must be between \(range.lowerBound) and \(range.upperBound); got \(text)")
            return nil
        }
        return value
    }

    func bool(_ key: String) -> Bool? {
        guard let text = string(key) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            issue(key, "must be true or false; got '\(text)'")
            return nil
        }
    }
}
