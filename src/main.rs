//! The `pantry` command-line tool: a thin layer over the `pantry` library.

mod cli;

/// Head training and feature extraction allocate and free many
/// megabyte-sized buffers per step. glibc's allocator returns them to the
/// kernel each time, so page faults then cost as much as the arithmetic.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

/// candle runs element-wise operations on a spinning thread pool sized by
/// this variable. For the head's small tensors the spinning cost more than
/// the work: warm `pantry train` on the Grocery train split took 24 s with
/// two pool threads and 9 s with one, on 2 cores. Matrix products still use
/// every core through rayon.
const CANDLE_THREADS_ENV: &str = "CANDLE_NUM_THREADS";

fn main() -> ExitCode {
    if std::env::var_os(CANDLE_THREADS_ENV).is_none() {
        // Set before any thread starts, so no other thread reads the
        // environment concurrently.
        std::env::set_var(CANDLE_THREADS_ENV, "1");
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<cli::UsageError>().is_some() {
                ExitCode::from(cli::EXIT_USAGE)
            } else {
                ExitCode::from(cli::EXIT_FAILURE)
            }
        }
    }
}
