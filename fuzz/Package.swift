// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "BrumeFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Brume", path: "/work/scratch/brume-root2"),
    ],
    targets: [
        .target(name: "CFuzzerDriver"),
        .executableTarget(name: "fuzz-json", dependencies: ["CFuzzerDriver", .product(name: "BrumeCore", package: "Brume")]),
    ],
    swiftLanguageModes: [.v6]
)
