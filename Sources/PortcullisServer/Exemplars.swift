import Foundation
import Synchronization

/// The last traced request of each bucket of `portcullis_request_duration_seconds`, per route
/// and model label: the exemplars that link a latency bucket to a trace. Only sampled requests
/// are kept (their spans were exported), so an exemplar's trace id always finds its trace.
///
/// Bounded like the histogram itself: one entry per label set and bucket.
final class RequestExemplars: Sendable {
    struct Key: Hashable {
        var route: String, model: String
        /// The bucket's upper bound (`+Inf` for the last).
        var bound: Double
    }

    struct Exemplar: Equatable {
        var traceID: String
        var seconds: Double
        /// Unix seconds.
        var timestamp: Double
    }

    let bounds: [Double]
    private let latest = Mutex<[Key: Exemplar]>([:])

    init(bounds: [Double]) {
        self.bounds = bounds
    }

    /// A sampled request's duration, in the bucket it falls in.
    func record(route: String, model: String, seconds: Double, traceID: String) {
        let bound = bounds.first { seconds <= $0 } ?? .infinity
        let exemplar = Exemplar(traceID: traceID, seconds: seconds, timestamp: Date().timeIntervalSince1970)
        latest.withLock { $0[Key(route: route, model: model, bound: bound)] = exemplar }
    }

    func exemplar(route: String, model: String, bound: Double) -> Exemplar? {
        latest.withLock { $0[Key(route: route, model: model, bound: bound)] }
    }
}

/// Prometheus text exposition as OpenMetrics 1.0 text, for a scraper that asks for it
/// (Prometheus does, and only reads exemplars from it): `untyped` becomes `unknown`, the request
/// duration buckets carry their exemplars (`# {trace_id="…"} value timestamp`), and `# EOF` ends it.
enum OpenMetricsText {
    static let contentType = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    static let bucketPrefix = "portcullis_request_duration_seconds_bucket{"

    static func convert(_ text: String, exemplars: RequestExemplars) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count + 1024)
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE "), line.hasSuffix(" untyped") {
                out += line.dropLast(" untyped".count) + " unknown\n"
                continue
            }
            out += line
            if line.hasPrefix(bucketPrefix), let exemplar = exemplar(for: line, in: exemplars) {
                out += " # {trace_id=\"\(exemplar.traceID)\"} \(PrometheusText.format(exemplar.seconds)) "
                out += String(format: "%.3f", exemplar.timestamp)
            }
            out += "\n"
        }
        return out + "# EOF\n"
    }

    /// The exemplar of one bucket sample line, found by its route, model and le labels.
    static func exemplar(for line: Substring, in exemplars: RequestExemplars) -> RequestExemplars.Exemplar? {
        guard let open = line.firstIndex(of: "{"), let close = line.lastIndex(of: "}") else { return nil }
        let labels = self.labels(line[line.index(after: open)..<close])
        guard let route = labels["route"], let model = labels["model"], let le = labels["le"] else { return nil }
        let bound = le == "+Inf" ? Double.infinity : Double(le)
        guard let bound else { return nil }
        return exemplars.exemplar(route: route, model: model, bound: bound)
    }

    /// `name="value",…` with the exposition's escapes (`\\`, `\"`, `\n`) undone.
    static func labels(_ text: Substring) -> [String: String] {
        var labels: [String: String] = [:]
        var index = text.startIndex
        while index < text.endIndex {
            guard let equals = text[index...].firstIndex(of: "=") else { break }
            let name = String(text[index..<equals]).trimmingCharacters(in: CharacterSet(charactersIn: ", "))
            var cursor = text.index(after: equals)
            guard cursor < text.endIndex, text[cursor] == "\"" else { break }
            cursor = text.index(after: cursor)
            var value = ""
            while cursor < text.endIndex, text[cursor] != "\"" {
                if text[cursor] == "\\", text.index(after: cursor) < text.endIndex {
                    cursor = text.index(after: cursor)
                    value.append(text[cursor] == "n" ? "\n" : text[cursor])
                } else {
                    value.append(text[cursor])
                }
                cursor = text.index(after: cursor)
            }
            labels[name] = value
            index = cursor < text.endIndex ? text.index(after: cursor) : cursor
        }
        return labels
    }
}
