//! Loading a run's stored plan (the JSON in the records): any bytes either
//! load as a valid plan whose stored form round-trips, or are an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(plan) = weir_runtime::Plan::from_json(json) {
        let again = weir_runtime::Plan::from_json(&plan.to_json()).expect("re-stored plan loads");
        assert_eq!(again, plan);
    }
});
