/// Reads typed fields out of a JSON object, producing `GatewayError`s that name
/// the offending parameter path (e.g. `messages[2].content`).
public struct FieldReader: Sendable {
    /// The object being read.
    public let object: JSONObject
    /// The path of this object within the request, empty for the root.
    public let path: String

    public init(_ object: JSONObject, path: String = "") {
        self.object = object
        self.path = path
    }

    /// The full parameter path of `key`.
    public func param(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    private func present(_ key: String) -> JSONValue? {
        guard let value = object[key], !value.isNull else { return nil }
        return value
    }

    private func typeError(_ key: String, _ expected: String, _ value: JSONValue) -> GatewayError {
        .invalidParameter(param(key), "'\(param(key))' must be \(expected), not \(value.typeName).")
    }

    /// A required string.
    public func requiredString(_ key: String) throws(GatewayError) -> String {
        guard let value = present(key) else {
            throw .invalidParameter(param(key), "'\(param(key))' is required.")
        }
        guard let string = value.stringValue else { throw typeError(key, "a string", value) }
        return string
    }

    /// An optional string.
    public func string(_ key: String) throws(GatewayError) -> String? {
        guard let value = present(key) else { return nil }
        guard let string = value.stringValue else { throw typeError(key, "a string", value) }
        return string
    }

    /// An optional Boolean.
    public func bool(_ key: String) throws(GatewayError) -> Bool? {
        guard let value = present(key) else { return nil }
        guard let bool = value.boolValue else { throw typeError(key, "a boolean", value) }
        return bool
    }

    /// An optional integer within `range`.
    public func integer(_ key: String, in range: ClosedRange<Int64> = Int64.min...Int64.max) throws(GatewayError) -> Int64? {
        guard let value = present(key) else { return nil }
        guard let integer = value.integerValue else { throw typeError(key, "an integer", value) }
        guard range.contains(integer) else {
            throw .invalidParameter(param(key), "'\(param(key))' must be between \(range.lowerBound) and \(range.upperBound), not \(integer).")
        }
        return integer
    }

    /// An optional number within `range`.
    public func number(_ key: String, in range: ClosedRange<Double> = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude) throws(GatewayError) -> Double? {
        guard let value = present(key) else { return nil }
        guard let number = value.doubleValue else { throw typeError(key, "a number", value) }
        guard range.contains(number) else {
            throw .invalidParameter(param(key), "'\(param(key))' must be between \(range.lowerBound) and \(range.upperBound), not \(number).")
        }
        return number
    }

    /// An optional object.
    public func object(_ key: String) throws(GatewayError) -> JSONObject? {
        guard let value = present(key) else { return nil }
        guard let object = value.objectValue else { throw typeError(key, "an object", value) }
        return object
    }

    /// An optional array.
    public func array(_ key: String) throws(GatewayError) -> [JSONValue]? {
        guard let value = present(key) else { return nil }
        guard let array = value.arrayValue else { throw typeError(key, "an array", value) }
        return array
    }

    /// A reader for the object at `array[index]` under `key`.
    public func element(_ key: String, _ index: Int, _ value: JSONValue) throws(GatewayError) -> FieldReader {
        guard let object = value.objectValue else {
            throw .invalidParameter("\(param(key))[\(index)]", "'\(param(key))[\(index)]' must be an object, not \(value.typeName).")
        }
        return FieldReader(object, path: "\(param(key))[\(index)]")
    }

    /// Either one string or an array of strings (as `stop` accepts).
    public func stringOrStrings(_ key: String) throws(GatewayError) -> [String]? {
        guard let value = present(key) else { return nil }
        if let single = value.stringValue { return [single] }
        guard let array = value.arrayValue else { throw typeError(key, "a string or an array of strings", value) }
        var strings: [String] = []
        for element in array {
            guard let string = element.stringValue else { throw typeError(key, "a string or an array of strings", element) }
            strings.append(string)
        }
        return strings
    }

    /// The members whose keys are not in `known`, for pass-through.
    public func unknownMembers(known: Set<String>) -> JSONObject {
        var extra = JSONObject()
        for (key, value) in object where !known.contains(key) { extra[key] = value }
        return extra
    }
}
