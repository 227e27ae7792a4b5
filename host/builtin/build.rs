fn main() {
    routefabric_wasm_build::build_plugins(&["static-routes", "lowest-cost"]);
}
