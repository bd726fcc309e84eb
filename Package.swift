// swift-tools-version:6.2
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

// The built-in embedder's arithmetic is written for eight-lane SIMD with fused multiply-add:
// on x86-64 its target is compiled for AVX2 and FMA (Haswell, 2013, and every server CPU since),
// and the cache checks the CPU for them before it loads the embedder.
// It is optimised in debug builds too: unoptimised, one question takes seconds, past the
// semantic cache's time limit, and the tests of a debug build would measure nothing real.
// Its widest kernel, for AVX-512, is a target of its own compiled for Skylake-SP, called only
// when the CPU reports avx512f.
#if arch(x86_64)
let embedderSettings: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"]), .unsafeFlags(["-O"], .when(configuration: .debug))]
let wideEmbedderSettings: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "skylake-avx512"]), .unsafeFlags(["-O"], .when(configuration: .debug))]
#else
let embedderSettings: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]
let wideEmbedderSettings: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]
#endif

let package = Package(
    name: "portcullis",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "portcullis", targets: ["portcullis"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: ["FullFoundation"]),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.13.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        // OTLP/HTTP only: the gRPC exporter's dependencies would double the clean build.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        .target(
            name: "PortcullisCore",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisConfig",
            dependencies: [
                "PortcullisCore",
                "PortcullisTLS",
                "PortcullisAudit",
                "PortcullisCache",
                "PortcullisGuardrails",
                "PortcullisAccess",
                "PortcullisStorage",
                "PortcullisRouting",
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisProviders",
            dependencies: [
                "PortcullisCore",
                "PortcullisTLS",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisRouting",
            dependencies: [
                "PortcullisCore",
                "PortcullisTLS",
                "PortcullisProviders",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisGuardrails",
            dependencies: [
                "PortcullisCore",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.copy("Resources/injection-classifier.bin")],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisTLS",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisRedis",
            dependencies: [
                "PortcullisCore",
                "PortcullisTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisStorage",
            dependencies: [
                "PortcullisCore",
                "PortcullisTLS",
                "PortcullisRedis",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisAccess",
            dependencies: [
                "PortcullisCore",
                "PortcullisTLS",
                "PortcullisStorage",
                "PortcullisRedis",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisAudit",
            dependencies: [
                "PortcullisCore",
                "PortcullisStorage",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisEmbedderAVX512",
            swiftSettings: strictSettings + wideEmbedderSettings
        ),
        // C, because Swift cannot name AVX512_BF16's VDPBF16PS: two functions, each compiled for that extension alone.
        .target(name: "PortcullisEmbedderBF16", cSettings: [.unsafeFlags(["-O2"], .when(configuration: .debug))]),
        .target(
            name: "PortcullisEmbedder",
            dependencies: ["PortcullisCore", "PortcullisEmbedderAVX512", "PortcullisEmbedderBF16"],
            swiftSettings: strictSettings + embedderSettings
        ),
        .target(
            name: "PortcullisCache",
            dependencies: [
                "PortcullisCore",
                "PortcullisEmbedder",
                "PortcullisProviders",
                "PortcullisRedis",
                "PortcullisStorage",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisServer",
            dependencies: [
                "PortcullisAudit",
                "PortcullisCache",
                "PortcullisCore",
                "PortcullisConfig",
                "PortcullisProviders",
                "PortcullisRouting",
                "PortcullisAccess",
                "PortcullisGuardrails",
                "PortcullisStorage",
                "PortcullisRedis",
                "PortcullisTLS",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "PortcullisMockUpstream",
            dependencies: [
                "PortcullisCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "portcullis",
            dependencies: [
                "PortcullisServer",
                "PortcullisAudit",
                "PortcullisCache",
                "PortcullisEmbedder",
                "PortcullisStorage",
                "PortcullisAccess",
                "PortcullisRouting",
                "PortcullisConfig",
                "PortcullisGuardrails",
                "PortcullisMockUpstream",
                "PortcullisProviders",
                "PortcullisCore",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PortcullisTests",
            dependencies: [
                "PortcullisCore",
                "PortcullisConfig",
                "PortcullisProviders",
                "PortcullisRouting",
                "PortcullisServer",
                "PortcullisMockUpstream",
                "PortcullisRedis",
                "PortcullisStorage",
                "PortcullisAccess",
                "PortcullisGuardrails",
                "PortcullisAudit",
                "PortcullisCache",
                "PortcullisEmbedder",
                "PortcullisTLS",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // Read through #filePath: the reference vectors of the built-in embedder.
            exclude: ["Data"],
            swiftSettings: strictSettings
        ),
    ]
)
