fn main() {
    routefabric_wasm_build::build_plugins(&["probe-v1", "probe-v2"]);
}
