fn main() {
    routefabric_wasm_build::build_plugins(&[
        "static-routes",
        "ack-trace",
        "fanout-token",
        "dht-directory",
        "lowest-cost",
        "expected-cost",
        "redundant",
    ]);
}
