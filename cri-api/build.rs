//! Generates the CRI `runtime.v1` client from `proto/api.proto` (the Kubernetes cri-api
//! protos, as the `k8s-cri` crate ships them) with the protoc that `protoc-bin-vendored`
//! carries: building busyprobe needs no protoc on the machine.

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored has a protoc for this host");
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/api.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/api.proto"], &["proto/"])
        .expect("compiling the CRI protos");
}
