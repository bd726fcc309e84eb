import Foundation
import Logging
import PortcullisCache
import PortcullisCore
import PortcullisProviders
import PortcullisRouting

/// Stage 8 for embeddings: single-input requests for one model group (with the same options)
/// that arrive within `cache.embedding_batch.window_ms` become one upstream call of up to
/// `max_inputs` inputs; each caller gets its own vector (at index 0) and its share of the
/// usage, by the length of its input. When the provider refuses the batch itself (a 4xx), each
/// input is sent on its own, so a bad input fails only its request. Off (window 0): nothing batched.
struct EmbeddingBatchStage: Sendable {
    struct Key: Hashable, Sendable {
        let model: String
        /// The options other than the input, as sorted JSON.
        let options: String
    }

    struct Item: Sendable {
        let text: String
        /// The request's other fields (the same for every item of a batch: they are in its key).
        let extra: JSONObject
        let upstream: UpstreamContext
        let measures: RequestMeasures?
    }

    let batcher: MicroBatcher<Key, Item, Routed<JSONValue>>?

    init(route: RouteStage, settings: CacheConfiguration) {
        guard settings.embeddingBatchWindowSeconds > 0 else {
            batcher = nil
            return
        }
        batcher = MicroBatcher(window: Deadline.seconds(settings.embeddingBatchWindowSeconds), maximumItems: settings.embeddingBatchMaximumInputs) { key, items in
            await Self.run(key, items, route: route)
        }
    }

    /// The answer for `request`: through a batch when it has one text input, else on its own
    /// (always on its own under residency rules: a batch is one call, to one deployment, for many callers).
    func embed(_ request: EmbeddingRequest, upstream: UpstreamContext, measures: RequestMeasures?,
               route: RouteStage, residency: Residency? = nil) async throws -> Routed<JSONValue> {
        guard let batcher, residency == nil, let text = request.input.stringValue else {
            return try await Self.single(request, upstream: upstream, measures: measures, route: route, residency: residency)
        }
        var options: [UInt8] = []
        JSONWriter.writeSortingKeys(.object(request.extra), into: &options)
        return try await batcher.submit(Item(text: text, extra: request.extra, upstream: upstream, measures: measures),
                                        key: Key(model: request.model, options: String(decoding: options, as: UTF8.self)))
    }

    static func single(_ request: EmbeddingRequest, upstream: UpstreamContext, measures: RequestMeasures?, route: RouteStage,
                       residency: Residency? = nil) async throws -> Routed<JSONValue> {
        try await route.call(model: request.model, logger: upstream.logger, measures: measures, operation: "embeddings", residency: residency) { deployment in
            try await deployment.adapter.embeddings(request, target: deployment.target, context: upstream)
        }
    }

    static func run(_ key: Key, _ items: [Item], route: RouteStage) async -> [Result<Routed<JSONValue>, any Error>] {
        let first = items[0], extra = first.extra
        guard items.count > 1 else {
            return [await Result(catching: { try await single(EmbeddingRequest(model: key.model, input: .string(first.text), extra: extra),
                                                    upstream: first.upstream, measures: first.measures, route: route) })]
        }
        let batch = EmbeddingRequest(model: key.model, input: .array(items.map { .string($0.text) }), extra: extra)
        do {
            let routed = try await single(batch, upstream: first.upstream, measures: first.measures, route: route)
            return split(routed, lengths: items.map { $0.text.utf8.count })
        } catch let error as GatewayError where error.code == .upstreamRejectedRequest {
            // The provider refused the batch: one of its inputs may be at fault, so each goes alone.
            return await withTaskGroup(of: (Int, Result<Routed<JSONValue>, any Error>).self) { group in
                for (index, item) in items.enumerated() {
                    group.addTask {
                        (index, await Result(catching: { try await single(EmbeddingRequest(model: key.model, input: .string(item.text), extra: extra),
                                                                upstream: item.upstream, measures: item.measures, route: route) }))
                    }
                }
                var results = [Result<Routed<JSONValue>, any Error>](repeating: .failure(MissingBatchResult()), count: items.count)
                for await (index, result) in group { results[index] = result }
                return results
            }
        } catch {
            return items.map { _ in .failure(error) }
        }
    }

    /// One answer per input of a batched answer: its vector at index 0 and its share of the usage.
    static func split(_ routed: Routed<JSONValue>, lengths: [Int]) -> [Result<Routed<JSONValue>, any Error>] {
        guard let object = routed.value.objectValue, let data = object["data"]?.arrayValue else {
            return lengths.map { _ in .failure(OpenAIWire.malformedUpstream("an embeddings answer without data")) }
        }
        var byIndex: [Int: JSONObject] = [:]
        for (position, element) in data.enumerated() {
            guard let item = element.objectValue else { continue }
            byIndex[Int(item["index"]?.integerValue ?? Int64(position))] = item
        }
        let promptTokens = object["usage"]?.objectValue?["prompt_tokens"]?.integerValue
        let total = max(1, lengths.reduce(0, +))
        var assigned: Int64 = 0
        return lengths.indices.map { index in
            guard var item = byIndex[index] else { return .failure(OpenAIWire.malformedUpstream("no embedding for input \(index)")) }
            item["index"] = 0
            var answer = object
            answer["data"] = .array([.object(item)])
            if let promptTokens {
                let share = index == lengths.count - 1 ? promptTokens - assigned : promptTokens * Int64(lengths[index]) / Int64(total)
                assigned += share
                answer["usage"] = ["prompt_tokens": .integer(share), "total_tokens": .integer(share)]
            }
            var one = routed
            one.value = .object(answer)
            return .success(one)
        }
    }
}
