//! Script -> plan: any text either compiles to a plan that validates and
//! survives its stored form, or is refused with an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(plan) =
        weir_dsl::compile_str(source, "fuzz.rhai", std::path::Path::new("/nonexistent"))
    {
        plan.validate().expect("a compiled plan validates");
        let back = weir_runtime::Plan::from_json(&plan.to_json()).expect("a stored plan loads");
        assert_eq!(back, plan, "the stored form round-trips");
    }
});
