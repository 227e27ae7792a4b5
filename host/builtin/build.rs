fn main() {
    routefabric_wasm_build::build_plugins(&[
        "static-routes",
        "ack-trace",
        "lowest-cost",
        "expected-cost",
        "redundant",
    ]);
}
