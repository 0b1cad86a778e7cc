mod codec;
fn main() {}
