//! `POINTWISE_KERNEL` as read by `PlanOptions::from_env` (the only reader): names, `auto`,
//! and values that are not UTF-8. One test in its own binary, because it sets the variable.
use pointwise::{Error, KernelChoice, KernelId, PlanOptions};

#[test]
fn kernel_variable_values() {
    let var = KernelChoice::ENV_VAR;
    let saved = std::env::var_os(var);
    std::env::set_var(var, "reference");
    assert_eq!(
        PlanOptions::from_env().unwrap().kernel,
        KernelChoice::Force(KernelId::Reference)
    );
    for auto in ["", "  ", "auto", "AUTO"] {
        std::env::set_var(var, auto);
        assert_eq!(PlanOptions::from_env().unwrap().kernel, KernelChoice::Auto, "{auto:?}");
    }
    std::env::set_var(var, "avx9");
    assert_eq!(PlanOptions::from_env(), Err(Error::UnknownKernel("avx9".into())));
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::env::set_var(var, std::ffi::OsStr::from_bytes(b"avx2\xff"));
        assert_eq!(
            PlanOptions::from_env(),
            Err(Error::UnknownKernel("avx2\u{fffd}".into()))
        );
    }
    std::env::remove_var(var);
    assert_eq!(PlanOptions::from_env().unwrap().kernel, KernelChoice::Auto);
    if let Some(v) = saved {
        std::env::set_var(var, v);
    }
}
