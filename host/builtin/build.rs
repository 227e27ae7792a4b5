fn main() {
    routefabric_wasm_build::build_plugins(&[
        "static-routes",
        "ack-trace",
        "fanout-token",
        "lowest-cost",
        "expected-cost",
        "redundant",
    ]);
}
