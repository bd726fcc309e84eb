import Foundation
import PortcullisCore
@testable import PortcullisGuardrails
import Testing

/// Image parts (issue 20's multimodal filtering): the local checks on real PNG, JPEG, GIF and
/// WebP bytes and a real decompression bomb, through a running gateway in both dialects, and
/// the three external image moderations against the mock upstream.
///
/// The images in `Data/images` were made with ImageMagick (`convert -size 40x30 gradient:… photo.png`,
/// `photo.jpg`, `photo.gif`; `xc:red photo.webp`; `violent.png` with `-set comment` holding a word
/// the mock's moderation flags) and the bomb by a few lines of Python: a valid 30000×30000
/// 1-bit PNG whose rows of zeros deflate to 107 KB.
@Suite("Image guard")
struct ImageGuardTests {
    static func image(_ name: String) throws -> [UInt8] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Data/images/\(name)")
        return Array(try Data(contentsOf: url))
    }

    static func dataURL(_ name: String, type: String) throws -> String {
        "data:\(type);base64," + Data(try image(name)).base64EncodedString()
    }

    static func findings(_ url: String, limits: ImageLimits = ImageLimits()) -> [GuardFinding] {
        ImageGuard(limits: limits).findings(GuardImage(messageIndex: 0, position: 0, url: url))
    }

    @Test("formats are told by their bytes and dimensions read from their headers: PNG, JPEG, GIF, WebP and the bomb")
    func headers() throws {
        for (name, format, width, height) in [("photo.png", ImageFormat.png, 40, 30), ("photo.jpg", .jpeg, 40, 30), ("photo.gif", .gif, 40, 30),
                                              ("photo.webp", .webp, 12, 10), ("bomb.png", .png, 30_000, 30_000)] {
            let bytes = try Self.image(name)
            #expect(ImageFormat.sniff(bytes) == format, "\(name)")
            let size = format.dimensions(of: bytes)
            #expect(size?.width == width && size?.height == height, "\(name): \(String(describing: size))")
        }
        #expect(ImageFormat.sniff(Array("not an image at all".utf8)) == nil)
        #expect(ImageFormat.png.dimensions(of: Array(try Self.image("photo.png").prefix(20))) == nil, "a truncated header has no size")
        #expect(ImageFormat.jpeg.dimensions(of: [0xFF, 0xD8, 0xFF, 0xDA, 0, 4, 0, 0]) == nil, "scan data before any frame")
    }

    @Test("the local checks: real images pass; a mismatched type, a bomb, broken base64, unknown bytes, an oversized image, http and an unlisted host do not")
    func localChecks() throws {
        for (name, type) in [("photo.png", "image/png"), ("photo.jpg", "image/jpeg"), ("photo.jpg", "image/jpg"), ("photo.gif", "image/gif"),
                             ("photo.webp", "image/webp")] {
            #expect(Self.findings(try Self.dataURL(name, type: type)).isEmpty, "\(name) as \(type)")
        }
        let mismatched = Self.findings(try Self.dataURL("photo.jpg", type: "image/png"))
        #expect(mismatched.count == 1 && mismatched[0].category == .image && mismatched[0].risk == .high)
        #expect(mismatched.first?.reason.contains("declared image/png, but the bytes are image/jpeg") == true, "\(mismatched)")
        let bomb = Self.findings(try Self.dataURL("bomb.png", type: "image/png"))
        #expect(bomb.count == 1 && bomb[0].risk == .critical && bomb[0].reason.contains("30000×30000") && bomb[0].reason.contains("decompression bomb"),
                "\(bomb)")
        #expect(Self.findings("data:image/png;base64,@@@@").first?.reason.contains("does not decode") == true)
        #expect(Self.findings("data:image/png,rawbytes").first?.reason.contains("base64") == true)
        #expect(Self.findings("data:image/png;base64," + Data("plain text, not pixels".utf8).base64EncodedString()).first?.reason
            .contains("not PNG, JPEG, GIF or WebP") == true)
        #expect(Self.findings(try Self.dataURL("photo.png", type: "image/svg+xml")).first?.reason.contains("not an image type") == true)
        var small = ImageLimits()
        small.maximumBytes = 100
        let large = Self.findings(try Self.dataURL("photo.png", type: "image/png"), limits: small)
        #expect(large.first?.category == .invalidInput && large.first?.reason.contains("larger than 100 bytes") == true)
        var narrow = ImageLimits()
        narrow.maximumSide = 32
        narrow.formats = [.png, .jpeg]
        #expect(Self.findings(try Self.dataURL("photo.png", type: "image/png"), limits: narrow).first?.reason.contains("on a side") == true)
        #expect(Self.findings(try Self.dataURL("photo.gif", type: "image/gif"), limits: narrow).first?.reason.contains("not allowed") == true)

        #expect(Self.findings("https://anywhere.example/cat.png").isEmpty, "any https host by default")
        #expect(Self.findings("http://anywhere.example/cat.png").first?.reason.contains("must be https") == true)
        #expect(Self.findings("file:///etc/passwd").first?.category == .image)
        var listed = ImageLimits()
        listed.allowedHosts = ["images.example.com", "*.cdn.example.net"]
        #expect(Self.findings("https://images.example.com/a.png", limits: listed).isEmpty)
        #expect(Self.findings("https://eu.cdn.example.net/a.png", limits: listed).isEmpty)
        for refused in ["https://cdn.example.net/a.png", "https://evil.com/a.png", "https://images.example.com.evil.com/a.png"] {
            let found = Self.findings(refused, limits: listed)
            #expect(found.first?.reason.contains("allowed_hosts") == true, "\(refused)")
            #expect(!(found.first?.reason.contains("evil") ?? false), "the reason does not repeat the URL")
        }
    }

    @Test("through the gateway: an inline image is served; a bomb, a mismatched type or an unlisted host is refused in the client's envelope, both dialects")
    func throughGateway() async throws {
        try await withMockUpstream { _, port in
            let yaml = """
                auth: { master_key: test-master-key }
                models:
                \(openAIModel("chat", port: port))
                guardrails:
                  images: { allowed_hosts: [images.example.com] }
                """
            try await withGateway(yaml: yaml) { gateway in
                func openAI(_ url: String) async throws -> HTTPResult {
                    try await gateway.call(.POST, "/v1/chat/completions", key: "test-master-key", body: """
                        {"model":"chat","messages":[{"role":"user","content":[{"type":"text","text":"What is in this picture?"},\
                        {"type":"image_url","image_url":{"url":"\(url)"}}]}]}
                        """)
                }
                let served = try await openAI(try Self.dataURL("photo.png", type: "image/png"))
                #expect(served.status == 200, "\(served.body)")
                #expect(try await openAI("https://images.example.com/cat.png").status == 200)
                let bomb = try await openAI(try Self.dataURL("bomb.png", type: "image/png"))
                #expect(bomb.status == 400 && bomb.headers["x-portcullis-guard-category"] == "image", "\(bomb.status) \(bomb.body)")
                #expect(bomb.json?.objectValue?["error"]?.objectValue?["code"]?.stringValue == "guardrail_blocked", "\(bomb.body)")
                let mismatched = try await openAI(try Self.dataURL("photo.jpg", type: "image/png"))
                #expect(mismatched.status == 400 && mismatched.headers["x-portcullis-guard-category"] == "image")
                let unlisted = try await openAI("https://elsewhere.example.org/cat.png")
                #expect(unlisted.status == 400 && unlisted.headers["x-portcullis-guard-category"] == "image")

                let jpeg = Data(try Self.image("photo.jpg")).base64EncodedString()
                let anthropic = try await gateway.call(.POST, "/v1/messages", key: "test-master-key", body: """
                    {"model":"chat","max_tokens":50,"messages":[{"role":"user","content":[{"type":"text","text":"Describe it"},\
                    {"type":"image","source":{"type":"base64","media_type":"image/gif","data":"\(jpeg)"}}]}]}
                    """)
                #expect(anthropic.status == 400 && anthropic.json?.objectValue?["type"]?.stringValue == "error", "\(anthropic.body)")
                #expect(anthropic.headers["x-portcullis-guard-category"] == "image")
                // The guard events (written in batches) name the check, never the image's bytes.
                #expect(try await eventually(seconds: 10) {
                    try await gateway.call(.GET, "/admin/guard-events", key: "test-master-key").body.contains("decompression bomb")
                })
                let events = try await gateway.call(.GET, "/admin/guard-events", key: "test-master-key").body
                #expect(!events.contains(jpeg.prefix(40)), "\(events.prefix(2000))")
            }
        }
    }

    @Test("external image moderation: OpenAI omni-moderation, Azure image:analyze and Bedrock image blocks receive the image and their verdict blocks it")
    func externalModeration() async throws {
        try await withMockUpstream { _, port in
            let base = "http://127.0.0.1:\(port)"
            let services = [
                ("openai_moderation", "openai_moderation: { api_base: \"\(base)\", when: always }", "/v1/moderations"),
                ("azure_content_safety", "azure_content_safety: { api_base: \"\(base)\", api_key: k, when: always }", "/contentsafety/image:analyze"),
                ("bedrock_guardrail", """
                    bedrock_guardrail: { api_base: "\(base)", region: eu-west-1, guardrail_id: g1, api_key: AKIDEXAMPLE, \
                    secret_access_key: secret, when: always }
                    """, "/guardrail/g1/version/DRAFT/apply"),
            ]
            for (name, settings, path) in services {
                let yaml = """
                    models:
                    \(openAIModel("chat", port: port))
                    guardrails:
                      \(settings)
                      default: { input: [validation, images, \(name)] }
                    """
                try await withGateway(yaml: yaml) { gateway in
                    func ask(_ image: String) async throws -> HTTPResult {
                        try await gateway.call(.POST, "/v1/chat/completions", key: nil, body: """
                            {"model":"chat","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"\(try Self.dataURL(image, type: "image/png"))"}}]}]}
                            """)
                    }
                    let calm = try await ask("photo.png")
                    #expect(calm.status == 200, "\(name): \(calm.body)")
                    let violent = try await ask("violent.png")
                    #expect(violent.status == 400 && violent.headers["x-portcullis-guard-category"] == "moderation", "\(name): \(violent.status) \(violent.body)")
                    let sent = try await mockRequests(port: port).filter { $0["path"]?.stringValue == path }
                    let encoded = Data(try Self.image("violent.png")).base64EncodedString()
                    #expect(sent.contains { JSONWriter.string($0["body"] ?? .null).contains(encoded) }, "\(name) received the image's bytes")
                }
            }
        }
    }
}
