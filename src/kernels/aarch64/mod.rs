//! aarch64 tiers.
pub(crate) mod neon;
pub(crate) mod neon_bf16;
