//! The benches' shared environment settings: `POINTWISE_LAYOUT=nhwc` (default NCHW) and
//! `POINTWISE_THREADS=n` (a dedicated pool of `n` threads; default 1).
use pointwise::{Layout, Threads};

/// The layout `POINTWISE_LAYOUT` names (NCHW unless it says `nhwc`).
pub fn layout_from_env() -> Layout {
    match std::env::var("POINTWISE_LAYOUT").as_deref() {
        Ok("nhwc") => Layout::Nhwc,
        _ => Layout::Nchw,
    }
}

/// The threads `POINTWISE_THREADS` asks for (one unless it gives a count above 1).
pub fn threads_from_env() -> Threads {
    match std::env::var("POINTWISE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) if n > 1 => Threads::Count(n),
        _ => Threads::Single,
    }
}
