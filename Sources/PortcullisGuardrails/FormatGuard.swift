import Foundation
import PortcullisCore

/// Checks that an answer has the shape the request's `response_format` asked for: any JSON
/// object (`json_object`) or a value valid against a JSON schema (`json_schema`).
///
/// The schema keywords of structured outputs are checked: `type` (one or a list), `enum`,
/// `const`, `properties`, `required`, `additionalProperties` (false or a schema), `items`,
/// `prefixItems`, `minItems`/`maxItems`, `minLength`/`maxLength`, `pattern`, `format`
/// (`date-time`, `date`, `email`, `uuid`), `minimum`/`maximum` and their exclusive forms,
/// `multipleOf`, `anyOf`/`oneOf`/`allOf`/`not`, and `$ref` into `#/$defs` or `#/definitions`.
/// Unknown keywords are ignored, as the specification says.
public enum FormatCheck {
    /// nil when `text` satisfies `format`; otherwise the first problem, naming the JSON path
    /// (never the answer's content beyond the path).
    public static func problem(in text: String, format: ResponseFormat?) -> String? {
        switch format {
        case nil, .text?: return nil
        case .jsonObject?:
            switch parse(text) {
            case .failure(let message): return message
            case .success(let value): return value.objectValue == nil ? "the answer is JSON but not an object" : nil
            }
        case .jsonSchema(_, let schema, _)?:
            let value: JSONValue
            switch parse(text) {
            case .failure(let message): return message
            case .success(let parsed): value = parsed
            }
            guard let schema else { return nil }
            return JSONSchemaValidator(root: schema).errors(value).first
        }
    }

    private enum Parsed {
        case success(JSONValue)
        case failure(String)
    }

    private static func parse(_ text: String) -> Parsed {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("```") { return .failure("the answer is wrapped in a Markdown code fence, not bare JSON") }
        do {
            return .success(try JSONParser.parse(trimmed))
        } catch {
            return .failure("the answer is not valid JSON (\(error))")
        }
    }
}

/// A JSON Schema validator for the keywords structured outputs use (see `FormatCheck`).
public struct JSONSchemaValidator: Sendable {
    public let root: JSONValue
    /// `$ref` chains deeper than this are reported rather than followed (a cyclic schema).
    static let maximumDepth = 64

    public init(root: JSONValue) {
        self.root = root
    }

    /// Every violation, each as "path: problem" (empty: valid).
    public func errors(_ value: JSONValue) -> [String] {
        var errors: [String] = []
        validate(value, against: root, path: "$", depth: 0, errors: &errors)
        return errors
    }

    private func validate(_ value: JSONValue, against schema: JSONValue, path: String, depth: Int, errors: inout [String]) {
        if case .bool(let allowed) = schema {
            if !allowed { errors.append("\(path): no value is allowed here") }
            return
        }
        guard let schema = schema.objectValue else { return }
        guard depth < Self.maximumDepth else {
            errors.append("\(path): the schema nests too deeply (a cyclic $ref?)")
            return
        }
        if let reference = schema["$ref"]?.stringValue {
            guard let target = resolve(reference) else {
                errors.append("\(path): the schema's $ref \(reference) does not resolve")
                return
            }
            validate(value, against: target, path: path, depth: depth + 1, errors: &errors)
        }
        if let type = schema["type"] {
            let allowed = type.stringValue.map { [$0] } ?? type.arrayValue?.compactMap(\.stringValue) ?? []
            if !allowed.isEmpty, !allowed.contains(where: { Self.matches(value, type: $0) }) {
                errors.append("\(path): expected \(allowed.joined(separator: " or ")), found \(Self.typeName(value))")
                return
            }
        }
        if let options = schema["enum"]?.arrayValue, !options.contains(where: { Self.equal($0, value) }) {
            errors.append("\(path): not one of the allowed values")
        }
        if let constant = schema["const"], !Self.equal(constant, value) { errors.append("\(path): not the required constant") }
        switch value {
        case .object(let object): validateObject(object, schema: schema, path: path, depth: depth, errors: &errors)
        case .array(let items): validateArray(items, schema: schema, path: path, depth: depth, errors: &errors)
        case .string(let string): validateString(string, schema: schema, path: path, errors: &errors)
        case .integer, .double: validateNumber(value.doubleValue ?? 0, schema: schema, path: path, errors: &errors)
        case .null, .bool: break
        }
        if let all = schema["allOf"]?.arrayValue {
            for part in all { validate(value, against: part, path: path, depth: depth + 1, errors: &errors) }
        }
        if let any = schema["anyOf"]?.arrayValue, !any.contains(where: { passes(value, $0, path: path, depth: depth) }) {
            errors.append("\(path): matches none of anyOf")
        }
        if let one = schema["oneOf"]?.arrayValue {
            let count = one.filter { passes(value, $0, path: path, depth: depth) }.count
            if count != 1 { errors.append("\(path): matches \(count) of oneOf, not exactly one") }
        }
        if let not = schema["not"], passes(value, not, path: path, depth: depth) { errors.append("\(path): matches the schema under not") }
    }

    private func passes(_ value: JSONValue, _ schema: JSONValue, path: String, depth: Int) -> Bool {
        var errors: [String] = []
        validate(value, against: schema, path: path, depth: depth + 1, errors: &errors)
        return errors.isEmpty
    }

    private func validateObject(_ object: JSONObject, schema: JSONObject, path: String, depth: Int, errors: inout [String]) {
        let properties = schema["properties"]?.objectValue ?? JSONObject()
        for name in schema["required"]?.arrayValue?.compactMap(\.stringValue) ?? [] where object[name] == nil {
            errors.append("\(path): missing required property \"\(name)\"")
        }
        for (name, member) in object {
            let memberPath = path + "." + name
            if let propertySchema = properties[name] {
                validate(member, against: propertySchema, path: memberPath, depth: depth + 1, errors: &errors)
            } else if let additional = schema["additionalProperties"] {
                if case .bool(false) = additional {
                    errors.append("\(path): property \"\(name)\" is not allowed")
                } else {
                    validate(member, against: additional, path: memberPath, depth: depth + 1, errors: &errors)
                }
            }
        }
        if let minimum = schema["minProperties"]?.integerValue, object.entries.count < minimum {
            errors.append("\(path): fewer than \(minimum) properties")
        }
        if let maximum = schema["maxProperties"]?.integerValue, object.entries.count > maximum {
            errors.append("\(path): more than \(maximum) properties")
        }
    }

    private func validateArray(_ items: [JSONValue], schema: JSONObject, path: String, depth: Int, errors: inout [String]) {
        let prefix = schema["prefixItems"]?.arrayValue ?? []
        for (index, item) in items.enumerated() {
            let itemPath = "\(path)[\(index)]"
            if index < prefix.count {
                validate(item, against: prefix[index], path: itemPath, depth: depth + 1, errors: &errors)
            } else if let itemSchema = schema["items"] {
                validate(item, against: itemSchema, path: itemPath, depth: depth + 1, errors: &errors)
            }
        }
        if let minimum = schema["minItems"]?.integerValue, items.count < minimum { errors.append("\(path): fewer than \(minimum) items") }
        if let maximum = schema["maxItems"]?.integerValue, items.count > maximum { errors.append("\(path): more than \(maximum) items") }
        if case .bool(true)? = schema["uniqueItems"] {
            for index in items.indices where items[..<index].contains(where: { Self.equal($0, items[index]) }) {
                errors.append("\(path): items are not unique")
                break
            }
        }
    }

    private func validateString(_ string: String, schema: JSONObject, path: String, errors: inout [String]) {
        let length = string.unicodeScalars.count
        if let minimum = schema["minLength"]?.integerValue, length < minimum { errors.append("\(path): shorter than \(minimum) characters") }
        if let maximum = schema["maxLength"]?.integerValue, length > maximum { errors.append("\(path): longer than \(maximum) characters") }
        if let pattern = schema["pattern"]?.stringValue {
            if let expression = try? NSRegularExpression(pattern: pattern) {
                if expression.firstMatch(in: string, range: NSRange(string.startIndex..., in: string)) == nil {
                    errors.append("\(path): does not match the pattern")
                }
            } else {
                errors.append("\(path): the schema's pattern is not a valid regular expression")
            }
        }
        if let format = schema["format"]?.stringValue, !Self.hasFormat(string, format) { errors.append("\(path): not a valid \(format)") }
    }

    private func validateNumber(_ number: Double, schema: JSONObject, path: String, errors: inout [String]) {
        if let minimum = schema["minimum"]?.doubleValue, number < minimum { errors.append("\(path): below the minimum") }
        if let maximum = schema["maximum"]?.doubleValue, number > maximum { errors.append("\(path): above the maximum") }
        if let minimum = schema["exclusiveMinimum"]?.doubleValue, number <= minimum { errors.append("\(path): not above the exclusive minimum") }
        if let maximum = schema["exclusiveMaximum"]?.doubleValue, number >= maximum { errors.append("\(path): not below the exclusive maximum") }
        if let step = schema["multipleOf"]?.doubleValue, step > 0 {
            let quotient = number / step
            if abs(quotient - quotient.rounded()) > 1e-9 * max(1, abs(quotient)) { errors.append("\(path): not a multiple of \(step)") }
        }
    }

    /// `#/$defs/name`, `#/definitions/name`, `#` or any JSON pointer into the root schema.
    private func resolve(_ reference: String) -> JSONValue? {
        guard reference.hasPrefix("#") else { return nil }
        var current = root
        for token in reference.dropFirst().split(separator: "/") {
            let key = token.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            if let object = current.objectValue, let next = object[key] {
                current = next
            } else if let array = current.arrayValue, let index = Int(key), array.indices.contains(index) {
                current = array[index]
            } else {
                return nil
            }
        }
        return current
    }

    static func matches(_ value: JSONValue, type: String) -> Bool {
        switch (type, value) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object),
             ("number", .integer), ("number", .double): true
        case ("integer", _): value.integerValue != nil
        default: false
        }
    }

    static func typeName(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool: "boolean"
        case .integer: "integer"
        case .double: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    /// JSON equality: numbers by value (1 equals 1.0), objects without regard to key order.
    static func equal(_ left: JSONValue, _ right: JSONValue) -> Bool {
        switch (left, right) {
        case (.integer, .double), (.double, .integer), (.integer, .integer), (.double, .double): return left.doubleValue == right.doubleValue
        case (.object(let a), .object(let b)):
            return a.entries.count == b.entries.count && a.allSatisfy { entry in b[entry.key].map { equal(entry.value, $0) } ?? false }
        case (.array(let a), .array(let b)): return a.count == b.count && zip(a, b).allSatisfy { equal($0, $1) }
        default: return left == right
        }
    }

    static func hasFormat(_ string: String, _ format: String) -> Bool {
        switch format {
        case "date-time": return (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(string)) != nil
            || (try? Date.ISO8601FormatStyle().parse(string)) != nil
        case "date":
            let parts = string.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
                  let month = Int(parts[1]), let day = Int(parts[2]), Int(parts[0]) != nil else { return false }
            return (1...12).contains(month) && (1...31).contains(day)
        case "email": return PIIDetector.find(in: string).first.map { $0.kind == .email && $0.range == 0..<string.utf8.count } ?? false
        case "uuid": return UUID(uuidString: string) != nil
        default: return true
        }
    }
}
