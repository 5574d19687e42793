//! The `tributary` binary: the command line ([`tributary::cli`]) over the built-in pipelines.

/// mimalloc: the dataflow allocates and frees small rows all the time, and the system
/// allocator made that a tenth of a worker's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tributary::cli::main(&tributary::pipelines())
}
