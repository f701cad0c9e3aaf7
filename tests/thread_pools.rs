//! Thread pools: plans with the same `Threads::Count` share one process-wide pool, the
//! documented cap holds, and a pool stops when its last plan is dropped. One test in its own
//! binary, so no other test's plans share the registry or the process's thread count.
use pointwise::{testing::live_thread_pools, Conv1x1, InputDims, Plan, PlanOptions, Threads, Workspace, MAX_THREADS};

/// The process's thread count from /proc (Linux), when readable.
fn os_threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn plans_share_pools_and_the_cap_holds() {
    assert!(live_thread_pools().is_empty());
    let conv = Conv1x1::new(64, 64);
    let w = vec![0.5f32; 64 * 64];
    let opts = |n| PlanOptions::default().with_threads(Threads::Count(n));
    let threads_before = os_threads();

    // A network's worth of plans with Count(8): one pool of 8 threads.
    let plans: Vec<Plan> = (0..40).map(|_| Plan::new(&conv, &w, None, opts(8)).unwrap()).collect();
    assert_eq!(live_thread_pools(), vec![(8, 40)]);
    if let (Some(before), Some(after)) = (threads_before, os_threads()) {
        assert!(after <= before + 8, "40 plans started {} threads", after - before);
    }

    // The plans compute the same as a single-threaded one.
    let dims = InputDims::new(1, 32, 32);
    let x: Vec<f32> = (0..64 * 32 * 32).map(|i| (i % 7) as f32).collect();
    let mut ws = Workspace::new();
    let mut want = vec![0.0; 64 * 32 * 32];
    Plan::new(&conv, &w, None, PlanOptions::default())
        .unwrap()
        .forward(&x, dims, None, &mut want, &mut ws)
        .unwrap();
    for plan in &plans[..3] {
        let mut y = vec![f32::NAN; want.len()];
        plan.forward(&x, dims, None, &mut y, &mut ws).unwrap();
        assert_eq!(y, want);
    }

    // A huge count is capped (it aborted the process before) and shares nothing with 8.
    let huge = Plan::new(&conv, &w, None, opts(100_000)).unwrap();
    assert_eq!(live_thread_pools(), vec![(8, 40), (MAX_THREADS, 1)]);
    drop(huge);
    assert_eq!(live_thread_pools(), vec![(8, 40)]);

    // Dropping the last plan of a count drops its pool.
    drop(plans);
    assert!(live_thread_pools().is_empty());
    // Count(0) and Count(1) run on the calling thread: no pool.
    let _single = Plan::new(&conv, &w, None, opts(1)).unwrap();
    let _zero = Plan::new(&conv, &w, None, opts(0)).unwrap();
    assert!(live_thread_pools().is_empty());
}
