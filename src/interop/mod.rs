//! Adapters that run pointwise inside the frameworks its users already have, each behind its
//! own cargo feature (all off by default, so the core crate depends on neither):
//!
//! | feature | module | what it gives |
//! |---|---|---|
//! | `candle` | [`candle`] | a candle custom op (`x`, `w`, optional `b`) and a module that packs its weights once |
//! | `ndarray` | [`ndarray`] | `forward` on `ArrayView4` / `ArrayViewMut4`, zero-copy |
//!
//! Each adapter checks shapes and memory order, then calls [`Plan::forward`](crate::Plan::forward)
//! on the views' memory: its results are bit-identical to the plain API's.
#[cfg(feature = "candle")]
pub mod candle;
#[cfg(feature = "ndarray")]
pub mod ndarray;
