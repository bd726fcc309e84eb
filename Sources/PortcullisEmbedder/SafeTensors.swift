import Foundation
import PortcullisCore

/// A `.safetensors` file: an 8-byte little-endian header length, a JSON header naming each
/// tensor's dtype, shape and byte range, then the tensors' bytes. Only `F32` tensors are read.
struct SafeTensors {
    struct Entry {
        var shape: [Int]
        var range: Range<Int>
        var dtype: String
    }

    let data: Data
    let entries: [String: Entry]
    let base: Int

    init(contentsOf url: URL) throws {
        let data = try Data(contentsOf: url, options: .alwaysMapped)
        guard data.count >= 8 else { throw EmbedderError.invalidModel("\(url.path): too short for a safetensors file") }
        let length = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        guard length > 0, 8 + length <= data.count else { throw EmbedderError.invalidModel("\(url.path): header length \(length) out of range") }
        let header: JSONObject
        do {
            guard let object = try JSONParser.parse(data.subdata(in: 8..<(8 + length))).objectValue else { throw EmbedderError.invalidModel("header is not an object") }
            header = object
        } catch let error as EmbedderError {
            throw error
        } catch {
            throw EmbedderError.invalidModel("\(url.path): unreadable header: \(error)")
        }
        var entries: [String: Entry] = [:]
        for (name, value) in header where name != "__metadata__" {
            guard let object = value.objectValue, let dtype = object["dtype"]?.stringValue,
                  let shape = object["shape"]?.arrayValue?.compactMap({ $0.integerValue.map(Int.init) }),
                  let offsets = object["data_offsets"]?.arrayValue?.compactMap({ $0.integerValue.map(Int.init) }), offsets.count == 2,
                  offsets[0] <= offsets[1], 8 + length + offsets[1] <= data.count
            else { throw EmbedderError.invalidModel("\(url.path): tensor \(name) is malformed") }
            entries[name] = Entry(shape: shape, range: offsets[0]..<offsets[1], dtype: dtype)
        }
        self.data = data
        self.entries = entries
        self.base = 8 + length
    }

    /// The `F32` tensor `name`, checked against `shape`, as a flat row-major array.
    func floats(_ name: String, shape: [Int]) throws -> [Float] {
        guard let entry = entries[name] else { throw EmbedderError.invalidModel("tensor \(name) is missing") }
        guard entry.dtype == "F32", entry.shape == shape, entry.range.count == shape.reduce(1, *) * 4 else {
            throw EmbedderError.invalidModel("tensor \(name) is \(entry.dtype) \(entry.shape), expected F32 \(shape)")
        }
        let count = entry.range.count / 4
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            data.withUnsafeBytes { raw in
                let source = raw.baseAddress! + base + entry.range.lowerBound
                for index in 0..<count {
                    buffer[index] = Float(bitPattern: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)))
                }
            }
            initialized = count
        }
    }

    /// A `Linear` layer's weight (`outputs × inputs` in the file) transposed to `inputs × outputs`.
    func transposed(_ name: String, outputs: Int, inputs: Int) throws -> [Float] {
        let weight = try floats(name, shape: [outputs, inputs])
        var result = [Float](repeating: 0, count: weight.count)
        for output in 0..<outputs {
            for input in 0..<inputs { result[input * outputs + output] = weight[output * inputs + input] }
        }
        return result
    }
}

/// Why the built-in embedder cannot start.
public enum EmbedderError: Error, CustomStringConvertible, Equatable {
    case missingModel(String)
    case invalidModel(String)

    public var description: String {
        switch self {
        case .missingModel(let detail): "the built-in embedder's model is missing: \(detail)"
        case .invalidModel(let detail): "the built-in embedder's model is unreadable: \(detail)"
        }
    }
}
