//! The dashboard (`web/`) is compiled into the binary by `include_dir!`, which cargo cannot see
//! reading files: without this, an edited page kept being served from the last build.
fn main() {
    println!("cargo::rerun-if-changed=web");
}
