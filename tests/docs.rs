//! Every ```rhai block in docs/ compiles to a valid plan, so the guide
//! cannot drift from the language.

use std::path::Path;

#[test]
fn every_rhai_block_in_the_docs_compiles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```rhai\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").expect("closed block");
            let name = format!("{}#{checked}", path.display());
            if let Err(e) = weir_dsl::compile_str(&body[..end], &name, &root.join("examples/hello"))
            {
                panic!("{e}");
            }
            checked += 1;
            rest = &body[end..];
        }
    }
    assert!(checked >= 1);
}
