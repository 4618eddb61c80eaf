//! Generates the `apache.rocketmq.v2` messages and the `MessagingService` server and client.
//! `protox` parses the `.proto` files in Rust, so no `protoc` is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/apache/rocketmq/v2/service.proto"];
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(["."])
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
