//! Compiles `tickroom.proto` (the client protocol) and `bus.proto` (what nodes say over the
//! cluster bus) with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=tickroom.proto");
    println!("cargo:rerun-if-changed=bus.proto");
    let fds = protox::compile(["tickroom.proto", "bus.proto"], ["."])?;
    prost_build::Config::new()
        .bytes(["."])
        // A game view is 13 vectors; boxed, a ServerMessage that holds none stays small.
        .boxed(".tickroom.v1.Snapshot.view")
        .compile_fds(fds)?;
    Ok(())
}
