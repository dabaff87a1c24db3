//! A step built against `weir:step@0.2.0` (its own `wit/step.wit`), a
//! contract this weir does not support: it must be refused at load, not run
//! because its exports happen to match.
// The generated bindings' signatures are the contract's, not ours to shorten.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ path: "wit", world: "step" });

struct Step;

impl Guest for Step {
    fn run(_: weir::step::types::Invocation) -> Result<(), String> {
        weir::step::log::write(weir::step::log::Level::Info, "from another contract");
        Ok(())
    }
}

export!(Step);
