import NIOCore
@testable import PortcullisProviders
import Testing

@Suite("Server-sent events")
struct SSETests {
    static let stream = "event: message_start\ndata: {\"a\":1}\n\n: keep-alive comment\n\ndata: line one\r\ndata: line two\r\n\r\ndata: [DONE]\n\n"

    @Test("parses the same events however the bytes are split")
    func splitAnywhere() throws {
        let bytes = Array(Self.stream.utf8)
        var expected: [SSEEvent]?
        for split in 1..<bytes.count {
            var parser = SSEParser()
            var events = try parser.feed(bytes[..<split])
            events += try parser.feed(bytes[split...])
            if let expected { #expect(events == expected, "split at \(split)") } else { expected = events }
        }
        #expect(expected == [
            SSEEvent(event: "message_start", data: "{\"a\":1}"),
            SSEEvent(data: "line one\nline two"),
            SSEEvent(data: "[DONE]"),
        ])
    }

    @Test("byte-at-a-time feeding and a final event without its blank line")
    func byteAtATime() throws {
        var parser = SSEParser()
        var events: [SSEEvent] = []
        for byte in "data: x\n\ndata: y".utf8 { events += try parser.feed([byte]) }
        #expect(events == [SSEEvent(data: "x")])
        #expect(parser.finish() == SSEEvent(data: "y"))
    }

    @Test("refuses an unbounded line")
    func lineLimit() {
        #expect(throws: SSEParser.LineTooLong.self) {
            var parser = SSEParser(maximumLineLength: 16)
            _ = try parser.feed(Array(repeating: UInt8(ascii: "a"), count: 17))
        }
    }

    @Test("writes events")
    func writer() {
        #expect(String(buffer: SSEWriter.event("ping", Array("{}".utf8))) == "event: ping\ndata: {}\n\n")
        #expect(String(buffer: SSEWriter.done) == "data: [DONE]\n\n")
    }
}

@Suite("Upstream URLs")
struct UpstreamURLTests {
    @Test("splits URLs into endpoint and request target", arguments: [
        ("https://api.openai.com/v1/chat/completions", true, "api.openai.com", 443, "/v1/chat/completions"),
        ("http://127.0.0.1:8000/v1/models", false, "127.0.0.1", 8000, "/v1/models"),
        ("https://x.openai.azure.com/openai/deployments/a/chat/completions?api-version=2024-10-21", true, "x.openai.azure.com", 443,
         "/openai/deployments/a/chat/completions?api-version=2024-10-21"),
        ("http://[::1]:9000", false, "::1", 9000, "/"),
        ("http://vllm?x=1", false, "vllm", 80, "/?x=1"),
    ])
    func parse(url: String, isTLS: Bool, host: String, port: Int, target: String) throws {
        let (endpoint, requestTarget) = try UpstreamHTTPClient.parse(url, deployment: "d")
        #expect(endpoint.isTLS == isTLS)
        #expect(endpoint.host == host)
        #expect(endpoint.port == port)
        #expect(requestTarget == target)
    }

    @Test("refuses what is not an http(s) URL", arguments: ["ftp://x/y", "api.openai.com/v1", "http://:80/", "http://h:99999/", "http://[::1/"])
    func refuse(url: String) {
        #expect(throws: UpstreamFailure.self) { try UpstreamHTTPClient.parse(url, deployment: "d") }
    }
}
