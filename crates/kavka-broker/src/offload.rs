//! Where file I/O of a request runs.
//!
//! A page-cache write or read of a typical producer batch or fetch (up to about 1 MiB) is a
//! memory copy that takes well under a millisecond; sending it to the blocking pool costs
//! two thread hand-offs, which on this kind of (virtualised, 2-core) machine cost more CPU
//! than the copy and add tail latency at high request rates (measured: ~40 µs of broker
//! CPU per 100-byte message at 10k msgs/s with linger.ms=0). So small I/O runs inline on
//! the task; large I/O, every fsync and every metadata-log write go to the blocking pool,
//! so the reactor is never held for long.

/// Largest amount of file I/O a request may do inline on a runtime worker.
pub const INLINE_IO_BYTES: usize = 1024 * 1024;

/// Runs `f` inline when `io_bytes` is small, else on the blocking pool.
pub async fn run_io<T, F>(io_bytes: usize, f: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if io_bytes <= INLINE_IO_BYTES {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f).await
    }
}
